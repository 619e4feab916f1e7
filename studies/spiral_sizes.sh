#!/usr/bin/env bash
# The reference's 8 spiral experiments as we define them (docs/results.md, "Spiral: four sizes, two
# SGD lengths"): the deck of the spiral study with 3 hidden layers of width 6, 8, 10, 12 (116, 186,
# 272, 374 parameters), ln L_train down to -3.5, each landscape compared with 100 SGD runs of 500
# and of 1000 steps. About 20 minutes on 2 cores.
#   bash studies/spiral_sizes.sh            (from the repository root, after `make demo` or `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REWL=.venv/bin/rewl
OUT=runs/spiral_sizes
WIDTHS="6 8 10 12"
STEPS="500 1000"
# the windows do not yet agree within the default join threshold (docs/convergence.md: the schedule
# stays at ln f = 1 on these landscapes); the joins are accepted explicitly and reported
JOIN="--max-residual ${REWL_MAX_RESIDUAL:-5}"
for w in $WIDTHS; do
    net=(--set "model.hidden=[$w,$w,$w]")
    .venv/bin/mpiexec -n 4 $REWL run inputs/spiral_study.toml "${net[@]}" --set grid.x.min=-3.5 \
        --set run.max_steps=100000 --set sampler.walkers_per_rank=256 --set "output.dir=\"$OUT/w$w\"" --force
    for s in $STEPS; do
        $REWL sgd inputs/spiral_study.toml "${net[@]}" --set baseline.steps=$s --out $OUT/w$w/sgd_$s --force
    done
    $REWL analyse landscape $OUT/w$w --sgd $OUT/w$w/sgd_1000/baseline.h5 -o docs/figures/spiral_sizes_w$w \
        --label "spiral, width $w" $JOIN
done
$PY studies/summarise_sizes.py $OUT $WIDTHS --steps $STEPS $JOIN > docs/spiral_sizes_summary.md
cat docs/spiral_sizes_summary.md
