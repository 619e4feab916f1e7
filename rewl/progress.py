"""Rank 0's progress display: a line every ``log_interval`` seconds, a live line on a terminal."""
from __future__ import annotations

import sys
import time

import numpy as np

from .schedule import Schedule
from .status import RankStatus


def hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLine:
    """Per window (marked + when settled, * when the run converged): ln f, flatness (the
    schedule's / over every visited bin), the fraction of rare visited bins; over the last
    checkpoint interval the change of ln g (dS), the flatness of its visits (rflat) and the
    crossings of the window's least crossed x edge (cross); move rate (and kinetic temperature under wlmd); swap
    acceptance per window pair and the walkers' round trips between the end windows (and the
    walls' c when tuned); ln f progress and the windows settled; elapsed time and the time left in
    the step budget."""

    HOT = 1.5       # kinetic temperature above which the Langevin integration is called unstable
    LOW_RATE = 0.5  # a window's move rate under which `low_rate_hint` is shown (when there is one)

    def __init__(self, n_windows: int, ranks_per_window: int, rate_label: str, schedule: Schedule,
                 max_steps: int, log_interval: float, low_rate_hint: str = "", show_walls: bool = False):
        self.n_windows, self.ranks_per_window = n_windows, ranks_per_window
        self.rate_label, self.schedule = rate_label, schedule
        self.max_steps, self.log_interval = max_steps, log_interval
        self.low_rate_hint = low_rate_hint
        self.show_walls = show_walls      # the walls' c per window (they change under wall_strength = "auto")
        self.last_log = 0.0
        self.warned_hot = self.warned_low = False
        self.tty = sys.stdout.isatty()

    def _window(self, statuses: list[RankStatus], k: int) -> list[RankStatus]:
        return statuses[k * self.ranks_per_window: (k + 1) * self.ranks_per_window]

    def moves(self, statuses: list[RankStatus]) -> list[tuple[float, float]]:
        """Each window's (accepted, attempted) move totals over its ranks."""
        return [(sum(r.move_accepted for r in ranks), sum(r.move_attempted for r in ranks))
                for ranks in (self._window(statuses, k) for k in range(self.n_windows))]

    def line(self, step: int, statuses: list[RankStatus], elapsed: float, seconds_left: float) -> str:
        parts = []
        for k, (accepted, attempted) in enumerate(self.moves(statuses)):
            ranks = self._window(statuses, k)
            lead = ranks[0]
            rate = accepted / max(1.0, attempted)
            mark = "*" if lead.converged else "+" if lead.settled else ""
            part = (f"w{k}{mark} lnf={lead.ln_f:.2e} flat={lead.flatness:.2f}"
                    f"/{lead.flatness_all:.2f} rare={lead.rare_fraction:.2f}"
                    + (f" dS={lead.ln_g_change:.2g}" if np.isfinite(lead.ln_g_change) else "")
                    + (f" rflat={lead.recent_flatness:.2f}" if np.isfinite(lead.recent_flatness) else "")
                    + (f" cross={lead.recent_crossings:.3g}" if np.isfinite(lead.recent_crossings) else "")
                    + f" {self.rate_label}={rate:.2f}")
            temperature = np.mean([r.kinetic_t for r in ranks])
            if np.isfinite(temperature):
                part += f" T={temperature:.2f}"
            if self.show_walls:
                part += f" c={lead.wall_strength:.3g}"
            if np.isfinite(lead.step_size):
                part += f" eps={lead.step_size:.2g}x{lead.leapfrog_steps}"
            parts.append(part)
        swaps = []
        for k in range(self.n_windows - 1):
            ranks = self._window(statuses, k)
            swaps.append(f"{sum(r.swap_accepted for r in ranks) / max(1.0, sum(r.swap_attempted for r in ranks)):.2f}")
        progress = min(self.schedule.progress(r.ln_f, r.converged, step) for r in statuses)
        settled = sum(r.settled for r in statuses[:: self.ranks_per_window])
        trips = sum(r.round_trips for r in statuses)
        return (f"step {step}/{self.max_steps} | " + " | ".join(parts)
                + (f" | swap {' '.join(swaps)} | trips {trips:.0f}" if swaps else "")
                + f" | ln f progress {100 * progress:.0f}%, settled {settled}/{self.n_windows}"
                + f" | {hms(elapsed)} elapsed, budget ends in {hms(seconds_left)}")

    def show(self, step: int, statuses: list[RankStatus], elapsed: float, seconds_left: float,
             final: bool = False, status: str = "") -> None:
        """Print the line when due (always when final); on a terminal, refresh it in between."""
        now = time.perf_counter()
        due = final or now - self.last_log >= self.log_interval
        if not (due or (self.tty and now - self.last_log >= 0.5)):
            return
        text = self.line(step, statuses, elapsed, seconds_left)
        if final:
            text += f" | {status}"
        hot = max((r.kinetic_t for r in statuses if np.isfinite(r.kinetic_t)), default=0.0)
        if hot > self.HOT and not self.warned_hot:
            self.warned_hot = True
            print(f"\nrewl: warning: kinetic temperature {hot:.3g} (should be 1): the Langevin integration is "
                  "unstable; lower [sampler] dt or wall_strength", file=sys.stderr, flush=True)
        low = [k for k, (accepted, attempted) in enumerate(self.moves(statuses))
               if attempted > 0 and accepted < self.LOW_RATE * attempted]
        if due and low and self.low_rate_hint and not self.warned_low:
            self.warned_low = True
            print(f"\nrewl: warning: {self.rate_label} under {self.LOW_RATE:g} in window(s) "
                  f"{', '.join(map(str, low))}: {self.low_rate_hint}", file=sys.stderr, flush=True)
        if due:
            print(("\r" if self.tty else "") + text, flush=True)
            self.last_log = now
        else:
            print("\r" + text[: 200], end="", flush=True)
