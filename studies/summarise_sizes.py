"""The table of docs/results.md's spiral sizes: for each network width and SGD length, the SGD
endpoint against the equilibrium at each run's own final train loss (``analysis``'s Endpoint),
with the run's joins and convergence.
Usage: python studies/summarise_sizes.py OUT_DIR WIDTH... --steps S1 S2 [--max-residual R]
(OUT_DIR/wW holds run W's files and OUT_DIR/wW/sgd_S/baseline.h5 its SGD runs of S steps)."""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.experiment import load_experiment


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("widths", nargs="+", type=int)
    p.add_argument("--steps", nargs="+", type=int, required=True)
    p.add_argument("--max-residual", type=float, default=0.5)
    a = p.parse_args()
    print("| width (params) | SGD steps | SGD final ln L_train | SGD A_test | equilibrium <A>(x_r) | advantage | runs outside "
          "| worst join residual | status |")
    print("|---|---|---|---|---|---|---|---|---|")
    for w in a.widths:
        run = str(Path(a.out) / f"w{w}")
        params = 2 * w + w + 2 * (w * w + w) + 2 * w + 2
        for steps in a.steps:
            exp = load_experiment([run], str(Path(run) / f"sgd_{steps}" / "baseline.h5"), max_residual=a.max_residual)
            e = exp.endpoint
            worst = max(pair.residual_rms for pair in exp.land.pairs)
            status = "; ".join(u.split(": ", 1)[1] for u in exp.unconverged) or "converged"
            print(f"| {w} ({params}) | {steps} | {e.x:.2f} +- {e.x_stderr:.2f} | {e.sgd_y:.3f} +- {e.sgd_stderr:.3f} "
                  f"| {e.eq_y:.3f} +- {e.eq_stderr:.3f} | {e.advantage:+.3f} +- {e.advantage_stderr:.3f} | {e.runs_outside} "
                  f"| {worst:.2f} | {status} |")


if __name__ == "__main__":
    main()
