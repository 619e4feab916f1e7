"""`rewl run` with a failure injected on one rank, and another rank held back in its set-up:

    mpiexec -n N python inject.py KIND FAIL_RANK DELAY_RANK DECK [rewl run arguments...]

KIND is where FAIL_RANK fails: set-up (``deck`` unreadable, ``layout`` refused, ``data`` file
missing, ``task`` contract broken, ``custom``: a custom task given to rewl.run that raises in its
constructor), or later (``step``: an exception in exchange round 3 (the fourth), ``checkpoint``: its
checkpoint file cannot be written after step 0, ``runfile``: the run file cannot be written
after step 0). DELAY_RANK (-1: none) sleeps 2 s before building its task, so the others wait for
it at the set-up agreement."""
import errno
import sys
import time

import torch

import rewl
import rewl.cli
import rewl.driver
from rewl.comm import LayoutError, env_rank
from rewl.config import DeckError
from rewl.data import DataError
from rewl.storage import RunStore
from rewl.tasks import TaskError, make_task

kind, fail_rank, delay_rank, deck, *rest = sys.argv[1:]
rank, fail_rank, delay_rank = env_rank(), int(fail_rank), int(delay_rank)
failing = rank == fail_rank


def build_task(cfg, device, custom=None):
    if rank == delay_rank:
        time.sleep(2.0)
    if failing and kind == "task":
        raise TaskError(f"injected: the task's cvs returned shape (3,) on rank {rank}")
    if failing and kind == "data":
        raise DataError(f"injected: /nowhere/train.npz: no such file on rank {rank}'s node")
    return make_task(cfg, device, custom)


def pick_device(name):
    if failing and kind == "layout":
        raise LayoutError(f"injected: no GPU visible to rank {rank}")
    return real_pick_device(name)


real_load, real_pick_device = rewl.cli.load, rewl.driver.pick_device
real_exchange, real_write_checkpoint, real_write_run = rewl.driver.exchange_round, RunStore.write_checkpoint, RunStore.write_run


def load(path, overrides=()):
    if failing and kind == "deck":
        raise DeckError(path, "file", f"injected: cannot be read on rank {rank}")
    return real_load(path, overrides)


def exchange_round(comm, round_index, *args, **kwargs):
    if failing and kind == "step" and round_index == 3:
        raise RuntimeError(f"injected failure on rank {comm.rank}")
    return real_exchange(comm, round_index, *args, **kwargs)


def write_checkpoint(store, rank_, ck):
    if failing and kind == "checkpoint" and ck.step > 0:
        path = store._ckpt_path(ck.step, rank_)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")                                     # what a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_write_checkpoint(store, rank_, ck)


def write_run(store, rec):
    if failing and kind == "runfile" and rec.steps > 0:
        raise OSError(errno.EIO, "Input/output error")
    return real_write_run(store, rec)


class FailingBox(rewl.Task):
    """A custom task (x, y: ln of the sum of squares of two coordinates each) that cannot start on
    the failing rank."""

    x_label, y_label = "ln E1", "ln E2"

    def __init__(self, device):
        if failing:
            raise TaskError(f"injected: this custom task cannot start on rank {rank}")
        self.set_box("failing_box", -torch.ones(4, dtype=torch.float64, device=device),
                     torch.ones(4, dtype=torch.float64, device=device))

    def cvs(self, walkers):
        return self.x_of(walkers), torch.log((walkers[:, 2:] ** 2).sum(dim=1))

    def x_of(self, walkers):
        return torch.log((walkers[:, :2] ** 2).sum(dim=1))


rewl.cli.load, rewl.driver.make_task, rewl.driver.pick_device = load, build_task, pick_device
rewl.driver.exchange_round, RunStore.write_checkpoint, RunStore.write_run = exchange_round, write_checkpoint, write_run
if kind == "custom":
    sys.exit(rewl.run(deck, task=FailingBox, argv=rest))
sys.exit(rewl.cli.main(["run", deck, *rest]))
