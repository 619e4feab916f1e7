"""Hand-tuned walls against wall_strength = "auto" on shipped WLMD decks: the same deck run twice
for the same steps, once with its own wall_strength and once tuned, and per window the fraction of
walker-steps inside (in=), kT over the progress lines, and the final c. Prints a markdown table
(docs/convergence.md, "Walls without hand tuning").
    python studies/walls_compare.py STEPS DECK[:SET[;SET...]] ...      (from the repository root)
e.g. python studies/walls_compare.py 1500 inputs/spiral_md.toml 'inputs/house_prices_short.toml:task.data="x.csv"'
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rewl.config import load
from rewl.storage import RunStore

BIN = Path(sys.executable).parent


def one_run(deck: str, sets: list[str], walls: str, steps: int, out: Path) -> dict:
    """Run `deck` for `steps` steps with wall_strength `walls`; its in= per window, kT range, c."""
    cfg = load(deck, tuple(sets))
    args = [str(BIN / "mpiexec"), "-n", str(cfg.world_size), str(BIN / "rewl"), "run", deck, "--force",
            "--set", f"run.max_steps={steps}", "--set", f'output.dir="{out}"', "--set", f"sampler.wall_strength={walls}",
            "--set", "output.log_interval=0.001"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{deck} ({walls}): exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    temps = [float(t) for t in re.findall(r" T=([\d.]+|nan|inf)", proc.stdout)]
    rec = RunStore(out).read_run()
    inside = rec.move_accepted[:, 0] / np.maximum(1.0, rec.move_attempted[:, 0])
    return {"in": inside, "t": (min(temps), max(temps)), "c": [w.wall_strength for w in rec.windows],
            "seconds": rec.elapsed_seconds}


def main(argv: list[str]) -> int:
    steps, specs = int(argv[0]), argv[1:]
    print("| deck | walls | in= per window | kT (all progress lines) | c per window |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(specs):
            deck, _, extra = spec.partition(":")
            sets = [s for s in extra.split(";") if s]
            hand = load(deck, tuple(sets)).sampler.wall_strength
            for walls in ([] if hand == "auto" else [repr(float(hand))]) + ['"auto"']:
                r = one_run(deck, sets, walls, steps, Path(tmp) / f"{k}_{len(walls)}")
                print(f"| `{deck}` ({steps} steps) | {'auto' if 'auto' in walls else 'c = ' + walls} | "
                      f"{', '.join(f'{v:.2f}' for v in r['in'])} | {r['t'][0]:.2f} to {r['t'][1]:.2f} | "
                      f"{', '.join(f'{c:.3g}' for c in r['c'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
