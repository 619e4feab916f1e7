"""A rank's batch of walkers, and the gradient drive that brings fresh walkers into their window.
Pure tensor code, no MPI.
"""
from __future__ import annotations

import math
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


Bounds = tuple[float, float] | tuple[torch.Tensor, torch.Tensor]


def spread_targets(window: Window, count: int, total: int, first: int = 0, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """x ranges that spread the `total` walkers of a window evenly over its x bins, for the `count`
    of them from walker `first` on (one rank's share): walker j aims at local bin j mod n_x (every
    bin in turn), or with fewer walkers than bins at bin j n_x // total. Returns (lo, hi), (count,)
    float64 each.

    With ln f per walker visit, walkers that all start in the middle of a window leave its ends
    to be found later, by a few of them, while the rest raise the explored part: those ends then
    lag by the whole deposit of the walkers in the meantime. Started in every x bin, every row
    is filled from the first step."""
    edges = torch.as_tensor(window.grid.x.edges, dtype=torch.float64, device=device)
    j = first + torch.arange(count, device=device)
    local = (j % window.n_x if total >= window.n_x else j * window.n_x // total) + window.lo
    return edges[local], edges[local + 1]


def drive_into_window(task: Task, params: torch.Tensor, x_range: Bounds, y_range: tuple[float, float],
                      max_iterations: int, learning_rate: float) -> tuple[torch.Tensor, int]:
    """Move walkers (B, n_params) by Adam steps, kept in the box, until x lies in the central half
    of x_range (one range, or one per walker: two (B,) tensors, ``spread_targets``) and a
    differentiable y inside y_range (unless it is infinite: y recorded); walkers that arrive stop moving.

    Random weights sit at high training loss; windows may lie below or above it, so the drive goes
    either way: the loss is relu(|x - centre| - width / 4), not squared, so Adam's steps keep
    their size up to the target instead of fading near it. Some walkers cannot move at all (a
    network whose ReLUs are all dead has zero gradient, and Adam stalls on a plateau above the
    lowest targets): every 500 iterations, once at least half have arrived, the rest are replaced
    by copies of arrived walkers nearest their own targets (``_stand_ins``; the equilibration that
    follows separates the copies). When the arrivals stall short of half (targets out of the
    network's reach), walkers anywhere inside the whole x range count as arrived. Returns the
    walkers and the iterations used; raises RuntimeError naming the farthest x when fewer than half
    arrived within max_iterations.
    """
    def miss(values: torch.Tensor, lo, hi, margin: float) -> torch.Tensor:
        centre, half = 0.5 * (lo + hi), (0.5 - margin) * (hi - lo)
        out = torch.relu((values - centre).abs() - half)
        return torch.where(torch.isfinite(values), out, torch.full_like(out, 1e3))

    params = params.clone()
    steer_y = all(math.isfinite(end) for end in y_range)
    lo_all, hi_all = float(torch.as_tensor(x_range[0]).min()), float(torch.as_tensor(x_range[1]).max())
    arrived_before = -1
    m = torch.zeros_like(params)
    v = torch.zeros_like(params)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for it in range(1, max_iterations + 1):
        p = params.detach().requires_grad_(True)
        with torch.enable_grad():
            x = task.x_of(p)
            off = miss(x, *x_range, 0.25)
            y = task.y_of(p) if steer_y else None
            if y is not None:
                off = off + miss(y, *y_range, 0.05)
            grad, = torch.autograd.grad(off.sum(), p)
        moving = off > 0
        if not bool(moving.any()):
            return params, it - 1
        if it % 500 == 0 or it == max_iterations:
            done = ~moving
            if 2 * int(done.sum()) < len(params) and int(done.sum()) <= arrived_before:
                # stalled short of half: some targets are out of this network's reach (the lowest
                # loss bins of a window); any walker inside the whole x range will do
                inside = (x >= lo_all) & (x <= hi_all)
                done = done | (inside if y is None else inside & (miss(y, *y_range, 0.05) == 0))
            arrived_before = int((~moving).sum())
            if 2 * int(done.sum()) >= len(params):
                arrived, stuck = torch.nonzero(done).squeeze(1), torch.nonzero(~done).squeeze(1)
                params[stuck] = params[arrived[_stand_ins(x.detach(), x_range, arrived, stuck)]]
                return params, it - 1
        grad = torch.nan_to_num(grad)
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = learning_rate * (m / (1 - beta1 ** it)) / ((v / (1 - beta2 ** it)).sqrt() + eps)
        params = torch.where(moving.unsqueeze(1), params - step, params)
        params = torch.maximum(torch.minimum(params, task.hi), task.lo)
    with torch.no_grad():
        x = task.x_of(params)
    lo, hi = (torch.as_tensor(end, dtype=torch.float64, device=x.device).expand(x.shape) for end in x_range)
    miss_x = torch.relu(torch.maximum(lo - x, x - hi))
    worst = int(miss_x.argmax())
    raise RuntimeError(
        f"after {max_iterations} gradient iterations fewer than half the walkers reached their x targets in "
        f"[{float(lo.min()):.4g}, {float(hi.max()):.4g}] (the farthest is at x = {float(x[worst]):.4g}, aiming at "
        f"[{float(lo[worst]):.4g}, {float(hi[worst]):.4g}]); the window may be unreachable inside the weight box: "
        "narrow [grid.x] or raise [init] max_iterations")


def _stand_ins(x: torch.Tensor, x_range: Bounds, arrived: torch.Tensor, stuck: torch.Tensor) -> torch.Tensor:
    """For each stuck walker (indices (S,)), the position in `arrived` (A,) of the arrived walker
    that replaces it: the arrived walkers inside the stuck walker's own x range, nearest its centre
    first, taken in turn by the stuck walkers that share the range (so that one target is not
    served by copies of one walker), else the arrived walker nearest that centre. x (B,) are the
    walkers' current CVs. Returns (S,) long."""
    lo, hi = (torch.as_tensor(end, dtype=x.dtype, device=x.device).expand(x.shape) for end in x_range)
    centre, half = 0.5 * (lo + hi)[stuck], 0.5 * (hi - lo)[stuck]
    distance = (x[arrived][None, :] - centre[:, None]).abs()            # (S, A)
    order = distance.argsort(dim=1, stable=True)
    inside = (distance <= half[:, None]).sum(dim=1).clamp(min=1)
    turn = torch.arange(len(stuck), device=x.device) % inside
    return order[torch.arange(len(stuck), device=x.device), turn]
