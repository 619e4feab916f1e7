#!/usr/bin/env bash
# Reproduces docs/results.md: the spiral study (116-parameter net) with five independent sampler
# seeds, 100 SGD baselines, the landscape figure and the report. About 74 minutes on 2 cores.
#   bash studies/spiral_study.sh            (from the repository root, after `make demo` or `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REWL=.venv/bin/rewl
mkdir -p runs/decks
for seed in 1 2 3 4 5; do
    # the same deck with another [run] seed and output directory
    sed "s/^seed = 1$/seed = ${seed}/; s#^dir = \"runs/spiral_study\"#dir = \"runs/spiral_study_s${seed}\"#" \
        inputs/spiral_study.toml > runs/decks/spiral_study_s${seed}.toml
    .venv/bin/mpiexec -n 4 $REWL run runs/decks/spiral_study_s${seed}.toml --force
done
$REWL sgd inputs/spiral_study.toml --out runs/spiral_study_sgd --force
RUNS="runs/spiral_study_s1 runs/spiral_study_s2 runs/spiral_study_s3 runs/spiral_study_s4 runs/spiral_study_s5"
$REWL analyse landscape $RUNS --sgd runs/spiral_study_sgd/baseline.h5 --label "spiral, 116 parameters" \
    -o docs/figures/spiral_study
$REWL analyse diagnostics runs/spiral_study_s1 -o docs/figures/spiral_study_diagnostics_s1
$REWL analyse report $RUNS --sgd runs/spiral_study_sgd/baseline.h5 > docs/spiral_study_report.txt
$REWL analyse report $RUNS --sgd runs/spiral_study_sgd/baseline.h5 --json > docs/spiral_study_report.json
$PY studies/summarise_study.py runs/spiral_study_sgd/baseline.h5 $RUNS > docs/spiral_study_summary.txt
