"""The soft walls of a WLMD window: c d^2 added to ln g at a distance d outside the window's x
range and the grid's y range. Their strength c is the deck's number, or, with
``wall_strength = "auto"``, tuned by the run itself (``WallControl``).

Why tune: walkers in the walls deposit nothing, so walls too soft for the network's entropy
slope leave the window unfilled (in= low in the progress line); walls too stiff for dt heat the
integration (T= above 1). The slope that pushes walkers out grows with the parameter count
(n_params / 2 per unit of ln L where the loss is quadratic in every weight, steeper below the
plateau of a classifier), and the stiffness the integrator bears shrinks with the gradient of
the CVs, so no one number fits every network.

The rule, per rank, decided at synchronisation points from what the rank measured (so a resumed
run takes the same decisions, bit for bit):
  start    c0 = min(the strength that holds walkers within half an x bin at the slope
           n_params / 2, the stiffness at which the walls' frequency times dt is 1 for the
           walker with the steepest x: 1 / (2 dt^2 max |grad x|^2)), from the walkers after their
           drive (the second is cautious, one steep walker sets it: c0 is a floor to raise from);
  every    sync: kT of the rank's walkers above HOT (or nan): halve c (not below c0), stop raising;
  every    INTERVAL steps: kT averaged over the interval's syncs more than T_TOLERANCE from 1:
           the same; else, while raising, if under IN_TARGET of the walker-steps since the last
           decision were inside the window, double c.
Where the walls reach the stiffness dt allows before they hold the walkers, in= stays low and
the progress line says to lower dt.
"""
from __future__ import annotations

import numpy as np
import torch

AUTO = "auto"
LEGACY_STRENGTH = 3000.0   # the deck default before "auto": runs begun without the key keep it on resume
IN_TARGET = 0.9            # fraction of walker-steps inside the window the walls aim for
T_TOLERANCE = 0.1          # |kT - 1| beyond which the walls may not be raised (and a raise is undone)
INTERVAL = 200             # steps between decisions
HOT = 1.5                  # kT at any sync that undoes a raise at once (the integration is blowing up)


def settling_strength(n_params: int, x_width: float) -> float:
    """c that holds walkers within half an x bin past the edge against an entropy slope of
    n_params / 2 per unit of x (the balance 2 c d = n_params / 2 at d = x_width / 2)."""
    return n_params / (2.0 * x_width)


def stable_strength(max_grad_sq: float, dt: float) -> float:
    """c at which the walls' curvature along the gradient of x, 2 c |grad x|^2, gives the
    frequency omega = 1 / dt for the steepest walker (omega dt = 1, inside the integrator's
    stability limit of 2)."""
    return 1.0 / (2.0 * dt * dt * max(max_grad_sq, 1e-30))


def steepest_gradient(x: torch.Tensor, params: torch.Tensor) -> float:
    """max over walkers of |grad x|^2: x (B,) computed from `params` (B, n) with grad enabled (a
    walker's x depends on its own row only). The y walls are left out: walkers rarely reach the
    grid's y edges."""
    grad, = torch.autograd.grad(x.sum(), params)
    return float(grad.double().square().sum(dim=1).max())


class WallControl:
    """The walls' strength c of one rank's WLMD window: fixed (the deck's number) or tuned
    (``"auto"``; the module docstring has the rule). Its state goes into checkpoints."""

    def __init__(self, setting: float | str):
        self.auto = setting == AUTO
        self.strength = LEGACY_STRENGTH if self.auto else float(setting)   # replaced by ``begin`` (auto)
        self.start_strength = self.strength
        self.raising = self.auto
        self.last_step = 0
        self.marks = (0.0, 0.0)            # the sampler's (walker-steps, inside) at the last decision
        self.t_sum, self.t_count, self.kinetic_t = 0.0, 0, 1.0   # kT over the interval's syncs, and the latest

    def begin(self, n_params: int, x_width: float, dt: float, max_grad_sq: float) -> None:
        """A new run's first strength (auto only; fixed walls keep the deck's)."""
        if self.auto:
            self.strength = self.start_strength = min(settling_strength(n_params, x_width),
                                                      stable_strength(max_grad_sq, dt))

    def observe(self, kinetic_t: float) -> None:
        """kT of the rank's walkers at a synchronisation point."""
        self.kinetic_t = kinetic_t
        self.t_sum += kinetic_t
        self.t_count += 1

    def decide(self, step: int, walker_steps: float, inside: float) -> bool:
        """At a synchronisation point (after ``observe``): the next strength. `walker_steps`,
        `inside`: the sampler's run totals now. True when c changed."""
        if not self.auto:
            return False
        old = self.strength
        if not self.kinetic_t <= HOT:                              # also nan: a blown-up integration
            self.back_off()
        elif step - self.last_step >= INTERVAL:
            inside_fraction = (inside - self.marks[1]) / max(1.0, walker_steps - self.marks[0])
            if abs(self.t_sum / max(1, self.t_count) - 1.0) > T_TOLERANCE:
                self.back_off()
            elif self.raising and inside_fraction < IN_TARGET:
                self.strength *= 2.0
            self.last_step, self.marks = step, (walker_steps, inside)
            self.t_sum, self.t_count = 0.0, 0
        return self.strength != old

    def back_off(self) -> None:
        """The walls are too stiff for dt: halve c (not below the start) and stop raising."""
        self.strength = max(self.start_strength, self.strength / 2.0)
        self.raising = False

    def state(self) -> dict[str, np.ndarray]:
        return {"wall_strength": np.array([self.strength]),
                "wall_auto": np.array([self.start_strength, float(self.raising), float(self.last_step), *self.marks,
                                       self.t_sum, float(self.t_count), self.kinetic_t])}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """The inverse of ``state``; a checkpoint without it (runs begun before the walls were
        kept) continues with the deck's strength, or ``LEGACY_STRENGTH`` under "auto"."""
        if "wall_strength" not in state:
            self.auto = self.raising = False
            return
        self.strength = float(state["wall_strength"][0])
        if self.auto:
            start, raising, last, steps, inside, t_sum, t_count, kinetic_t = (float(v) for v in state["wall_auto"])
            self.start_strength, self.raising, self.last_step = start, bool(raising), int(last)
            self.marks, self.t_sum, self.t_count, self.kinetic_t = (steps, inside), t_sum, int(t_count), kinetic_t
