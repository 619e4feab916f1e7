"""Figures (matplotlib, written as PNG and PDF): the landscape, equilibrium vs SGD over experiments,
a panel of landscapes (e.g. one per network width), the windows of a run one by one, and run
diagnostics."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as pe  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rewl.joining import recorded_view, row_mean  # noqa: E402
from rewl.storage import RunRecord  # noqa: E402

from .experiment import Experiment  # noqa: E402

MAGENTA = "#e0249a"


def save(fig: plt.Figure, out: str | Path) -> list[Path]:
    """Write FIG.png and FIG.pdf (whatever suffix `out` has); returns both paths."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def draw_landscape(ax: plt.Axes, exp: Experiment, colorbar: bool = True) -> None:
    """Heatmap of S - max S (warm = high entropy) with the equilibrium <y> (magenta dots), the
    max-entropy y (magenta line) and the SGD curve (black, with its standard error). A grid of
    one y bin is drawn as ``draw_profile``."""
    land = exp.land
    if land.one_y_bin:
        draw_profile(ax, exp)
        return
    s = np.ma.masked_invalid(np.where(exp.visited, exp.mean_entropy, np.nan))
    finite = s.compressed()
    vmin = float(finite.min()) if finite.size else -1.0
    mesh = ax.pcolormesh(land.x_edges, land.y_edges, s.T, cmap="inferno", vmin=vmin, vmax=0.0, shading="flat")
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label="S - max S")
    x = land.x_centers
    ax.plot(x, exp.top.mean, "-", color=MAGENTA, lw=1.5, label="max-entropy")
    ax.errorbar(x, exp.eq.mean, yerr=np.nan_to_num(exp.eq.stderr), fmt="o", ms=3.5, color=MAGENTA,
                mec="white", mew=0.4, elinewidth=0.8, label="equilibrium <y>")
    if exp.sgd is not None:
        ok = np.isfinite(exp.sgd.mean)
        halo = [pe.Stroke(linewidth=3.5, foreground="white"), pe.Normal()]   # visible on dark cells
        ax.plot(x[ok], exp.sgd.mean[ok], "-", color="black", lw=1.8, label="SGD", path_effects=halo)
        lo, hi = exp.sgd.mean - np.nan_to_num(exp.sgd.stderr), exp.sgd.mean + np.nan_to_num(exp.sgd.stderr)
        ax.fill_between(x[ok], lo[ok], hi[ok], color="black", alpha=0.25, lw=0)
        if exp.endpoint is not None:
            end = exp.endpoint
            ax.plot([end.x], [end.sgd_y], "*", color="black", mec="white", mew=1.0, ms=13,
                    label=f"SGD end (equilibrium - SGD {end.advantage:+.3f} $\\pm$ {end.advantage_uncertainty:.3f})")
    ax.set_xlabel("ln(train loss)")
    ax.set_ylabel("test accuracy" if land.y_label == "A_test" else land.y_label)
    ax.set_xlim(land.x_edges[0], land.x_edges[-1])
    ax.set_ylim(land.y_edges[0], land.y_edges[-1])
    ax.set_title(exp.label, fontsize=10)
    if exp.unconverged:
        not_converged_mark(ax, f"{len(exp.unconverged)} of {len(exp.runs)} runs")


def draw_profile(ax: plt.Axes, exp: Experiment) -> None:
    """A landscape of one y bin: S(x) - max S (line, left axis) and, where recorded, the
    equilibrium hard test accuracy <A>(x) (magenta dots) with SGD's (black, with its standard
    error, and its endpoint as a star) on a right axis."""
    land = exp.land
    x = land.x_centers
    s = np.where(exp.visited[:, 0], exp.mean_entropy[:, 0], np.nan)
    ax.plot(x, s, "-", color="tab:orange", lw=1.8, label="S(ln L_train) - max S")
    ax.set_xlabel("ln(train loss)")
    ax.set_ylabel("S - max S (one y bin)")
    ax.set_xlim(land.x_edges[0], land.x_edges[-1])
    ax.set_title(exp.label, fontsize=10)
    if exp.eq_accuracy is not None:
        acc = ax.twinx()
        acc.errorbar(x, exp.eq_accuracy.mean, yerr=np.nan_to_num(exp.eq_accuracy.stderr), fmt="o", ms=3.5,
                     color=MAGENTA, mec="white", mew=0.4, elinewidth=0.8, label="equilibrium <A>")
        if exp.sgd_accuracy is not None:
            ok = np.isfinite(exp.sgd_accuracy.mean)
            acc.plot(x[ok], exp.sgd_accuracy.mean[ok], "-", color="black", lw=1.8, label="SGD")
            err = np.nan_to_num(exp.sgd_accuracy.stderr)
            acc.fill_between(x[ok], (exp.sgd_accuracy.mean - err)[ok], (exp.sgd_accuracy.mean + err)[ok], color="black",
                             alpha=0.25, lw=0)
        end = exp.endpoint
        if end is not None and np.isfinite(end.sgd_accuracy):
            acc.plot([end.x], [end.sgd_accuracy], "*", color="black", mec="white", mew=1.0, ms=13,
                     label=f"SGD end (equilibrium - SGD {end.accuracy_advantage:+.3f} $\\pm$ "
                           f"{np.nan_to_num(end.accuracy_advantage_stderr):.3f})")
        acc.set_ylabel("hard test accuracy")
        acc.set_ylim(0.0, 1.0)
    if exp.unconverged:
        not_converged_mark(ax, f"{len(exp.unconverged)} of {len(exp.runs)} runs")


def not_converged_mark(ax: plt.Axes, what: str) -> None:
    """A red stamp across the top of a panel whose data come from runs that did not converge."""
    ax.text(0.5, 0.97, f"NOT CONVERGED ({what})", transform=ax.transAxes, ha="center", va="top", fontsize=9,
            color="white", weight="bold", bbox={"facecolor": "tab:red", "alpha": 0.85, "edgecolor": "none"})


def landscape_figure(exp: Experiment, out: str | Path, references: list[tuple[str, float]] = ()) -> list[Path]:
    """The landscape of one experiment; `references`: (label, y) of horizontal lines to compare
    with (a linear model's test loss, say)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    draw_landscape(ax, exp)
    for (label, y), style in zip(references, ("--", ":", "-.", (0, (5, 1)))):
        ax.axhline(y, color="tab:cyan", ls=style, lw=1.4, label=f"{label} ({y:.3g})")
    # below the axes: inside, it would hide curves (or the NOT CONVERGED stamp) wherever they run;
    # the handles of every axis (a one-y-bin profile draws the accuracy on a second one)
    handles, labels = [], []
    for axis in fig.axes:
        more_handles, more_labels = axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    return save(fig, out)


def compare_figure(exps: list[Experiment], out: str | Path) -> list[Path]:
    """Left: a panel of the experiments' landscapes. Then equilibrium vs SGD at the SGD endpoint,
    one point per experiment, with the diagonal (above it: the high-entropy advantage). Last, the
    gap equilibrium - SGD at the endpoints against the parameter count (the reference study's
    width panel), with the seeds' and the windows' uncertainty; open markers: not converged."""
    n = len(exps)
    fig, axes = plt.subplots(1, n + 2, figsize=(4.2 * (n + 2), 3.8), squeeze=False)
    for ax, exp in zip(axes[0][:n], exps):
        draw_landscape(ax, exp, colorbar=False)
    draw_gap_by_size(axes[0][n + 1], exps)
    ax = axes[0][n]
    ends = [(e.label, e.endpoint) for e in exps if e.endpoint is not None]
    for label, end in ends:
        ax.errorbar(end.sgd_y, end.eq_y, xerr=end.sgd_stderr, yerr=np.nan_to_num(end.eq_stderr), fmt="o", ms=5,
                    capsize=2, label=label)
    values = [v for _, e in ends for v in (e.sgd_y, e.eq_y) if np.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
    ax.set_xlabel("SGD (at its endpoint)")
    ax.set_ylabel("equilibrium (same train loss)")
    ax.set_title("equilibrium vs SGD", fontsize=10)
    if ends:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out)


def draw_gap_by_size(ax, exps: list[Experiment]) -> None:
    """equilibrium - SGD at the SGD endpoints (``Endpoint.advantage``) against n_params, log x."""
    for exp in exps:
        end = exp.endpoint
        if end is None or not np.isfinite(end.advantage):
            continue
        ax.errorbar(exp.n_params, end.advantage, yerr=end.advantage_uncertainty, fmt="o", ms=6, capsize=3,
                    mfc="none" if exp.unconverged else None, label=exp.label)
    ax.axhline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("equilibrium - SGD at the SGD endpoints")
    ax.set_title("gap by network size" + (" (open: not converged)" if any(e.unconverged for e in exps) else ""),
                 fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def windows_figure(rec: RunRecord, out: str | Path, why: str = "") -> list[Path]:
    """One panel per window, for runs whose windows do not join: each x row's ln g against its own
    maximum (visited bins; 0 = the row's most likely y), with the row's equilibrium <y> (magenta
    dots) and max-entropy y (magenta line). Rows are comparable within a row only: no constant
    relates one row, or one window, to another here. `why` (the join's refusal) goes in the title.
    With y recorded, ln g(x) + ln P(y | x) (``recorded_view``). With one y bin
    (``windows_profiles``): each window's S(x) against its own maximum."""
    if len(rec.y_edges) == 2:
        return windows_profiles(rec, out, why)
    n = rec.n_windows
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1.0, 4.2), squeeze=False, sharey=True, layout="constrained")
    y = 0.5 * (rec.y_edges[1:] + rec.y_edges[:-1])
    views = [recorded_view(rec, w) for w in rec.windows]    # per window: ln g and visits, (n_x of it, n_y)
    rels = []                        # per window (n_x of it, n_y): ln g - its row's maximum, nan where unvisited
    for ln_g, visits in views:
        seen = visits > 0
        top = np.max(np.where(seen, ln_g, -np.inf), axis=1, keepdims=True)
        top[~np.isfinite(top)] = 0.0     # a row nobody visited: all nan below, without inf - inf
        rels.append(np.where(seen, ln_g - top, np.nan))
    deepest = min((float(np.nanmin(r)) for r in rels if np.isfinite(r).any()), default=-1.0)
    vmin = max(deepest, -30.0)      # colour the top 30 units of each row; deeper bins saturate
    mesh = None
    for k, (ax, w, rel, (ln_g, visits)) in enumerate(zip(axes[0], rec.windows, rels, views)):
        lo, hi = w.x_bins
        x_edges = rec.x_edges[lo: hi + 1]
        seen = visits > 0
        rel = np.ma.masked_invalid(rel)
        mesh = ax.pcolormesh(x_edges, rec.y_edges, rel.T, cmap="inferno", vmin=vmin, vmax=0.0, shading="flat")
        xc = 0.5 * (x_edges[1:] + x_edges[:-1])
        eq = np.array([row_mean(ln_g[i], visits[i], y) for i in range(hi - lo)])
        best = np.array([y[np.argmax(np.where(seen[i], ln_g[i], -np.inf))] if seen[i].any() else np.nan
                         for i in range(hi - lo)])
        ax.plot(xc, best, "-", color=MAGENTA, lw=1.2, label="max-entropy")
        ax.plot(xc, eq, "o", ms=3, color=MAGENTA, mec="white", mew=0.4, label="equilibrium <y>")
        ax.set(xlabel=rec.x_label, title=f"window {k}: ln f {w.ln_f:.2g}, flatness {w.flatness:.2f}")
        ax.title.set_fontsize(9)
        ax.set_xlim(x_edges[0], x_edges[-1])
    axes[0, 0].set_ylabel(rec.y_label)
    axes[0, 0].set_ylim(rec.y_edges[0], rec.y_edges[-1])
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.colorbar(mesh, ax=list(axes[0]), label="ln g - max of its x row")
    head = f"{rec.task}: windows one by one (each x row against its own maximum), {rec.status} after {rec.steps} steps"
    fig.suptitle("\n".join(textwrap.wrap(head, 110) + textwrap.wrap(f"not joined: {why}" if why else "", 110)), fontsize=9)
    if rec.status != "converged":
        not_converged_mark(axes[0, 0], rec.status)
    return save(fig, out)


def windows_profiles(rec: RunRecord, out: str | Path, why: str = "") -> list[Path]:
    """The windows of a run with one y bin, unjoined: each window's ln g(x) against its own maximum
    (left), and the hard test accuracy each recorded per x bin, where it did (right)."""
    fig, (ax, acc) = plt.subplots(1, 2, figsize=(10.0, 4.0), layout="constrained")
    xc = 0.5 * (rec.x_edges[1:] + rec.x_edges[:-1])
    for k, w in enumerate(rec.windows):
        lo, hi = w.x_bins
        seen = w.visits[:, 0] > 0
        g = np.where(seen, w.ln_g[:, 0], np.nan)
        label = f"window {k}: ln f {w.ln_f:.2g}, flatness {w.flatness:.2f}"
        ax.plot(xc[lo:hi], g - np.nanmax(g), "-", lw=1.5, label=label)
        if w.accuracy_sum is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                acc.plot(xc[lo:hi], np.where(seen, w.accuracy_sum[:, 0] / w.visits[:, 0], np.nan), "o-", ms=3, label=label)
    ax.set(xlabel=rec.x_label, ylabel="ln g - the window's maximum")
    acc.set(xlabel=rec.x_label, ylabel="hard test accuracy recorded", ylim=(0.0, 1.0))
    ax.legend(fontsize=8)
    head = f"{rec.task}: windows one by one (one y bin), {rec.status} after {rec.steps} steps"
    fig.suptitle("\n".join(textwrap.wrap(head, 110) + textwrap.wrap(f"not joined: {why}" if why else "", 110)), fontsize=9)
    if rec.status != "converged":
        not_converged_mark(ax, rec.status)
    return save(fig, out)


def diagnostics_figure(rec: RunRecord, out: str | Path, title: str = "") -> list[Path]:
    """Per window over the run: ln f, flatness (the schedule's criterion, solid; over every
    visited bin, dashed), the fraction of rare visited bins; the walkers' round trips between the
    end windows; swap acceptance per window pair; move acceptance per window and layer. The title
    gives each window's change of ln g since the previous checkpoint, the flatness of its visits
    and the crossings of its least crossed x edge over that interval and whether it settled, and
    says when the run did not converge."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    h = rec.history
    steps = h.step
    for k in range(rec.n_windows):
        if len(steps):
            line, = axes[0, 0].semilogy(steps, h.ln_f[:, k], label=f"window {k}")
            axes[0, 1].plot(steps, h.flatness[:, k], color=line.get_color(), label=f"window {k}")
            if h.flatness_all is not None:
                axes[0, 1].plot(steps, h.flatness_all[:, k], "--", color=line.get_color(), lw=0.8)
            if h.rare_fraction is not None:
                axes[0, 2].plot(steps, h.rare_fraction[:, k], color=line.get_color(), label=f"window {k}")
    axes[0, 0].set(xlabel="step", ylabel="ln f", title="ln f per window")
    axes[0, 1].set(xlabel="step", ylabel="min H / mean H", title="flatness (dashed: over every visited bin)",
                   ylim=(0, 1.05))
    axes[0, 2].set(xlabel="step", ylabel="fraction of visited bins", ylim=(0, None),
                   title="rare bins (visits < 10 % of the median)")
    axes[0, 0].legend(fontsize=7)
    if h.round_trips is not None and len(steps) and np.isfinite(h.round_trips).any():
        axes[1, 2].plot(steps, h.round_trips, color="black")
    else:
        axes[1, 2].text(0.5, 0.5, "n/a (one window)" if rec.n_windows == 1 else "not recorded", ha="center",
                        transform=axes[1, 2].transAxes)
    axes[1, 2].set(xlabel="step", ylabel="completed round trips", title=f"round trips, window 0 <-> {rec.n_windows - 1}")
    pairs = np.arange(rec.n_windows - 1)
    rate = rec.swap_accepted / np.maximum(rec.swap_attempted, 1)
    axes[1, 0].bar(pairs, rate, color="tab:blue")
    axes[1, 0].set(xlabel="window pair (k, k+1)", ylabel="accepted / attempted", title="swap acceptance", ylim=(0, 1))
    axes[1, 0].set_xticks(pairs, [f"{k}-{k + 1}" for k in pairs])
    move = rec.move_accepted / np.maximum(rec.move_attempted, 1)
    n_groups = move.shape[1]
    width = 0.8 / n_groups
    for g in range(n_groups):
        axes[1, 1].bar(np.arange(rec.n_windows) + g * width, move[:, g], width, label=rec.group_names[g])
    axes[1, 1].set(xlabel="window", ylabel="accepted / attempted", title="move acceptance", ylim=(0, 1))
    axes[1, 1].set_xticks(np.arange(rec.n_windows) + 0.4 - width / 2, [str(k) for k in range(rec.n_windows)])
    axes[1, 1].legend(fontsize=7)
    changes = ", ".join(f"w{k} {w.ln_g_change:.3g}" for k, w in enumerate(rec.windows))
    recent = ", ".join(f"w{k} {'settled' if w.settled else 'not settled'} ({w.recent_flatness:.2f}, {w.recent_crossings:.0f})"
                       for k, w in enumerate(rec.windows))
    fig.suptitle((title or f"{rec.task}: {rec.status} after {rec.steps} steps")
                 + f"\nchange of ln g since the previous checkpoint: {changes}"
                 + f"\nover it (flatness of the visits, crossings of the least crossed x edge): {recent}")
    if rec.status != "converged":
        not_converged_mark(axes[0, 0], rec.status)
    fig.tight_layout()
    return save(fig, out)
