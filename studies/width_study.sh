#!/usr/bin/env bash
# The width study of docs/results.md on 2 cores in about 1 h 30 min: spiral regression at W = 30,
# 100 and 300 (inputs/spiral_regression_w{30,100,300}_short.toml), each a WLMD run stopped at a
# deadline (resumable: `mpiexec -n 2 rewl run DECK --resume`), its Adam baselines and `rewl info`;
# then the comparison over the widths (studies/width_analysis.sh).
#   bash studies/width_study.sh [SECONDS_W30 [SECONDS_W100 [SECONDS_W300]]]   (from the repository root)
set -euo pipefail
REWL=.venv/bin/rewl
SECONDS_FOR=([30]=${1:-1000} [100]=${2:-1500} [300]=${3:-2100})
for W in 30 100 300; do
    DECK=inputs/spiral_regression_w${W}_short.toml
    OUT=runs/spiral_regression_w${W}_short
    .venv/bin/mpiexec -n 2 $REWL run $DECK --deadline $(( $(date +%s) + SECONDS_FOR[W] )) --force
    $REWL info $OUT > docs/width_w${W}_info.txt
    $REWL sgd $DECK --force
done
bash studies/width_analysis.sh
