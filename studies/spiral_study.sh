#!/usr/bin/env bash
# Reproduces docs/results.md: the spiral study (116-parameter net) by WLMD, the demo's deck
# (inputs/quick.toml) with five independent sampler seeds, each run until it converged; 100 SGD
# baselines, the landscape figure, the diagnostics of seed 1 and the report. About 25 minutes on 2 cores.
#   bash studies/spiral_study.sh            (from the repository root, after `make demo` or `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REWL=.venv/bin/rewl
RUNS=""
for seed in 1 2 3 4 5; do
    .venv/bin/mpiexec -n 4 $REWL run inputs/quick.toml --set run.seed=${seed} --out runs/spiral_study_s${seed} --force
    RUNS="$RUNS runs/spiral_study_s${seed}"
done
$REWL sgd inputs/quick.toml --out runs/spiral_study_sgd --force
$REWL analyse landscape $RUNS --sgd runs/spiral_study_sgd/baseline.h5 --label "spiral, 116 parameters" \
    -o docs/figures/spiral_study
$REWL analyse diagnostics runs/spiral_study_s1 -o docs/figures/spiral_study_diagnostics_s1
$REWL analyse report $RUNS --sgd runs/spiral_study_sgd/baseline.h5 > docs/spiral_study_report.txt
$REWL analyse report $RUNS --sgd runs/spiral_study_sgd/baseline.h5 --json > docs/spiral_study_report.json
$PY studies/summarise_study.py runs/spiral_study_sgd/baseline.h5 $RUNS > docs/spiral_study_summary.txt
