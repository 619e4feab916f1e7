"""``rewl analyse {landscape,report,compare,windows,diagnostics}`` (also ``python -m analysis``): figures and
numbers from run files.

Bad arguments (a missing file, a file that is not a run, runs on different grids, windows that
do not join) print one clear message and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .landscape import AnalysisError, JoinError, read_run


def _join_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-common", type=int, default=5, help="visited bins two windows must share (default 5)")
    p.add_argument("--max-residual", type=float, default=0.5,
                   help="largest RMS mismatch of ln g in an overlap after the fitted constant (default 0.5)")


def parser(prog: str = "rewl analyse") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Entropy landscapes from rewl run files.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("landscape", help="heatmap of S with equilibrium, max-entropy and SGD curves")
    a.add_argument("runs", nargs="+", help="run directories (or run.h5) of one deck, independent seeds")
    a.add_argument("--sgd", help="baseline.h5 from `rewl sgd`")
    a.add_argument("-o", "--out", required=True, help="figure path; .png and .pdf are written")
    a.add_argument("--label", default="")
    a.add_argument("--reference", action="append", default=[], metavar="LABEL=Y",
                   help="a horizontal reference line at y = Y (e.g. a linear model's test loss); repeatable")
    _join_args(a)
    r = sub.add_parser("report", help="the numbers behind the figures, as a table or JSON")
    r.add_argument("runs", nargs="+")
    r.add_argument("--sgd")
    r.add_argument("--json", action="store_true")
    _join_args(r)
    c = sub.add_parser("compare", help="several experiments: landscape panel and equilibrium vs SGD")
    c.add_argument("specs", nargs="+", metavar="LABEL=RUN[,RUN...][@SGD]",
                   help="one experiment each, e.g. w30=runs/a,runs/b@runs/a/baseline.h5")
    c.add_argument("-o", "--out", required=True)
    _join_args(c)
    w = sub.add_parser("windows", help="each window of a run on its own (each x row against its own maximum): "
                       "what a run whose windows do not join can still show")
    w.add_argument("run")
    w.add_argument("-o", "--out", required=True)
    d = sub.add_parser("diagnostics", help="ln f, flatness, swap and move acceptance of a run")
    d.add_argument("run")
    d.add_argument("-o", "--out", required=True)
    return p


def _parse_spec(spec: str) -> tuple[str, list[str], str | None]:
    if "=" not in spec:
        raise AnalysisError(f"experiment {spec!r}: expected LABEL=RUN[,RUN...][@SGD]")
    label, rest = spec.split("=", 1)
    runs, _, sgd = rest.partition("@")
    run_list = [r for r in runs.split(",") if r]
    if not label or not run_list:
        raise AnalysisError(f"experiment {spec!r}: expected LABEL=RUN[,RUN...][@SGD]")
    return label, run_list, sgd or None


def _parse_reference(spec: str) -> tuple[str, float]:
    label, _, value = spec.rpartition("=")
    try:
        return label or "reference", float(value)
    except ValueError:
        raise AnalysisError(f"--reference {spec!r}: expected LABEL=Y with Y a number") from None


def main(argv: list[str] | None = None, prog: str = "rewl analyse") -> int:
    args = parser(prog).parse_args(argv)
    from .experiment import load_experiment, report_dict
    from .figures import compare_figure, diagnostics_figure, landscape_figure, windows_figure
    join = {} if args.command in ("diagnostics", "windows") else \
        {"min_common": args.min_common, "max_residual": args.max_residual}
    try:
        if args.command in ("diagnostics", "windows"):
            rec = read_run(args.run)
            from .experiment import not_converged
            warn_unconverged([f"{args.run}: {why}"] if (why := not_converged(rec)) else [])
            paths = (diagnostics_figure if args.command == "diagnostics" else windows_figure)(rec, args.out)
        elif args.command == "compare":
            exps = [load_experiment(runs, sgd, label, **join) for label, runs, sgd in map(_parse_spec, args.specs)]
            for exp in exps:
                warn_unconverged(exp.unconverged)
            paths = compare_figure(exps, args.out)
            print(compare_table(exps))
        else:
            exp = load_experiment(args.runs, args.sgd, getattr(args, "label", ""), **join)
            warn_unconverged(exp.unconverged)
            if args.command == "report":
                data = report_dict(exp)
                print(json.dumps(data, indent=1) if args.json else format_report(data))
                return 0
            paths = landscape_figure(exp, args.out, [_parse_reference(r) for r in args.reference])
            if exp.endpoint is not None:
                print(endpoint_line(report_dict(exp)))
    except JoinError as exc:
        print(f"analysis: error: {exc}", file=sys.stderr)
        if args.command == "landscape":       # something to look at all the same
            out = Path(args.out)
            base = out.with_suffix("") if out.suffix in (".png", ".pdf") else out
            paths = windows_figure(read_run(exc.run), base.with_name(base.name + "_windows"),
                                   why=str(exc).removeprefix(f"{exc.run}: "))
            print(f"analysis: wrote the windows one by one instead: {', '.join(map(str, paths))} "
                  f"(rewl analyse windows {exc.run} -o FIG)", file=sys.stderr)
        return 2
    except AnalysisError as exc:
        print(f"analysis: error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def compare_table(exps: list) -> str:
    """One row per experiment: its size and the comparison at its SGD endpoints (the numbers
    behind the compare figure's last two panels)."""
    rows = [f"{'experiment':<14} {'parameters':>10}  {'SGD end x':>9}  {'runs (out)':>10}  {'equilibrium':>11}  "
            f"{'SGD':>8}  {'eq - SGD':>8}  {'+- runs':>7}  {'+- all':>7}  status"]
    for exp in exps:
        e = exp.endpoint
        status = "NOT CONVERGED" if exp.unconverged else "converged"
        if e is None:
            rows.append(f"{exp.label:<14} {exp.n_params:>10,}  (no SGD baseline)  {status}")
            continue
        rows.append(f"{exp.label:<14} {exp.n_params:>10,}  {e.x:9.3f}  {e.runs:>5d} ({e.runs_outside:d})  "
                    f"{_num(e.eq_y):>11}  {_num(e.sgd_y):>8}  {_num(e.advantage, '+.3f'):>8}  "
                    f"{_num(e.advantage_stderr):>7}  {_num(e.advantage_uncertainty):>7}  {status}")
    return "\n".join(rows)


def endpoint_line(data: dict) -> str:
    e = data["sgd_endpoint"]
    where = (f"at the SGD endpoints (mean ln L_train {e['x']:.3f} +- {e['x_stderr']:.3f}; {e['runs']} runs, "
             f"{e['runs_outside']} outside the sampled range and left out): ")
    accuracy = (f"hard test accuracy: equilibrium {_num(e.get('equilibrium_accuracy'))}, SGD {_num(e.get('sgd_accuracy'))}, "
                f"advantage {_num(e.get('accuracy_advantage'), '+.3f')} +- {_num(e.get('accuracy_advantage_stderr'))}")
    if data["y_bins"] == 1:          # y is not resolved: the recorded hard accuracy is the comparison
        return where + accuracy + " (at each run's own train loss)"
    line = (where + f"equilibrium {data['y_label']} at each "
            f"run's own train loss {_num(e['equilibrium_y'])} +- {_num(e['equilibrium_stderr'])}, SGD "
            f"{_num(e['sgd_y'])} +- {_num(e['sgd_stderr'])}, advantage {_num(e['advantage'], '+.3f')} +- "
            f"{_num(e['advantage_stderr'])} (runs and seeds); with the windows' disagreement "
            f"{_num(e['window_disagreement'])}: +- {_num(e['advantage_uncertainty'])}")
    if "equilibrium_accuracy" in e:
        line += "; " + accuracy
    return line


def warn_unconverged(unconverged: list[str]) -> None:
    for why in unconverged:
        print(f"analysis: warning: not converged, read its numbers as estimates in progress: {why}", file=sys.stderr)


def _num(v, fmt: str = ".3f") -> str:
    """3 decimals; n/a where undefined (no data, or a standard error of a single run)."""
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def format_report(data: dict) -> str:
    lines = [f"{data['label']}: {len(data['runs'])} run(s); x = {data['x_label']}, y = {data['y_label']}"]
    for r, joins in enumerate(data["joins"]):
        for j in joins:
            lines.append(f"  run {r} join {j['windows'][0]}-{j['windows'][1]}: {j['common_bins']} common bins, "
                         f"offset {j['offset']:.3f}, residual RMS {j['residual_rms']:.3f}, "
                         f"max |{'<A>' if data['y_bins'] == 1 else '<y>'} difference| {j['equilibrium_mismatch']:.3f}"
                         + (f", P(y | x) distance {j['y_distance']:.3f}" if j.get("y_distance") is not None else ""))
    if data["y_bins"] == 1:
        lines.append(one_y_bin_table(data))
        if "sgd_endpoint" in data:
            lines.append(endpoint_line(data))
        return "\n".join(lines)
    sgd = "sgd_mean" in data
    acc = "equilibrium_accuracy_mean" in data
    head = (f"  {'x':>7}  {'<y> eq':>8} {'+-':>6}  {'max-S y':>8}" + (f"  {'<A> eq':>7} {'+-':>6}" if acc else "")
            + (f"  {'SGD':>7} {'+-':>6}  {'adv':>7}" if sgd else ""))
    lines.append(head)
    for i, x in enumerate(data["x_centers"]):
        eq = data["equilibrium_mean"][i]
        if eq is None and not (sgd and data["sgd_mean"][i] is not None):
            continue
        row = f"  {x:7.3f}  {_num(eq):>8} {_num(data['equilibrium_stderr'][i]):>6}  {_num(data['max_entropy_y'][i]):>8}"
        if acc:   # equilibrium hard test accuracy beside a smoothed-accuracy y
            row += f"  {_num(data['equilibrium_accuracy_mean'][i]):>7} {_num(data['equilibrium_accuracy_stderr'][i]):>6}"
        if sgd:
            row += f"  {_num(data['sgd_mean'][i]):>7} {_num(data['sgd_stderr'][i]):>6}  {_num(data['advantage'][i]):>7}"
        lines.append(row)
    if sgd:
        lines.append(endpoint_line(data))
    return "\n".join(lines)


def one_y_bin_table(data: dict) -> str:
    """The table of a run whose grid has one y bin: S(x) is all it resolves, and the equilibrium is
    the hard test accuracy recorded per bin (with SGD's beside it where the baseline has one)."""
    acc, sgd = "equilibrium_accuracy_mean" in data, "sgd_accuracy_mean" in data
    lines = ["  (one y bin: S of x alone; the equilibrium is the hard test accuracy recorded per bin)"]
    if not acc:
        return lines[0]
    lines.append(f"  {'x':>7}  {'<A> eq':>7} {'+-':>6}" + (f"  {'SGD A':>7} {'+-':>6}  {'adv':>7}" if sgd else ""))
    for i, x in enumerate(data["x_centers"]):
        eq = data["equilibrium_accuracy_mean"][i]
        other = data["sgd_accuracy_mean"][i] if sgd else None
        if eq is None and other is None:
            continue
        row = f"  {x:7.3f}  {_num(eq):>7} {_num(data['equilibrium_accuracy_stderr'][i]):>6}"
        if sgd:
            adv = None if eq is None or other is None else eq - other
            row += f"  {_num(other):>7} {_num(data['sgd_accuracy_stderr'][i]):>6}  {_num(adv, '+.3f'):>7}"
        lines.append(row)
    return "\n".join(lines)
