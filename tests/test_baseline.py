"""SGD/Adam baselines batched over runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import ROOT, run_rewl
from rewl.baseline import train_baselines
from rewl.config import parse
from rewl.storage import RunStore
from rewl.tasks import make_task

DECK = '[task]\nkind = "spiral"\n[model]\ndtype = "float64"\n[grid.x]\nmin = -2.0\nmax = 2.0\nwidth = 0.1\n[windows]\ncount = 1\n'


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_full_batch_training_equals_plain_loop(optimizer):
    cfg = parse(DECK + f'[baseline]\noptimizer = "{optimizer}"\nlearning_rate = 0.05\nbatch_size = 0\n'
                       'steps = 30\nrecord_interval = 10\nruns = 3\n')
    rec = train_baselines(cfg)
    assert rec.x.shape == (3, 4) and rec.step.tolist() == [0, 10, 20, 30]
    task = make_task(cfg, torch.device("cpu"))
    init = task.initial_weights(3, cfg.baseline.seed)
    module = task.module
    inputs, labels = task.inputs_t.t()[: task.n_train], task.labels_train
    for r in range(3):
        torch.nn.utils.vector_to_parameters(init[r].clone(), module.parameters())
        opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(module.parameters(), lr=0.05)
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(module(inputs), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = module(task.inputs_t.t())
            x = math.log(float(torch.nn.functional.cross_entropy(out[: task.n_train], labels)))
            y = float((out[task.n_train:].argmax(dim=1) == task.labels_test).float().mean())
        assert rec.x[r, -1] == pytest.approx(x, abs=1e-9)
        assert rec.y[r, -1] == pytest.approx(y)


def test_minibatch_runs_are_independent_and_learn():
    cfg = parse(DECK + "[baseline]\nbatch_size = 10\nsteps = 600\nrecord_interval = 100\nruns = 16\n")
    rec = train_baselines(cfg)
    assert len(np.unique(rec.x[:, 0])) == 16                  # different initial weights
    assert rec.x[:, -1].mean() < rec.x[:, 0].mean() - 0.3      # training lowers the loss
    assert rec.y[:, -1].mean() > 0.55


def test_sgd_command_writes_and_protects_baseline(spiral_deck, tmp_path):
    deck = spiral_deck()
    deck.write_text(deck.read_text() + "\n[baseline]\nsteps = 20\nrecord_interval = 5\nruns = 4\n")
    proc = run_rewl(["sgd", str(deck)])
    assert proc.returncode == 0, proc.stderr
    rec = RunStore.read_baseline(tmp_path / "run" / "baseline.h5")
    assert rec.runs == 4 and rec.y_label == "A_test"
    np.testing.assert_array_equal(rec.accuracy, rec.y)        # spiral: y is the hard test accuracy
    proc = run_rewl(["sgd", str(deck)])
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert run_rewl(["sgd", str(deck), "--force", "--runs", "2"]).returncode == 0
    assert RunStore.read_baseline(tmp_path / "run" / "baseline.h5").runs == 2


def test_sgd_on_a_task_without_network_is_refused():
    proc = run_rewl(["sgd", str(ROOT / "inputs" / "box_quadratic.toml"), "--out", "/tmp/rewl-never-written"])
    assert proc.returncode == 2 and "no network" in proc.stderr


def test_bad_baseline_values(tmp_path):
    from rewl.config import DeckError
    for text, key in (("optimizer = 'rmsprop'", "[baseline] optimizer"), ("batch_size = 100", "[baseline] batch_size"),
                      ("learning_rate = -1.0", "[baseline] learning_rate")):
        with pytest.raises(DeckError, match=key.replace("[", r"\[").replace("]", r"\]")):
            parse(DECK + "[baseline]\n" + text + "\n")
