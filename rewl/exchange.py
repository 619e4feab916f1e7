"""Replica exchange between neighbouring windows (Vogel, Li, Wuest, Landau 2013).

Round r pairs windows (k, k+1) with k = r mod 2 (even and odd pairs alternate). Rank `local` of
window k pairs with rank `local` of window k+1. Walkers whose x bin lies in the overlap are
candidates; the lower window decides pairs and acceptance
min(1, g_i(X) g_j(Y) / (g_i(Y) g_j(X))) with its own generator and tells the upper one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .comm import Comm
from .grid import Window
from .walkers import Walkers
from .wl import Estimate


@dataclass
class SwapStats:
    """Attempts and acceptances per window pair (k, k+1): shape (n_windows - 1,)."""

    attempted: np.ndarray
    accepted: np.ndarray

    @classmethod
    def zeros(cls, n_windows: int) -> SwapStats:
        return cls(np.zeros(max(n_windows - 1, 0)), np.zeros(max(n_windows - 1, 0)))


def swap_log_ratio(ln_g_i_x: np.ndarray, ln_g_j_y: np.ndarray, ln_g_i_y: np.ndarray, ln_g_j_x: np.ndarray) -> np.ndarray:
    """ln of g_i(X) g_j(Y) / (g_i(Y) g_j(X)); the swap is accepted when ln U is below it."""
    return ln_g_i_x + ln_g_j_y - ln_g_i_y - ln_g_j_x


def exchange_round(comm: Comm, round_index: int, windows: list[Window], walkers: Walkers,
                   est: Estimate, rng: np.random.Generator, stats: SwapStats) -> None:
    """One exchange round for this rank (a no-op for ranks whose window has no partner this round).

    windows: every window of the run. Swapped walkers carry parameters, CVs and (WLMD)
    velocities and their round-trip counters; their bins are recomputed in the receiving window.
    """
    w, parity = comm.window, round_index % 2
    if w % 2 == parity and w + 1 < comm.n_windows:
        lower, partner_window = True, w + 1
    elif w >= 1 and (w - 1) % 2 == parity:
        lower, partner_window = False, w - 1
    else:
        return
    partner = comm.rank_of(partner_window, comm.local)
    i = w if lower else partner_window                      # lower window of the pair
    lo_i, lo_j = windows[i].lo, windows[i + 1].lo
    overlap_lo, overlap_hi = windows[i].overlap_with(windows[i + 1])
    grid = windows[w].grid
    n_y = grid.wl_y_bins
    # bins from the CVs themselves: an MD walker in the soft walls lies outside its window, where
    # its stored (clamped) bin would make it look like an overlap walker
    global_x = grid.x.index(walkers.x).cpu().numpy()
    iy = grid.wl_y_index(walkers.y).cpu().numpy()
    # candidates: walkers in the partner's x range, i.e. in the overlap, and on the y grid
    cand = np.flatnonzero((global_x >= overlap_lo) & (global_x < overlap_hi) & (iy >= 0) & (iy < n_y))
    n_ov = overlap_hi - overlap_lo

    if not lower:
        comm.send(np.array([len(cand)], dtype=np.int64), partner, tag=1)
        comm.send(np.stack([global_x[cand], iy[cand]], axis=1).astype(np.int64), partner, tag=2)
        comm.send(est.ln_g[:n_ov].cpu().numpy(), partner, tag=3)
        n_acc = int(comm.recv((1,), np.int64, partner, tag=4)[0])
        pairs = comm.recv((n_acc, 2), np.int64, partner, tag=5)
        mine = pairs[:, 1]
    else:
        k_up = int(comm.recv((1,), np.int64, partner, tag=1)[0])
        up_bins = comm.recv((k_up, 2), np.int64, partner, tag=2)
        ln_g_j = comm.recv((n_ov, n_y), np.float64, partner, tag=3)
        ln_g_i = est.ln_g.cpu().numpy()
        n_pairs = min(len(cand), k_up)
        mine_all = rng.permutation(cand)[:n_pairs]
        theirs_all = rng.permutation(k_up)[:n_pairs]
        log_u = np.log(rng.random(n_pairs))
        x_gx, x_iy = global_x[mine_all], iy[mine_all]
        y_gx, y_iy = up_bins[theirs_all, 0], up_bins[theirs_all, 1]
        ratio = swap_log_ratio(ln_g_i[x_gx - lo_i, x_iy], ln_g_j[y_gx - lo_j, y_iy],
                               ln_g_i[y_gx - lo_i, y_iy], ln_g_j[x_gx - lo_j, x_iy])
        ok = log_u < ratio
        pairs = np.stack([mine_all[ok], theirs_all[ok]], axis=1).astype(np.int64)
        comm.send(np.array([len(pairs)], dtype=np.int64), partner, tag=4)
        comm.send(pairs, partner, tag=5)
        stats.attempted[i] += n_pairs
        stats.accepted[i] += len(pairs)
        mine = pairs[:, 0]
    if len(mine) == 0:
        return

    # their index list refers to the upper rank's candidate order
    if not lower:
        mine = cand[mine]
    idx = torch.as_tensor(mine, device=walkers.params.device)
    out_params = walkers.params[idx].cpu().numpy()
    out_cvs = torch.stack([walkers.x[idx], walkers.y[idx]], dim=1).cpu().numpy()
    in_params = comm.sendrecv(out_params, partner, out_params.shape, out_params.dtype, tag=6)
    in_cvs = comm.sendrecv(out_cvs, partner, out_cvs.shape, out_cvs.dtype, tag=7)
    device = walkers.params.device
    walkers.params[idx] = torch.as_tensor(in_params, device=device)
    if walkers.velocities is not None:
        out_v = walkers.velocities[idx].cpu().numpy()
        walkers.velocities[idx] = torch.as_tensor(comm.sendrecv(out_v, partner, out_v.shape, out_v.dtype, tag=8),
                                                  device=device)
    out_trips = torch.stack([walkers.trip_state[idx], walkers.round_trips[idx]], dim=1).cpu().numpy()
    in_trips = torch.as_tensor(comm.sendrecv(out_trips, partner, out_trips.shape, out_trips.dtype, tag=9), device=device)
    walkers.trip_state[idx], walkers.round_trips[idx] = in_trips[:, 0], in_trips[:, 1]
    x_new = torch.as_tensor(in_cvs[:, 0], device=device)
    y_new = torch.as_tensor(in_cvs[:, 1], device=device)
    ix, iy_new, inside = windows[w].bin(x_new, y_new)
    if not bool(inside.all()):
        raise RuntimeError("exchange received a walker outside this window (internal error)")
    walkers.x[idx], walkers.y[idx], walkers.ix[idx], walkers.iy[idx] = x_new, y_new, ix, iy_new
