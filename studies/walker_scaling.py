"""Steps to convergence against walkers per window, on an exact system (docs/convergence.md, "Walkers and
convergence"): box_quadratic n = 24, m = 12 over the grid of tests/test_box_exact.py (26 x 28 bins
of 0.15, past E = 2 a^2), 4 windows under `mpiexec -n 4`, ln_f_final 1e-5 per walker visit for
every walker count. "Converged" is judged at checkpoints (docs/convergence.md, "What a landscape
is"), so the checkpoints come every 1,000,000 / M steps (at least 1,000): the same number of walker
visits between judgements for every walker count M. For each count: the step at which the run
converged, the wall time,
and max |S - S_exact| over every visited bin after one constant, per window and for the joined S
(default join thresholds). Prints a Markdown table.

    .venv/bin/python studies/walker_scaling.py [--walkers 64 256 1024 4096] [--n 24 --m 12] [--seeds 41 42 43]

About 10 minutes per seed on 2 cores for the four default counts (64 walkers is the slowest, 5
minutes). The steps to converge with thousands of walkers vary by a quarter or more from seed to
seed (the slowest window's halving stages decide); use several seeds to compare counts.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.landscape import join_windows  # noqa: E402
from rewl.storage import RunStore  # noqa: E402
from rewl.testsystems import box_entropy, max_error_after_constant  # noqa: E402


def axis(k: int, bins: int) -> str:
    """`bins` bins of 0.15 in ln E reaching 0.9 above the typical ln(k a^2 / 3) (as in the tests)."""
    top = round((math.log(k / 3.0) + 0.9) / 0.15) * 0.15
    return f"min = {round(top - bins * 0.15, 10)}\nmax = {round(top, 10)}\nwidth = 0.15\n"


def deck(n: int, m: int, walkers: int, seed: int, out: Path) -> str:
    return f"""[run]
seed = {seed}
max_steps = 5000000
[task]
kind = "box_quadratic"
n = {n}
m = {m}
[sampler]
walkers_per_rank = {walkers}
sigma_initial = 0.3
[grid.x]
{axis(m, 26)}
[grid.y]
{axis(n - m, 28)}
[windows]
count = 4
[schedule]
kind = "1/t"
ln_f_final = 1e-5
check_interval = 100
[output]
dir = "{out}"
checkpoint_interval = {checkpoint_interval(walkers)}
log_interval = 60.0
"""


def checkpoint_interval(walkers: int) -> int:
    """Steps between checkpoints (where convergence is judged): 1,000,000 walker visits per window,
    in whole hundreds of steps (the check interval), at least 1,000."""
    return max(1000, round(1_000_000 / walkers / 100) * 100)


def measure(n: int, m: int, walkers: int, seed: int, work: Path) -> dict:
    out = work / f"box_n{n}_M{walkers}"
    path = work / f"box_n{n}_M{walkers}.toml"
    path.write_text(deck(n, m, walkers, seed, out))
    mpiexec = Path(sys.executable).parent / "mpiexec"
    proc = subprocess.run([str(mpiexec), "-n", "4", str(mpiexec.parent / "rewl"), "run", str(path), "--force"],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    rec = RunStore(out).read_run()
    exact = box_entropy(rec.x_edges, rec.y_edges, n, m, 1.0)
    reliable = np.isfinite(exact)            # nan where the numerical exact S is not reliable (E near k a^2)
    errors, unreliable = [], 0
    for w in rec.windows:
        part, visited = reliable[w.x_bins[0]:w.x_bins[1]], w.visits > 0
        errors.append(max_error_after_constant(w.ln_g, exact[w.x_bins[0]:w.x_bins[1]], visited & part))
        unreliable += int((visited & ~part).sum())
    land = join_windows(rec)
    return {"walkers": walkers, "status": rec.status, "steps": rec.steps, "seconds": rec.elapsed_seconds,
            "errors": errors, "joined": max_error_after_constant(land.entropy, exact, land.visited & reliable),
            "unreliable": unreliable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--m", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[41])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for walkers in args.walkers:
            for seed in args.seeds:
                rows.append(measure(args.n, args.m, walkers, seed, Path(tmp)) | {"seed": seed})
                r = rows[-1]
                print(f"# {walkers} walkers, seed {seed}: {r['status']} at {r['steps']} steps, {r['seconds']:.0f} s",
                      file=sys.stderr)
    print(f"box_quadratic n = {args.n}, m = {args.m}, 4 windows, ln_f_final 1e-5 per visit, checkpoints every "
          f"{', '.join(f'{checkpoint_interval(w):,}' for w in args.walkers)} steps\n")
    print("| walkers per window | seed | steps to converge | wall time | max \\|dS\\| per window | joined |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        steps = f"{r['steps']:,}" if r["status"] == "converged" else f"not converged at {r['steps']:,}"
        print(f"| {r['walkers']:,} | {r['seed']} | {steps} | {r['seconds']:.0f} s | "
              f"{', '.join(f'{e:.3f}' for e in r['errors'])} | {r['joined']:.3f} |")
    skipped = sum(r["unreliable"] for r in rows)
    if skipped:
        print(f"\n({skipped} visited bins left out of the errors: the exact S is not reliable there)")
    median = {w: float(np.median([r["steps"] for r in rows if r["walkers"] == w])) for w in args.walkers}
    base = args.walkers[0]
    print("\nmedian steps over the seeds: " + ", ".join(f"{w}: {median[w]:,.0f}" for w in args.walkers))
    for w in args.walkers[1:]:
        print(f"{base} -> {w} walkers: {median[base] / median[w]:.1f}x fewer steps (median)")
    if not all(np.isfinite(r["joined"]) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
