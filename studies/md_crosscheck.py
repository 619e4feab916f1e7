"""WLMD against WLMC on the spiral task: the equilibrium hard test accuracy per ln L_train bin.

    python studies/md_crosscheck.py runs/spiral_md runs/spiral_study_s1 runs/spiral_study_s2 runs/spiral_study_s3

The first run is a WLMD run of inputs/spiral_md.toml (y = smoothed accuracy, hard accuracy recorded
per bin); the others are WLMC runs of inputs/spiral_study.toml (y = hard accuracy). Both decks use
the same data and network. Joins accept a residual of 5, as in the study.
"""
from __future__ import annotations

import sys

import numpy as np

from analysis.experiment import load_experiment


def main(md_run: str, mc_runs: list[str]) -> None:
    md = load_experiment([md_run], max_residual=5)
    mc = load_experiment(mc_runs, max_residual=5)
    if md.eq_accuracy is None:
        raise SystemExit(f"{md_run}: no hard accuracy recorded (not a WLMD classification run)")
    print(f"{'ln L':>6}  {'WLMC <A>':>8} {'+-':>5}  {'WLMD <A>':>8}  {'WLMD <A_s>':>10}  {'diff':>6}")
    diffs = []
    for i, x in enumerate(md.land.x_centers):
        j = int(np.argmin(np.abs(mc.land.x_centers - x)))
        if abs(mc.land.x_centers[j] - x) > 1e-9 or not np.isfinite(mc.eq.mean[j]):
            continue
        d = md.eq_accuracy.mean[i] - mc.eq.mean[j]
        diffs.append(d)
        print(f"{x:6.2f}  {mc.eq.mean[j]:8.3f} {mc.eq.stderr[j]:5.3f}  {md.eq_accuracy.mean[i]:8.3f}  "
              f"{md.eq.mean[i]:10.3f}  {d:+6.3f}")
    diffs = np.array(diffs)
    print(f"{len(diffs)} common bins: max |WLMD - WLMC| = {np.abs(diffs).max():.3f}, mean {diffs.mean():+.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
