"""SGD/Adam baselines batched over runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import ROOT, deck_text, run_rewl
from rewl.baseline import train_baselines
from rewl.config import parse
from rewl.storage import RunStore
from rewl.tasks import make_task


def deck(**baseline) -> str:
    """The spiral net in float64 (100 test points), with [baseline] keys."""
    return deck_text("spiral", task={"test_per_class": 50}, model={"dtype": "float64"}, baseline=baseline)


def _assert_matches_plain_loop(cfg, rec, minibatches: list[torch.Tensor] | None = None) -> None:
    """Each run of `rec` trained again alone on the task's own nn.Module, from its initial weights
    with the deck's optimiser, ends at the train loss and test accuracy the batched trainer
    recorded. minibatches: per step, (runs, batch) point indices; None: all points each step."""
    b = cfg.baseline
    task = make_task(cfg, torch.device("cpu"))
    init = task.initial_weights(b.runs, b.seed)
    inputs, labels = task.inputs_t.t()[: task.n_train], task.labels_train
    module = task.module
    steps = [None] * b.steps if minibatches is None else minibatches
    for r in range(b.runs):
        torch.nn.utils.vector_to_parameters(init[r].clone(), module.parameters())
        opt = (torch.optim.SGD if b.optimizer == "sgd" else torch.optim.Adam)(module.parameters(), lr=b.learning_rate)
        for chosen in steps:
            points = slice(None) if chosen is None else chosen[r]
            loss = torch.nn.functional.cross_entropy(module(inputs[points]), labels[points])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = module(task.inputs_t.t())
            x = math.log(float(torch.nn.functional.cross_entropy(out[: task.n_train], labels)))
            y = float((out[task.n_train:].argmax(dim=1) == task.labels_test).float().mean())
        assert rec.x[r, -1] == pytest.approx(x, abs=1e-9)
        assert rec.y[r, -1] == pytest.approx(y)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_full_batch_training_equals_plain_loop(optimizer):
    cfg = parse(deck(optimizer=optimizer, learning_rate=0.05, batch_size=0, steps=30, record_interval=10, runs=3))
    rec = train_baselines(cfg)
    assert rec.x.shape == (3, 4) and rec.step.tolist() == [0, 10, 20, 30]
    _assert_matches_plain_loop(cfg, rec)


def test_minibatch_runs_are_independent_and_equal_a_plain_loop_per_run():
    """Minibatch Adam, batched over 4 runs, against each run trained alone: the same minibatches,
    drawn as the trainer draws them (one random order of the points per run and step, its first
    batch_size points)."""
    runs, steps, batch = 4, 60, 10
    cfg = parse(deck(optimizer="adam", learning_rate=0.05, batch_size=batch, steps=steps, record_interval=20, runs=runs))
    rec = train_baselines(cfg)
    assert len(np.unique(rec.x[:, 0])) == runs                 # different initial weights
    n_train = make_task(cfg, torch.device("cpu")).n_train
    gen = torch.Generator().manual_seed(cfg.baseline.seed + 1)
    _assert_matches_plain_loop(cfg, rec, [torch.rand(runs, n_train, generator=gen).argsort(dim=1)[:, :batch]
                                          for _ in range(steps)])


@pytest.mark.mpi
def test_sgd_command_writes_and_protects_baseline(spiral_deck, tmp_path):
    deck = spiral_deck(baseline={"steps": 20, "record_interval": 5, "runs": 4})
    proc = run_rewl(["sgd", str(deck)])
    assert proc.returncode == 0, proc.stderr
    rec = RunStore.read_baseline(tmp_path / "run" / "baseline.h5")
    assert rec.runs == 4 and rec.y_label == "A_test"
    np.testing.assert_array_equal(rec.accuracy, rec.y)        # spiral: y is the hard test accuracy
    proc = run_rewl(["sgd", str(deck)])
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert run_rewl(["sgd", str(deck), "--force", "--runs", "2"]).returncode == 0
    assert RunStore.read_baseline(tmp_path / "run" / "baseline.h5").runs == 2


@pytest.mark.mpi
def test_sgd_on_a_task_without_network_is_refused():
    proc = run_rewl(["sgd", str(ROOT / "inputs" / "box_quadratic.toml"), "--out", "/tmp/rewl-never-written"])
    assert proc.returncode == 2 and "no network" in proc.stderr


def test_bad_baseline_values(tmp_path):
    from rewl.config import DeckError
    for values, key in (({"optimizer": "rmsprop"}, "[baseline] optimizer"), ({"batch_size": 100}, "[baseline] batch_size"),
                        ({"learning_rate": -1.0}, "[baseline] learning_rate")):
        with pytest.raises(DeckError, match=key.replace("[", r"\[").replace("]", r"\]")):
            parse(deck(**values))
