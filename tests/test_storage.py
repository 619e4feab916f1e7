"""RunStore: files of the previous schema stay readable, unknown schemas are refused by name."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import run_rewl
from rewl.storage import SCHEMA_VERSION, RunStore, StorageError


def _set_schema(path, version: int, drop: tuple[str, ...] = ()) -> None:
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = version
        for name in drop:
            del f[name]


def test_schema_1_files_read_and_unknown_schemas_are_refused(spiral_deck, tmp_path):
    deck = spiral_deck(max_steps=500)
    assert run_rewl(["run", str(deck)]).returncode == 0
    store = RunStore(tmp_path / "run")
    step = store.latest_step()
    # a schema-1 checkpoint has no velocities / accuracy sums: they read as empty
    _set_schema(store._ckpt_path(step, 0), 1, drop=("velocities", "acc_sum"))
    _set_schema(store.run_path, 1)
    ck = store.read_checkpoint(step, 0)
    assert ck.velocities.size == 0 and ck.acc_sum.size == 0 and ck.params.shape == (32, 116)
    assert store.read_run().steps == 500
    _set_schema(store.run_path, SCHEMA_VERSION + 1)
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}"):
        store.read_run()
    # and a v1 run resumes: the budget is extended from the schema-1 checkpoint
    _set_schema(store.run_path, 1)
    longer = tmp_path / "longer.toml"
    longer.write_text(deck.read_text().replace("max_steps = 500", "max_steps = 1000"))
    proc = run_rewl(["run", str(longer), "--resume", "--out", str(tmp_path / "run")])
    assert proc.returncode == 0, proc.stderr
    assert np.isfinite(store.read_run().windows[0].ln_g).all()
