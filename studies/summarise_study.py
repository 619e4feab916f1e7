"""Headline numbers of docs/results.md from the study's run files, with standard errors over the
independent sampler seeds (each statistic is computed per run first).
Usage: python studies/summarise_study.py SGD_FILE RUN... [--max-residual R]"""
from __future__ import annotations

import argparse

import numpy as np

from analysis.experiment import load_experiment
from analysis.landscape import equilibrium


def mean_se(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return f"{v.mean():.3f} +- {se:.3f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sgd")
    p.add_argument("runs", nargs="+")
    p.add_argument("--max-residual", type=float, default=0.5)
    a = p.parse_args()
    exp = load_experiment(a.runs, a.sgd, max_residual=a.max_residual)
    x = exp.land.x_centers
    per_run = [equilibrium(land)[0] for land in exp.lands]
    high = [float(np.nanmean(eq[x > 0])) for eq in per_run]
    low_bin = int(np.flatnonzero(np.all([np.isfinite(eq) for eq in per_run], axis=0))[0])
    low = [float(eq[low_bin]) for eq in per_run]
    end = exp.endpoint
    end_bin = int(np.clip(np.searchsorted(exp.land.x_edges, end.x, side="right") - 1, 0, len(x) - 1))
    at_end = [float(eq[end_bin]) for eq in per_run]
    print(f"runs: {len(a.runs)}; joins (common bins, residual RMS) per run:")
    for run, land in zip(a.runs, exp.lands):
        print(f"  {run}: " + ", ".join(f"{p.windows[0]}-{p.windows[1]}: {p.common_bins}, {p.residual_rms:.2f}"
                                      for p in land.pairs))
    print(f"equilibrium A_test averaged over ln L_train > 0: {mean_se(high)}")
    print(f"equilibrium A_test at the lowest x bin visited by every run (ln L = {x[low_bin]:.2f}): {mean_se(low)}")
    print(f"SGD endpoint: ln L_train = {end.x:.3f} +- {end.x_stderr:.3f} (bin centre {x[end_bin]:.2f}), "
          f"SGD A_test = {end.sgd_y:.3f} +- {end.sgd_stderr:.3f} ({end.runs} runs in the sampled range, "
          f"{end.runs_outside} outside)")
    print(f"equilibrium A_test at the SGD runs' mean train loss: {mean_se(at_end)}")
    print(f"advantage run by run (<A>(x_r) - A_r): {end.advantage:+.3f} +- {end.advantage_stderr:.3f} (runs and seeds); "
          f"windows' largest disagreement {end.window_disagreement:.3f}; in quadrature +- {end.advantage_uncertainty:.3f}")


if __name__ == "__main__":
    main()
