"""Input decks: TOML parsed into frozen dataclasses, validated before any MPI work.

Every error names the deck file, the key and the reason (``DeckError``). Unknown keys get the
closest valid name suggested. Nothing in a deck is executed or unpickled.
"""
from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TASKS = ("spiral", "spiral_regression", "box_quadratic")
SAMPLERS = ("wlmc", "wlmd")
SCHEDULES = ("halving", "1/t", "ramp")
INTEGRATORS = ("baoab", "reference")
# [sampler] keys that only one sampler reads
SAMPLER_KEYS = {"wlmc": ("sigma_initial", "target_acceptance", "adapt_interval"),
                "wlmd": ("dt", "gamma", "kernel_width", "wall_strength", "integrator")}
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
ACTIVATIONS = ("relu", "tanh", "silu")
OPTIMIZERS = ("sgd", "adam")


class DeckError(ValueError):
    """A deck value is missing, unknown, of the wrong type or impossible."""

    def __init__(self, path: str | Path, key: str, reason: str):
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: {key}: {reason}")


# ----------------------------------------------------------------------------------------------
# dataclasses (one per deck table)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 1
    max_steps: int = 100_000          # step budget: move attempts per walker
    device: str = "auto"


@dataclass(frozen=True)
class TaskConfig:
    kind: str = "spiral"
    # spiral
    train_per_class: int = 20
    test_per_class: int = 50
    noise: float = 0.1
    data_seed: int = 0
    accuracy_k: float = 5.0          # sharpness k of the smoothed accuracy (spiral under wlmd)
    # spiral_regression
    points: int = 500                # all points; half train, half test
    # box_quadratic
    n: int = 4
    m: int = 2
    half_width: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (6, 6, 6)
    activation: str = "relu"
    box: tuple[float, ...] | None = None   # per layer half-widths; None: 2/sqrt(fan_out)
    dtype: str = "float32"
    compile: bool = False


@dataclass(frozen=True)
class SamplerConfig:
    kind: str = "wlmc"
    walkers_per_rank: int = 64
    sigma_initial: float = 0.05      # initial move size, as a fraction of each group's box half-width
    target_acceptance: float = 0.5
    adapt_interval: int = 1000       # steps between move-size adaptations
    sync_interval: int = 100         # steps between merges of ln g inside a window
    # wlmd: Langevin dynamics at kT = 1 on the potential ln g(x(w), y(w))
    dt: float = 1e-3
    gamma: float = 0.1               # friction per step: v <- (1 - gamma) v + sqrt(gamma (2 - gamma)) xi
    kernel_width: float = 1.0        # sigma of the Gaussian ln g update, in bins (cut at 4 sigma)
    wall_strength: float = 3000.0    # c of the soft walls c d^2 outside the window's x and the grid's y
    integrator: str = "baoab"        # or "reference": kick, friction, drift as in the reference study


@dataclass(frozen=True)
class AxisConfig:
    min: float
    max: float
    width: float

    @property
    def bins(self) -> int:
        return int(round((self.max - self.min) / self.width))


@dataclass(frozen=True)
class GridConfig:
    x: AxisConfig
    y: AxisConfig


@dataclass(frozen=True)
class WindowsConfig:
    count: int = 4
    overlap: float = 0.75
    ranks_per_window: int = 1


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "halving"
    ln_f_initial: float = 1.0
    ln_f_final: float = 1e-6
    flatness: float = 0.8
    check_interval: int = 1000       # steps between flatness checks
    min_visit_fraction: float = 0.01  # bins count for flatness once visited >= this x the mean
    # ramp: ln f rises linearly to ln_f_initial over ramp_steps, stays until plateau_end, then
    # decays as ln_f_initial * decay_time / (t - plateau_end + decay_time) (continuous at plateau_end)
    ramp_steps: int = 0
    plateau_end: int = 0
    decay_time: int = 1

@dataclass(frozen=True)
class ExchangeConfig:
    interval: int = 100              # steps between replica-exchange rounds


@dataclass(frozen=True)
class InitConfig:
    max_iterations: int = 20_000     # gradient steps to bring walkers into their window
    learning_rate: float = 0.02
    equilibration_steps: int = 1000  # WL moves inside the window before sampling starts


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/out"
    checkpoint_interval: int = 10_000   # steps
    log_interval: float = 10.0          # seconds between progress lines


@dataclass(frozen=True)
class BaselineConfig:
    """Independent SGD/Adam trainings of the task's network (``python -m rewl sgd``)."""

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    batch_size: int = 10             # points per step and run; 0 = the full training set
    steps: int = 2000
    record_interval: int = 10        # steps between recorded (x, y) points of each trajectory
    runs: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Config:
    path: str
    text: str
    run: RunConfig
    task: TaskConfig
    model: ModelConfig
    sampler: SamplerConfig
    grid: GridConfig
    windows: WindowsConfig
    schedule: ScheduleConfig
    exchange: ExchangeConfig
    init: InitConfig
    output: OutputConfig
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    @property
    def world_size(self) -> int:
        return self.windows.count * self.windows.ranks_per_window


# ----------------------------------------------------------------------------------------------
# parsing helpers


class _Table:
    """Reads keys of one TOML table, remembering which were used, so leftovers are errors."""

    def __init__(self, path: str, name: str, data: Any):
        if not isinstance(data, dict):
            raise DeckError(path, f"[{name}]", f"must be a table, got {type(data).__name__}")
        self.path, self.name, self.data, self.used = path, name, data, set()

    def key(self, key: str) -> str:
        return f"[{self.name}] {key}"

    def err(self, key: str, reason: str) -> DeckError:
        return DeckError(self.path, self.key(key), reason)

    def get(self, key: str, kind: type | tuple, default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
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

    def finish(self, valid: list[str] | None = None) -> None:
        valid = sorted(self.used) if valid is None else valid
        for key in self.data:
            if key not in self.used:
                near = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
                raise self.err(key, f"unknown key{hint}")


_REQUIRED = object()


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _nonneg(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _one_of(options: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(map(repr, options))}"


def _open_unit(v: float) -> str | None:
    return None if 0 < v < 1 else "must lie strictly between 0 and 1"


# ----------------------------------------------------------------------------------------------


def load(path: str | Path) -> Config:
    """Read and validate a deck file. Raises DeckError naming the file, key and reason."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DeckError(path, "(file)", f"cannot be read: {exc.strerror}") from None
    return parse(text, path)


def parse(text: str, path: str = "<deck>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeckError(path, "(syntax)", f"not valid TOML: {exc}") from None

    tables = ("run", "task", "model", "sampler", "grid", "windows", "schedule", "exchange", "init", "output",
              "baseline")
    for name in data:
        if name not in tables:
            near = difflib.get_close_matches(name, tables, n=1)
            hint = f"; did you mean [{near[0]}]?" if near else f"; valid tables: {', '.join(tables)}"
            raise DeckError(path, f"[{name}]", f"unknown table{hint}")

    def table(name: str) -> _Table:
        return _Table(path, name, data.get(name, {}))

    t = table("run")
    run = RunConfig(
        seed=t.get("seed", int, 1, _nonneg),
        max_steps=t.get("max_steps", int, 100_000, _positive),
        device=t.get("device", str, "auto", _one_of(DEVICES)),
    )
    t.finish()

    t = table("task")
    kind = t.get("kind", str, _REQUIRED, _one_of(TASKS))
    if kind == "spiral":
        task = TaskConfig(
            kind=kind,
            train_per_class=t.get("train_per_class", int, 20, _positive),
            test_per_class=t.get("test_per_class", int, 50, _positive),
            noise=t.get("noise", float, 0.1, _nonneg),
            data_seed=t.get("data_seed", int, 0, _nonneg),
            accuracy_k=t.get("accuracy_k", float, 5.0, _positive),
        )
    elif kind == "spiral_regression":
        task = TaskConfig(
            kind=kind,
            points=t.get("points", int, 500, lambda v: None if v >= 4 else "must be >= 4"),
            noise=t.get("noise", float, 0.1, _nonneg),
            data_seed=t.get("data_seed", int, 0, _nonneg),
        )
    else:
        n = t.get("n", int, 4, lambda v: None if v >= 2 else "must be >= 2")
        m = t.get("m", int, max(1, n // 2), lambda v: None if 1 <= v < n else f"must satisfy 1 <= m < n = {n}")
        task = TaskConfig(kind=kind, n=n, m=m, half_width=t.get("half_width", float, 1.0, _positive))
    t.finish()

    t = table("model")
    if kind == "box_quadratic" and "model" in data:
        raise DeckError(path, "[model]", "task 'box_quadratic' has no network; remove the [model] table")
    hidden = t.get("hidden", list, [6, 6, 6],
                   lambda v: None if v and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v)
                   else "must be a non-empty list of positive integers")
    n_layers = len(hidden) + 1
    box_raw = t.get("box", (float, list), None)
    if box_raw is None:
        box = None
    elif isinstance(box_raw, float):
        if box_raw <= 0:
            raise t.err("box", f"must be > 0 (got {box_raw!r})")
        box = (box_raw,) * n_layers
    else:
        if len(box_raw) != n_layers or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in box_raw):
            raise t.err("box", f"must be one positive number or a list of {n_layers} (one per layer) (got {box_raw!r})")
        box = tuple(float(b) for b in box_raw)
    model = ModelConfig(
        hidden=tuple(hidden),
        activation=t.get("activation", str, "relu", _one_of(ACTIVATIONS)),
        box=box,
        dtype=t.get("dtype", str, "float32", _one_of(DTYPES)),
        compile=t.get("compile", bool, False),
    )
    t.finish()

    t = table("sampler")
    sampler_kind = t.get("kind", str, "wlmc", _one_of(SAMPLERS))
    for other, keys in SAMPLER_KEYS.items():
        for key in keys:
            if other != sampler_kind and key in t.data:
                raise t.err(key, f"applies only to kind = {other!r} (this deck's sampler is {sampler_kind!r})")
    sampler = SamplerConfig(
        kind=sampler_kind,
        walkers_per_rank=t.get("walkers_per_rank", int, 64, _positive),
        sigma_initial=t.get("sigma_initial", float, 0.05, lambda v: None if 0 < v <= 2 else "must lie in (0, 2]"),
        target_acceptance=t.get("target_acceptance", float, 0.5, _open_unit),
        adapt_interval=t.get("adapt_interval", int, 1000, _positive),
        sync_interval=t.get("sync_interval", int, 100, _positive),
        dt=t.get("dt", float, 1e-3, _positive),
        gamma=t.get("gamma", float, 0.1, lambda v: None if 0 < v <= 1 else "must lie in (0, 1]"),
        kernel_width=t.get("kernel_width", float, 1.0, _positive),
        wall_strength=t.get("wall_strength", float, 3000.0, _positive),
        integrator=t.get("integrator", str, "baoab", _one_of(INTEGRATORS)),
    )
    t.finish()

    t = table("grid")
    if "grid" not in data:
        raise DeckError(path, "[grid]", "is required (tables [grid.x] and [grid.y] with min, max, width)")
    axes = {}
    for axis in ("x", "y"):
        if axis == "y" and kind == "spiral" and "y" not in t.data:
            n_test = 2 * task.test_per_class
            # hard accuracy takes the values k / n_test: one bin centred on each
            axes["y"] = AxisConfig(-0.5 / n_test, 1 + 0.5 / n_test, 1.0 / n_test)
            t.used.add("y")
            continue
        a = _Table(path, f"grid.{axis}", t.get(axis, dict, _REQUIRED))
        lo = a.get("min", float, _REQUIRED)
        hi = a.get("max", float, _REQUIRED, lambda v: None if v > lo else f"must be > min = {lo}")
        width = a.get("width", float, _REQUIRED, _positive)
        a.finish()
        n_bins = (hi - lo) / width
        if abs(n_bins - round(n_bins)) > 1e-6 * max(1.0, n_bins):
            raise a.err("width", f"(max - min) / width = {n_bins:.6g} must be a whole number of bins")
        if round(n_bins) > 100_000:
            raise a.err("width", f"gives {round(n_bins)} bins; at most 100000 are allowed")
        axes[axis] = AxisConfig(lo, hi, width)
    t.finish()
    grid = GridConfig(axes["x"], axes["y"])

    t = table("windows")
    windows = WindowsConfig(
        count=t.get("count", int, 4, _positive),
        overlap=t.get("overlap", float, 0.75, lambda v: None if 0 < v < 1 else "must lie strictly between 0 and 1"),
        ranks_per_window=t.get("ranks_per_window", int, 1, _positive),
    )
    t.finish()

    t = table("schedule")
    ln_f_initial = t.get("ln_f_initial", float, 1.0, _positive)
    schedule = ScheduleConfig(
        kind=t.get("kind", str, "halving", _one_of(SCHEDULES)),
        ln_f_initial=ln_f_initial,
        ln_f_final=t.get("ln_f_final", float, 1e-6,
                         lambda v: None if 0 < v < ln_f_initial else f"must lie in (0, ln_f_initial = {ln_f_initial})"),
        flatness=t.get("flatness", float, 0.8, _open_unit),
        check_interval=t.get("check_interval", int, 1000, _positive),
        min_visit_fraction=t.get("min_visit_fraction", float, 0.01,
                                 lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
        ramp_steps=t.get("ramp_steps", int, 0, _nonneg),
        plateau_end=t.get("plateau_end", int, 0, _nonneg),
        decay_time=t.get("decay_time", int, 1, _positive),
    )
    ramp_keys = ("ramp_steps", "plateau_end", "decay_time")
    if schedule.kind != "ramp":
        for key in ramp_keys:
            if key in t.data:
                raise t.err(key, f"applies only to kind = 'ramp' (this deck's schedule is {schedule.kind!r})")
    elif schedule.plateau_end < schedule.ramp_steps:
        raise t.err("plateau_end", f"must be >= ramp_steps = {schedule.ramp_steps} (got {schedule.plateau_end})")
    t.finish()

    t = table("exchange")
    exchange = ExchangeConfig(interval=t.get("interval", int, 100, _positive))
    t.finish()

    t = table("init")
    init = InitConfig(
        max_iterations=t.get("max_iterations", int, 20_000, _positive),
        learning_rate=t.get("learning_rate", float, 0.02, _positive),
        equilibration_steps=t.get("equilibration_steps", int, 1000, _nonneg),
    )
    t.finish()

    t = table("output")
    output = OutputConfig(
        dir=t.get("dir", str, "runs/" + Path(path).stem, lambda v: None if v.strip() else "must not be empty"),
        checkpoint_interval=t.get("checkpoint_interval", int, 10_000, _positive),
        log_interval=t.get("log_interval", float, 10.0, _positive),
    )
    t.finish()

    t = table("baseline")
    baseline = BaselineConfig(
        optimizer=t.get("optimizer", str, "sgd", _one_of(OPTIMIZERS)),
        learning_rate=t.get("learning_rate", float, 0.1, _positive),
        batch_size=t.get("batch_size", int, 10, _nonneg),
        steps=t.get("steps", int, 2000, _positive),
        record_interval=t.get("record_interval", int, 10, _positive),
        runs=t.get("runs", int, 100, _positive),
        seed=t.get("seed", int, 0, _nonneg),
    )
    t.finish()
    n_train = {"spiral": 2 * task.train_per_class, "spiral_regression": task.points // 2}.get(kind)
    if n_train is not None and baseline.batch_size > n_train:
        raise DeckError(path, "[baseline] batch_size",
                        f"must be at most the {n_train} training points (got {baseline.batch_size})")

    # cross-table consistency: all step intervals are counted at synchronisation points
    sync = sampler.sync_interval
    for tname, key, value in (("schedule", "check_interval", schedule.check_interval),
                              ("exchange", "interval", exchange.interval),
                              ("output", "checkpoint_interval", output.checkpoint_interval),
                              ("sampler", "adapt_interval", sampler.adapt_interval if sampler.kind == "wlmc" else 0)):
        if value % sync:
            raise DeckError(path, f"[{tname}] {key}",
                            f"must be a multiple of [sampler] sync_interval = {sync} (got {value})")
    if run.max_steps % sync:
        raise DeckError(path, "[run] max_steps", f"must be a multiple of [sampler] sync_interval = {sync} (got {run.max_steps})")
    n_x = grid.x.bins
    if windows.count > 1:
        from .grid import window_bins  # local: grid depends on nothing here but the numbers
        try:
            window_bins(n_x, windows.count, windows.overlap)
        except ValueError as exc:
            raise DeckError(path, "[windows] count", f"{exc} with [grid.x] giving {n_x} bins") from None

    return Config(path, text, run, task, model, sampler, grid, windows, schedule, exchange, init, output, baseline)
