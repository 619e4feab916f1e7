"""Any nn.Module as a task (rewl.ModuleTask): its vmapped x, y and gradients equal a plain loop over
the module for every loss and y kind, and the built-in spiral task on the same network and data;
the box follows the reference's rule or the user's; modules that cannot be sampled are refused by
name; a study script takes rewl's commands; the examples run under mpiexec -n 2."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import rewl
from conftest import HANG, MPIEXEC, ROOT, _toml_value, assert_chunked_equals_whole, env, run_analysis, run_rewl
from rewl.config import load
from rewl.storage import RunStore
from rewl.tasks import TaskError, make_task, validate_task

torch.manual_seed(0)


def _classification(points: int = 30, classes: int = 3, features: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(points, features, generator=gen, dtype=torch.float64), torch.randint(0, classes, (points,), generator=gen)


def _regression(points: int = 30, features: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(points, features, generator=gen, dtype=torch.float64)
    return inputs, inputs.sum(dim=1).sin()


def _mlp(d_in: int = 4, d_out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 5), nn.Tanh(), nn.Linear(5, d_out)).double()


def _abs_error(outputs, targets):
    return (outputs[:, 0] - targets).abs()


def _margin(outputs, targets):
    return outputs.gather(1, targets[:, None])[:, 0] - outputs.logsumexp(dim=1)


def _plain(walker: torch.Tensor, task: rewl.ModuleTask, loss: str, y: str):
    """x and y of one walker by an ordinary forward of a copy of the module, with torch's own losses,
    and the gradients of each (None for the hard accuracy) from the module's own backward."""
    net = _mlp(task.inputs.shape[1], 3 if loss == "cross_entropy" or y == "margin" else 1)
    torch.nn.utils.vector_to_parameters(walker, net.parameters())
    n = task.n_train
    out = net(task.inputs)
    t = task.targets
    per_point = {"cross_entropy": lambda o, t: nn.functional.cross_entropy(o, t, reduction="none"),
                 "mse": lambda o, t: (o[:, 0] - t) ** 2, "abs": _abs_error}[loss]
    x = torch.log(per_point(out[:n], t[:n]).mean())
    if y == "accuracy":
        y_value = (out[n:].argmax(dim=1) == t[n:]).double().mean()
    elif y == "test_loss":
        y_value = torch.log(per_point(out[n:], t[n:]).mean())
    else:
        y_value = _margin(out[n:], t[n:]).mean()

    def grad(value):
        if not value.requires_grad:
            return None
        return torch.cat([g.flatten() for g in torch.autograd.grad(value, list(net.parameters()), retain_graph=True)])
    return x.detach(), y_value.detach(), grad(x), grad(y_value)


CASES = [("cross_entropy", "accuracy"), ("cross_entropy", "test_loss"), ("cross_entropy", "margin"),
         ("mse", "test_loss"), ("abs", "test_loss")]


@pytest.mark.parametrize("loss,y", CASES)
def test_vmapped_cvs_and_gradients_equal_a_plain_loop(loss, y):
    classes = loss == "cross_entropy"
    inputs, targets = _classification() if classes else _regression()
    task = rewl.ModuleTask(_mlp(4, 3 if classes else 1), (inputs[:20], targets[:20]), (inputs[20:], targets[20:]),
                           loss={"abs": _abs_error}.get(loss, loss), y={"margin": _margin}.get(y, y))
    walkers = task.sample_uniform(4, torch.Generator().manual_seed(3)).requires_grad_(True)
    x, y_batched = task.cvs(walkers)
    x_d = task.x_of(walkers)
    grad_x, = torch.autograd.grad(x_d.sum(), walkers)
    y_d = task.y_of(walkers)
    grad_y = None if y_d is None else torch.autograd.grad(y_d.sum(), walkers)[0]
    assert (y_d is None) == (y == "accuracy")          # the hard accuracy has no gradient
    for k in range(4):
        x_plain, y_plain, grad_x_plain, grad_y_plain = _plain(walkers[k].detach().clone(), task, loss, y)
        torch.testing.assert_close(x[k], x_plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_d[k], x_plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y_batched[k], y_plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_x[k], grad_x_plain, rtol=1e-10, atol=1e-12)
        assert (grad_y is None) == (grad_y_plain is None)
        if grad_y is not None:
            torch.testing.assert_close(grad_y[k], grad_y_plain, rtol=1e-10, atol=1e-12)
    # the SGD baselines' per-point losses, and the points evaluated in chunks
    losses = task.train_point_losses(walkers.detach())
    assert losses.shape == (4, 20)
    torch.testing.assert_close(torch.log(losses.mean(dim=1)), x.detach())
    assert_chunked_equals_whole(task, chunk=7)


def test_the_spiral_network_as_a_module_equals_the_builtin_task(tmp_path):
    cfg = load(_spiral_deck(tmp_path, "builtin"))
    builtin = make_task(cfg, torch.device("cpu"))            # float64, as the deck says
    task = _spiral_module_task(torch.float64)
    assert task.n_params == builtin.n_params == 116
    torch.testing.assert_close(task.group_half_width, builtin.group_half_width)      # +-2/sqrt(fan_out)
    walkers = builtin.sample_uniform(8, torch.Generator().manual_seed(0)).requires_grad_(True)
    x_a, y_a = builtin.cvs(walkers)
    x_b, y_b = task.cvs(walkers)
    torch.testing.assert_close(x_b, x_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_b, y_a)
    g_a, = torch.autograd.grad(builtin.x_of(walkers).sum(), walkers)
    g_b, = torch.autograd.grad(task.x_of(walkers).sum(), walkers)
    torch.testing.assert_close(g_b, g_a, rtol=1e-10, atol=1e-12)
    validate_task(task, torch.device("cpu"), md=False)


def test_box_by_the_reference_rule_or_given():
    inputs = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.GroupNorm(1, 2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    task = rewl.ModuleTask(model, (inputs[:3], labels[:3]), (inputs[3:], labels[3:]))
    assert task.group_names == ["0", "1", "4"]
    torch.testing.assert_close(task.group_half_width, torch.tensor([2 / 18 ** 0.5, 2.0, 2 / 2 ** 0.5]))
    assert task.n_params == 20 + 4 + 38
    for box, half in ((0.5, [0.5] * 3), ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]), ({"0": 1, "1": 2, "4": 3}, [1, 2, 3])):
        given = rewl.ModuleTask(model, (inputs[:3], labels[:3]), (inputs[3:], labels[3:]), box=box)
        torch.testing.assert_close(given.group_half_width, torch.tensor(half, dtype=torch.float32))
        assert torch.equal(given.hi, given.group_half_width[given.group])
    for box, message in (([1.0], "gives 1 half-widths for the 3 groups"), ({"0": 1, "2": 1}, "unknown ['2']"),
                         (-1.0, "positive number")):
        with pytest.raises(TaskError, match=message.replace("[", r"\[").replace("]", r"\]")):
            rewl.ModuleTask(model, (inputs[:3], labels[:3]), (inputs[3:], labels[3:]), box=box)


class _Counter(nn.Module):
    """Changes a buffer at every forward: state a sampled network must not keep."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, inputs):
        self.calls.add_(1)
        return self.linear(inputs)


class _Branchy(nn.Module):
    """A data-dependent Python branch: cannot run under vmap."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, inputs):
        out = self.linear(inputs)
        return out if out.sum().item() > 0 else -out


@pytest.mark.parametrize("model,message", [
    (nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.2), nn.Linear(5, 3)), r"layer '1' \(Dropout\) is in training mode.*model.eval\(\)"),
    (nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3)), r"layer '1' \(BatchNorm1d\) is in training mode.*GroupNorm"),
    (nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.Linear(5, 3)).eval(),
     r"layer '1' \(BatchNorm1d\) keeps no running statistics"),
    (_Counter(), r"cannot be evaluated|changes buffer 'calls'"),
    (_Branchy(), r"cannot be evaluated for many parameter sets at once.*\.item\(\)"),
    (nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)), r"class index 2 outside the module's 2 logits"),
    (nn.ReLU(), r"has no parameters"),
])
def test_modules_that_cannot_be_sampled_are_refused_by_name(model, message):
    inputs, targets = _classification()
    with pytest.raises(TaskError, match=message):
        rewl.ModuleTask(model.double(), (inputs[:20], targets[:20]), (inputs[20:], targets[20:]))


def test_eval_mode_batch_norm_and_datasets_are_accepted():
    inputs, targets = _classification()
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.3), nn.Linear(5, 3)).double().eval()
    train = torch.utils.data.TensorDataset(inputs[:20], targets[:20])
    task = rewl.ModuleTask(model, train, (inputs[20:].numpy(), targets[20:].numpy()))
    assert (task.n_train, task.n_test) == (20, 10)
    walkers = task.sample_uniform(3, torch.Generator().manual_seed(0))
    x, _ = task.cvs(walkers)
    assert torch.isfinite(x).all()
    with pytest.raises(TaskError, match="needs as many targets as inputs"):
        rewl.ModuleTask(model, (inputs, targets[:5]), (inputs, targets))
    with pytest.raises(TaskError, match="class indices"):
        rewl.ModuleTask(model, (inputs, targets.double()), (inputs, targets.double()))


def test_initial_weights_follow_the_modules_own_initialisation():
    inputs, targets = _classification()
    task = rewl.ModuleTask(_mlp(), (inputs[:20], targets[:20]), (inputs[20:], targets[20:]))
    a, b = task.initial_weights(5, seed=3), task.initial_weights(5, seed=3)
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    first = a[:, :20]                                   # Linear(4, 5).weight: uniform +-1/sqrt(4)
    assert first.abs().max() <= 0.5 and first.abs().max() > 0.3


def _spiral_module_task(dtype: torch.dtype = torch.float32) -> rewl.ModuleTask:
    from rewl.tasks.spiral import spiral_data
    rng = np.random.default_rng(0)                      # the spiral task's data_seed 0
    train = spiral_data(20, 0.0, rng)
    test = spiral_data(20, 0.0, rng)
    model = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 2))
    return rewl.ModuleTask(model, train, test, name="spiral", dtype=dtype)   # the points cast to dtype, as the built-in


def _spiral_deck(tmp_path, name: str, custom: bool = False, **overrides) -> str:
    task = {"kind": "custom"} if custom else {"kind": "spiral", "train_per_class": 20, "test_per_class": 20,
                                              "noise": 0.0}
    tables = {"run": {"seed": 3, "max_steps": 800}, "task": task, "sampler": {"walkers_per_rank": 32},
              "grid.x": {"min": -1.5, "max": 1.0, "width": 0.05}, "grid.y": {"min": -0.025, "max": 1.025, "width": 0.05},
              "windows": {"count": 2, "overlap": 0.5}, "schedule": {"ln_f_initial": 1 / 32},
              "output": {"dir": str(tmp_path / name), "checkpoint_interval": 400}, **overrides}
    if not custom:
        tables["model"] = {"hidden": [6, 6, 6], "dtype": "float64"}
    path = tmp_path / f"{name}.toml"
    path.write_text("".join(f"[{table}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items())
                            for table, keys in tables.items()))
    return str(path)


def test_a_script_takes_rewls_commands(tmp_path, capsys):
    deck = _spiral_deck(tmp_path, "script", custom=True, baseline={"runs": 2, "steps": 50, "optimizer": "adam",
                                                                    "learning_rate": 0.01})
    task = _spiral_module_task()
    assert rewl.run(deck, task=task, argv=["check"]) == 0
    assert "spiral: Sequential (116 parameters)" in capsys.readouterr().out
    assert rewl.run(deck, task=task, argv=["scout", "--walkers", "64", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "64 walkers uniform in the box" in out and "2 runs of adam" in out and "width = 0.025" in out
    assert rewl.run(deck, task=task, argv=["bench", "--seconds", "0.2", "--walkers", "16"]) == 0
    out = capsys.readouterr().out
    assert "batched wlmc" in out and "ratio batched / plain" in out
    assert rewl.run(deck, task=task, argv=["sgd", "--out", str(tmp_path / "sgd")]) == 0
    assert (tmp_path / "sgd" / "baseline.h5").exists()
    with pytest.raises(SystemExit):
        rewl.run(deck, task=task, argv=["--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


SPIRAL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import rewl
from test_module_task import _spiral_module_task
import torch
raise SystemExit(rewl.run(sys.argv[1], task=_spiral_module_task(torch.float64), argv=[]))
"""


@pytest.mark.mpi
def test_the_module_task_samples_the_builtins_landscape(tmp_path):
    """The same seed, deck and network through the vmapped task and the built-in one, in float64: the
    same landscape. Their CVs differ by rounding alone (sums in another order, about 1e-16), far
    below anything that moves a walker across a bin edge or an acceptance threshold, so the runs
    visit the same bins and agree on ln g (in float32, differences of 1e-7 part the runs within a
    few hundred steps)."""
    script = tmp_path / "spiral_study.py"
    script.write_text(SPIRAL_SCRIPT.format(tests=str(ROOT / "tests")))
    mine = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), _spiral_deck(tmp_path, "mine", custom=True)],
                          capture_output=True, text=True, env=env(), cwd=ROOT, timeout=HANG)
    assert mine.returncode == 0, mine.stderr
    assert run_rewl(["run", _spiral_deck(tmp_path, "builtin")], ranks=2).returncode == 0
    a, b = RunStore(tmp_path / "mine").read_run(), RunStore(tmp_path / "builtin").read_run()
    assert a.steps == b.steps == 800 and a.round_trips == b.round_trips
    for wa, wb in zip(a.windows, b.windows):
        np.testing.assert_array_equal(wa.visits, wb.visits)
        np.testing.assert_allclose(wa.ln_g, wb.ln_g, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(wa.y_hist, wb.y_hist)


@pytest.mark.mpi
@pytest.mark.parametrize("example", ["mlp_classification", "cnn_classification", "regression"])
def test_the_examples_run_under_mpiexec(tmp_path, example):
    # the example as shipped, on a budget of at most 1,000 steps (the suite's time) given as a user would
    steps = min(1000, load(ROOT / "examples" / f"{example}.toml").run.max_steps)
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(ROOT / "examples" / f"{example}.py"),
                           "--out", str(tmp_path / example), "--set", f"run.max_steps={steps}"], capture_output=True, text=True,
                          env=env(), cwd=tmp_path, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    rec = RunStore(tmp_path / example).read_run()
    assert rec.status == "budget-exhausted" and rec.steps == steps
    assert rec.y_label == ("ln L_test" if example == "regression" else "A_test") and rec.n_windows == 2
    # a run of seconds is far from converged: its windows are drawn, joined or not
    figure = run_analysis(["windows", str(tmp_path / example), "-o", str(tmp_path / "windows")])
    assert figure.returncode == 0, figure.stderr
    assert (tmp_path / "windows.png").stat().st_size > 10_000
