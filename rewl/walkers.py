"""A rank's batch of walkers, and the gradient drive that brings fresh walkers into their window.
Pure tensor code, no MPI.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .grid import Window
from .records import WalkersRecord
from .tasks import Task


@dataclass
class Walkers:
    """A rank's batch of walkers and their current CVs and local bins."""

    params: torch.Tensor   # (B, n_params)
    x: torch.Tensor        # (B,) float64
    y: torch.Tensor        # (B,) float64
    ix: torch.Tensor       # (B,) long, local x bin in the window (clamped into it)
    iy: torch.Tensor       # (B,) long
    velocities: torch.Tensor | None = None   # (B, n_params) under wlmd
    # round trips between the lowest and the highest window; they travel with the walker
    trip_state: torch.Tensor | None = None   # (B,) long: 0, or the end last reached: 1 lowest, 2 highest
    round_trips: torch.Tensor | None = None  # (B,) long: completed lowest -> highest -> lowest trips

    @classmethod
    def at(cls, task: Task, params: torch.Tensor, window: Window) -> tuple[Walkers, torch.Tensor]:
        """Walkers at `params` with CVs evaluated; also returns which are inside the window (B,)."""
        walkers = cls(params, *([torch.empty(0)] * 4))
        zeros = torch.zeros(params.shape[0], dtype=torch.long, device=params.device)
        walkers.trip_state, walkers.round_trips = zeros, zeros.clone()
        return walkers, walkers.refresh(task, window)

    def track_round_trips(self, lowest: bool, highest: bool) -> None:
        """Update the trips of walkers now in the lowest and/or the highest window (a round trip is
        lowest -> highest -> lowest; with one window there are none)."""
        if lowest and highest:
            return
        if lowest:
            self.round_trips += (self.trip_state == 2).long()
            self.trip_state.fill_(1)
        elif highest:
            self.trip_state.masked_fill_(self.trip_state == 1, 2)

    def refresh(self, task: Task, window: Window) -> torch.Tensor:
        """Recompute the CVs and bins of the current parameters; returns the inside mask (B,)."""
        with torch.no_grad():
            x, y = task.cvs(self.params)
        self.x, self.y = x.double(), y.double()
        self.ix, self.iy, inside = window.bin(self.x, self.y)
        return inside

    def to_record(self) -> WalkersRecord:
        n = lambda a: None if a is None else a.detach().cpu().numpy()  # noqa: E731
        return WalkersRecord(params=n(self.params), x=n(self.x), y=n(self.y), ix=n(self.ix), iy=n(self.iy),
                             velocities=n(self.velocities), trip_state=n(self.trip_state),
                             round_trips=n(self.round_trips))

    @classmethod
    def from_record(cls, rec: WalkersRecord, dtype: torch.dtype, device: torch.device) -> Walkers:
        t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        walkers = cls(t(rec.params).to(dtype), t(rec.x), t(rec.y), t(rec.ix), t(rec.iy),
                      None if rec.velocities is None else t(rec.velocities).to(dtype))
        zeros = torch.zeros(len(rec.x), dtype=torch.long, device=device)     # schema 1 and 2 checkpoints
        walkers.trip_state = zeros if rec.trip_state is None else t(rec.trip_state)
        walkers.round_trips = zeros.clone() if rec.round_trips is None else t(rec.round_trips)
        return walkers


def drive_into_window(task: Task, params: torch.Tensor, x_range: tuple[float, float], y_range: tuple[float, float],
                      max_iterations: int, learning_rate: float) -> tuple[torch.Tensor, int]:
    """Move walkers (B, n_params) by Adam steps, kept in the box, until x lies in the central half
    of x_range (and a differentiable y inside y_range); walkers that arrive stop moving.

    Random weights sit at high training loss; windows may lie below or above it, so the drive goes
    either way: the loss is relu(|x - centre| - width / 4), not squared, so Adam's steps keep
    their size up to the target instead of fading near it. Some walkers cannot move at all (a
    network whose ReLUs are all dead has zero gradient): every 500 iterations, once at least half
    have arrived, the rest are replaced by copies of arrived walkers (the equilibration that follows
    separates the copies). Returns the walkers and the iterations used; raises RuntimeError naming
    the farthest x when fewer than half arrived within max_iterations.
    """
    def miss(values: torch.Tensor, lo: float, hi: float, margin: float) -> torch.Tensor:
        centre, half = 0.5 * (lo + hi), (0.5 - margin) * (hi - lo)
        out = torch.relu((values - centre).abs() - half)
        return torch.where(torch.isfinite(values), out, torch.full_like(out, 1e3))

    params = params.clone()
    m = torch.zeros_like(params)
    v = torch.zeros_like(params)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for it in range(1, max_iterations + 1):
        p = params.detach().requires_grad_(True)
        with torch.enable_grad():
            off = miss(task.x_of(p), *x_range, 0.25)
            y = task.y_of(p)
            if y is not None:
                off = off + miss(y, *y_range, 0.05)
            grad, = torch.autograd.grad(off.sum(), p)
        moving = off > 0
        if not bool(moving.any()):
            return params, it - 1
        if it % 500 == 0 or it == max_iterations:
            arrived = torch.nonzero(~moving).squeeze(1)
            if 2 * len(arrived) >= len(params):
                stuck = torch.nonzero(moving).squeeze(1)
                params[stuck] = params[arrived[torch.arange(len(stuck), device=params.device) % len(arrived)]]
                return params, it - 1
        grad = torch.nan_to_num(grad)
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = learning_rate * (m / (1 - beta1 ** it)) / ((v / (1 - beta2 ** it)).sqrt() + eps)
        params = torch.where(moving.unsqueeze(1), params - step, params)
        params = torch.maximum(torch.minimum(params, task.hi), task.lo)
    with torch.no_grad():
        x = task.x_of(params)
    centre = 0.5 * sum(x_range)
    worst = float((x - centre).abs().max())
    raise RuntimeError(
        f"after {max_iterations} gradient iterations some walkers are still outside x in "
        f"[{x_range[0]:.4g}, {x_range[1]:.4g}] (farthest x is {worst:.4g} from the window centre {centre:.4g}); "
        "the window may be unreachable inside the weight box: narrow [grid.x] or raise [init] max_iterations")
