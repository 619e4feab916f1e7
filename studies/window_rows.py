"""Equilibrium <y> per train-loss row of each window separately, against the baselines' curve.

For runs whose windows cannot be joined (no common bins, or a residual beyond the threshold):
<y>(x) = sum_y y e^S / sum_y e^S needs only the S of its own row, up to a constant, so each window
gives it for the rows it visited without any join. Prints one line per row visited by any window.
    python studies/window_rows.py RUN_DIR BASELINE_H5
"""
from __future__ import annotations

import sys

import numpy as np

from analysis.landscape import read_baseline, read_run, row_mean, sgd_curve


def main(run: str, baseline: str) -> None:
    rec, base = read_run(run), read_baseline(baseline)
    y = 0.5 * (rec.y_edges[1:] + rec.y_edges[:-1])
    x = 0.5 * (rec.x_edges[1:] + rec.x_edges[:-1])
    sgd = sgd_curve(base, rec.x_edges)
    with_accuracy = all(w.accuracy_sum is not None for w in rec.windows)
    print(f"{run}: {rec.status}, step {rec.steps}; x = {rec.x_label}, y = {rec.y_label}; per window, no join")
    head = f"{'x':>7} " + " ".join(f"{'<y> w' + str(k):>9}" for k in range(rec.n_windows))
    if with_accuracy:
        head += " " + " ".join(f"{'<A> w' + str(k):>9}" for k in range(rec.n_windows))
    print(head + f" {'SGD y':>8} {'+-':>6} {'runs':>5}")
    rows = []
    for i in range(len(x)):
        means, accs = [], []
        for w in rec.windows:
            lo, hi = w.x_bins
            inside = lo <= i < hi and bool((w.visits[i - lo] > 0).any())
            means.append(row_mean(w.ln_g[i - lo], w.visits[i - lo], y) if inside else np.nan)
            if with_accuracy:
                acc = np.divide(w.accuracy_sum[i - lo], w.visits[i - lo], out=np.full(len(y), np.nan),
                                where=w.visits[i - lo] > 0) if inside else None
                accs.append(row_mean(w.ln_g[i - lo], w.visits[i - lo], acc) if inside else np.nan)
        if np.isfinite(means).any():
            rows.append((i, means, accs))
    for i, means, accs in rows:
        line = f"{x[i]:7.3f} " + " ".join(f"{m:9.3f}" for m in means)
        if with_accuracy:
            line += " " + " ".join(f"{a:9.3f}" for a in accs)
        print(line + f" {sgd.mean[i]:8.3f} {sgd.stderr[i]:6.3f} {int(sgd.count[i]):5d}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
