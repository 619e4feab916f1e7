"""One experiment: several run files of the same deck (independent seeds) and optionally an SGD
baseline, reduced to the numbers behind every figure and report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .landscape import (
    AnalysisError,
    Curve,
    Endpoint,
    JoinError,
    Landscape,
    check_same_grid,
    equilibrium_accuracy,
    equilibrium_over_runs,
    join_windows,
    read_baseline,
    read_run,
    sample_curve,
    sgd_curve,
    sgd_endpoint,
)


@dataclass
class Experiment:
    label: str
    runs: list[str]
    lands: list[Landscape]        # one per run
    mean_entropy: np.ndarray      # (n_x, n_y) mean over runs of S - max S (-inf unless visited in every run)
    visited: np.ndarray           # (n_x, n_y) visited in every run
    eq: Curve                     # <y>(x) over runs
    top: Curve                    # max-entropy y(x) over runs
    sgd: Curve | None
    endpoint: Endpoint | None
    eq_accuracy: Curve | None = None   # equilibrium hard test accuracy(x) over runs, where recorded
    sgd_accuracy: Curve | None = None  # SGD's hard test accuracy(x), where the baseline records one
    unconverged: list[str] = field(default_factory=list)   # "RUN: why" for each run not converged
    n_params: int = 0             # the network's parameter count

    @property
    def land(self) -> Landscape:
        return self.lands[0]

    @property
    def advantage(self) -> np.ndarray:
        """Equilibrium minus SGD per x bin (n_x,), nan where either is missing."""
        if self.sgd is None:
            return np.full_like(self.eq.mean, np.nan)
        return self.eq.mean - self.sgd.mean


def load_experiment(runs: list[str], sgd: str | None = None, label: str = "", min_common: int = 5,
                    max_residual: float = 0.5) -> Experiment:
    if not runs:
        raise AnalysisError("no run given")
    recs = [read_run(r) for r in runs]
    check_same_grid(recs, runs)
    lands = []
    for rec, name in zip(recs, runs):
        try:
            lands.append(join_windows(rec, min_common, max_residual))
        except JoinError as exc:
            err = JoinError(f"{name}: {exc}")
            err.run = name
            raise err from None
    visited = np.logical_and.reduce([land.visited for land in lands])
    stack = np.array([np.where(visited, land.entropy, 0.0) for land in lands])
    mean_entropy = np.where(visited, stack.mean(axis=0), -np.inf)
    if visited.any():
        mean_entropy[visited] -= mean_entropy[visited].max()
    eq, top = equilibrium_over_runs(lands)
    acc = [equilibrium_accuracy(land) for land in lands]
    eq_accuracy = sample_curve(np.array(acc)) if all(a is not None for a in acc) else None
    curve = endpoint = sgd_accuracy = None
    if sgd is not None:
        base = read_baseline(sgd)
        if base.y_label != recs[0].y_label:
            raise AnalysisError(f"{sgd}: records {base.y_label}, but the runs' y is {recs[0].y_label}")
        curve = sgd_curve(base, recs[0].x_edges)
        if np.isfinite(base.accuracy).any():
            sgd_accuracy = sgd_curve(base, recs[0].x_edges, base.accuracy)
        endpoint = sgd_endpoint(base, recs[0].x_edges, eq, eq_accuracy)
        mismatches = [p.equilibrium_mismatch for land in lands for p in land.pairs if np.isfinite(p.equilibrium_mismatch)]
        endpoint.window_disagreement = max(mismatches, default=float("nan"))
    return Experiment(label or Path(runs[0]).name, runs, lands, mean_entropy, visited, eq, top, curve, endpoint,
                      eq_accuracy, sgd_accuracy,
                      [f"{name}: {why}" for name, rec in zip(runs, recs) if (why := not_converged(rec))], recs[0].n_params)


def not_converged(rec) -> str:
    """Why a run is not converged ("" when it is): its status and its windows' diagnostics."""
    if rec.status == "converged":
        return ""
    worst = min(rec.windows, key=lambda w: w.flatness)
    return (f"status {rec.status}, ln f {max(w.ln_f for w in rec.windows):.2g} (final is smaller), "
            f"lowest flatness {worst.flatness:.2f}")


def report_dict(exp: Experiment) -> dict:
    """Everything behind the figures, JSON-ready (nan -> None)."""
    def clean(a):
        return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, dtype=float)]
    land = exp.land
    out = {
        "label": exp.label, "runs": exp.runs, "x_label": land.x_label, "y_label": land.y_label,
        "y_bins": len(land.y_edges) - 1, "x_centers": clean(land.x_centers),
        "equilibrium_mean": clean(exp.eq.mean), "equilibrium_stderr": clean(exp.eq.stderr),
        "max_entropy_y": clean(exp.top.mean), "max_entropy_stderr": clean(exp.top.stderr),
        "joins": [[{"windows": list(p.windows), "common_bins": p.common_bins, "offset": round(p.offset, 6),
                    "residual_rms": round(p.residual_rms, 6),
                    "equilibrium_mismatch": round(p.equilibrium_mismatch, 6),
                    "y_distance": None if not np.isfinite(p.y_distance) else round(p.y_distance, 6)}
                   for p in land.pairs] for land in exp.lands],
    }
    if exp.eq_accuracy is not None:
        out.update({"equilibrium_accuracy_mean": clean(exp.eq_accuracy.mean),
                    "equilibrium_accuracy_stderr": clean(exp.eq_accuracy.stderr)})
    if exp.sgd_accuracy is not None:
        out.update({"sgd_accuracy_mean": clean(exp.sgd_accuracy.mean), "sgd_accuracy_stderr": clean(exp.sgd_accuracy.stderr)})
    if exp.sgd is not None:
        out.update({"sgd_mean": clean(exp.sgd.mean), "sgd_stderr": clean(exp.sgd.stderr),
                    "sgd_runs_per_bin": [int(c) for c in exp.sgd.count], "advantage": clean(exp.advantage)})
        e = exp.endpoint
        out["sgd_endpoint"] = {"x": e.x, "x_stderr": e.x_stderr, "runs": e.runs, "runs_outside": e.runs_outside,
                               "sgd_y": e.sgd_y, "sgd_stderr": e.sgd_stderr,
                               "equilibrium_y": e.eq_y, "equilibrium_stderr": e.eq_stderr,
                               "advantage": e.advantage, "advantage_stderr": e.advantage_stderr,
                               "window_disagreement": e.window_disagreement,
                               "advantage_uncertainty": e.advantage_uncertainty}
        if exp.eq_accuracy is not None:
            out["sgd_endpoint"].update({"sgd_accuracy": e.sgd_accuracy, "equilibrium_accuracy": e.eq_accuracy,
                                        "accuracy_advantage": e.accuracy_advantage,
                                        "accuracy_advantage_stderr": e.accuracy_advantage_stderr})
    out["unconverged"] = exp.unconverged
    return out
