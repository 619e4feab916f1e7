"""RunStore: one codec for every record (round trips), files of schemas 1 and 2 still read and
resume as the old rewl did (WLMC bit for bit), unknown schemas are refused by name."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from test_analysis import synthetic_run

from conftest import DATA, assert_same_records, rewl_here, run_rewl
from rewl.records import Checkpoint, EstimateRecord, History, WalkersRecord
from rewl.storage import SCHEMA_VERSION, BaselineRecord, RunStore, StorageError


def _estimate(rng, accuracy: bool) -> EstimateRecord:
    a = lambda: rng.random((5, 3))  # noqa: E731
    return EstimateRecord(ln_g=a(), hist=a(), visits=a(), ln_f=0.25, stage=3, one_over_t=True, converged=False,
                          flatness=0.5, accuracy_sum=a() if accuracy else None)


@pytest.mark.parametrize("md", [False, True])
def test_checkpoint_round_trip(tmp_path, md):
    rng = np.random.default_rng(0)
    walkers = WalkersRecord(params=rng.random((4, 7)).astype(np.float32), x=rng.random(4), y=rng.random(4),
                            ix=np.arange(4), iy=np.arange(4), velocities=rng.random((4, 7)) if md else None)
    sampler = {"steps": np.array([12.0]), "inside": np.array([9.0])} if md else \
        {"sigma": rng.random(4), "attempted_since_adapt": rng.random(4), "accepted_since_adapt": rng.random(4),
         "attempted_until_adapt": rng.random(4), "accepted_until_adapt": rng.random(4)}
    ck = Checkpoint(step=500, exchange_round=10, walkers=walkers, estimate=_estimate(rng, md), sampler=sampler,
                    swap_attempted=np.ones(2), swap_accepted=np.zeros(2),
                    torch_rng=np.arange(16, dtype=np.uint8), numpy_rng='{"state": 1}', init_iterations=3,
                    init_seconds=1.5, elapsed_seconds=2.5,
                    history=History(step=np.array([100, 200]), ln_f=rng.random((2, 3)), flatness=rng.random((2, 3))))
    store = RunStore(tmp_path)
    store.prepare_new()
    store.write_checkpoint(1, ck)
    back = store.read_checkpoint(500, 1)
    assert_same_records(ck, back)
    assert (back.walkers.velocities is None) is not md and (back.estimate.accuracy_sum is None) is not md
    assert back.elapsed_seconds == 2.5 and back.walkers.params.dtype == np.float32


def test_run_and_baseline_round_trip(tmp_path):
    rec = synthetic_run(np.random.default_rng(1).random((40, 6)), [(0, 25), (15, 40)], [0.0, 1.0], 0.1)
    rec.windows[1].accuracy_sum = rec.windows[1].visits * 0.5
    store = RunStore(tmp_path)
    store.prepare_new()
    store.write_run(rec)
    back = store.read_run()
    assert_same_records(rec, back)
    assert back.windows[0].accuracy_sum is None and back.n_windows == 2
    with h5py.File(store.run_path) as f:          # the run-file layout of schemas 1 and 2
        assert {"deck", "grid", "windows", "acceptance", "history"} <= set(f)
        assert f["windows/001/ln_g"].compression == "gzip" and "x_bins" in f["windows/001"].attrs
    base = BaselineRecord(deck_text="[task]", deck_path="d.toml", task="spiral", optimizer="adam", learning_rate=0.1,
                          batch_size=10, x_label="x", y_label="y", step=np.arange(3), x=np.ones((2, 3)),
                          y=np.zeros((2, 3)), accuracy=np.full((2, 3), np.nan), elapsed_seconds=1.0)
    assert_same_records(base, RunStore.read_baseline(store.write_baseline(base)))


def _copy_schema2(kind: str, tmp_path):
    """The schema-2 run of tests/data (500 steps, made by rewl 0.1.0 before schema 3) and a deck
    that extends its budget to 1000 steps."""
    src = DATA / "schema2" / kind
    shutil.copytree(src / "run", tmp_path / "run")
    store = RunStore(tmp_path / "run")
    deck = tmp_path / "longer.toml"
    deck.write_text(store.read_run().deck_text.replace("max_steps = 500", "max_steps = 1000"))
    return store, deck, RunStore(src / "expected")


def _assert_same_bits(got, want, skip: tuple[str, ...] = ()) -> None:
    for name in ("move_attempted", "move_accepted", "swap_attempted"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    for name in ("step", "ln_f", "flatness"):
        np.testing.assert_array_equal(getattr(got.history, name), getattr(want.history, name))
    for a, b in zip(got.windows, want.windows):
        for name in ("ln_g", "hist", "visits", "accuracy_sum", "ln_f", "stage", "one_over_t", "converged", "flatness"):
            if name in skip:
                continue
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _assert_same_wlmd_continuation(got, want, before) -> None:
    """WLMD's 500 leapfrog steps are chaotic in the last bit of float32 matmuls, whose rounding
    depends on the CPU's MKL code path: the same resume counts 6,920, 6,929 or 6,934 inside-window
    walker-steps against the 6,930 of the machine that wrote the file. So the continuation is held
    to the schedule the old rewl followed (the same steps, ln f and stages as `want`) and to its
    own bookkeeping, exactly: each inside walker-step is one visit and one histogram count, and
    adds ln f / 8 (the rule of schema 2: ln f per step of all 8 walkers), so the ln g of the run
    sums to ln f x visits / 8; and the walker-steps since `before` (the run at step 500) were 500
    steps of 8 walkers, some of them inside."""
    np.testing.assert_array_equal(got.move_attempted, want.move_attempted)
    for name in ("step", "ln_f"):
        np.testing.assert_array_equal(getattr(got.history, name), getattr(want.history, name))
    for k, (a, b, old) in enumerate(zip(got.windows, want.windows, before.windows)):
        for name in ("ln_f", "stage", "one_over_t", "converged"):
            assert getattr(a, name) == getattr(b, name), name
        assert a.stage == old.stage == 0 and a.ln_f == old.ln_f         # one stage, one ln f throughout
        inside = got.move_accepted[k].sum()
        assert a.visits.sum() == a.hist.sum() == inside
        assert 0 < inside - before.move_accepted[k].sum() <= 500 * 8
        assert a.ln_g.sum() == pytest.approx(a.ln_f * inside / 8, rel=1e-12)


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["wlmc", "wlmd"])
def test_schema_2_runs_read_and_resume_to_the_same_bits(tmp_path, kind):
    store, deck, expected = _copy_schema2(kind, tmp_path)
    before = store.read_run()
    ck = store.read_checkpoint(store.latest_step(), 0)
    assert ck.step == 500 and ck.walkers.params.shape == (8, 116)
    assert (ck.walkers.velocities is not None) == (kind == "wlmd")
    assert store.read_run().steps == 500
    proc = run_rewl(["run", str(deck), "--resume", "--out", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr
    # `expected` is the same resume done by the rewl that wrote schema 2
    # (every quantity it wrote; the diagnostics of schema 3 are new)
    got, want = store.read_run(), expected.read_run()
    assert got.steps == want.steps == 1000
    if kind == "wlmc":
        _assert_same_bits(got, want)
    else:
        _assert_same_wlmd_continuation(got, want, before)
    for a in got.windows:
        assert a.offset_moments() is None        # it continues with whole bins, as it began
    info = rewl_here(["info", str(tmp_path / "run")])
    assert info.returncode == 0, info.stderr
    assert ("bins partly reachable (wlmd): not tracked" in info.stdout) == (kind == "wlmd"), info.stdout
    assert not any(w.per_visit for w in got.windows) and "ln f: per step of all 8 walkers" in info.stdout


def _set_schema(path, version: int, drop: tuple[str, ...] = ()) -> None:
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = version
        for name in drop:
            del f[name]


@pytest.mark.mpi
def test_schema_1_files_read_and_resume_and_unknown_schemas_are_refused(tmp_path):
    store, deck, expected = _copy_schema2("wlmc", tmp_path)
    step = store.latest_step()
    # a schema-1 checkpoint has no velocities / accuracy sums
    _set_schema(store._ckpt_path(step, 0), 1, drop=("velocities", "acc_sum"))
    _set_schema(store.run_path, 1)
    ck = store.read_checkpoint(step, 0)
    assert ck.walkers.velocities is None and ck.estimate.accuracy_sum is None and ck.walkers.params.shape == (8, 116)
    assert store.read_run().steps == 500
    _set_schema(store.run_path, SCHEMA_VERSION + 1)
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        store.read_run()
    _set_schema(store.run_path, 1)
    proc = run_rewl(["run", str(deck), "--resume", "--out", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr
    # the same continuation as from schema 2, bit for bit: schema 1 only lacked the accuracy sums
    _assert_same_bits(store.read_run(), expected.read_run(), skip=("accuracy_sum",))
    assert store.read_run().windows[0].accuracy_sum is None


def test_the_directory_lock_admits_one_writer(tmp_path):
    """The writer lock is exclusive between two stores of one directory (flock: even within one
    process), names its holder, and is free again once released."""
    import os
    first, second = RunStore(tmp_path / "run"), RunStore(tmp_path / "run")
    assert first.lock() is None
    refusal = second.lock()
    assert refusal and f"another rewl run (process {os.getpid()} on " in refusal and str(tmp_path / "run") in refusal
    first.unlock()
    assert second.lock() is None
    second.unlock()
    assert first.problem_for_new_run(force=False) is None      # the lock file alone is no run
