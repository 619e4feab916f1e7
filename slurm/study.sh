#!/bin/bash
# A whole study on SLURM, from a login node: SEEDS independent REWL runs of DECK as a job array (each
# seed resubmits itself to the end, slurm/rewl.sbatch), the SGD/Adam baselines as their own job, and
# the analysis as a job that runs once all of them have ended successfully.
#   slurm/study.sh DECK SEEDS [extra sbatch options for the REWL array, e.g. --time=08:00:00 --gpus-per-task=1]
# Partition, account and the like: the usual SBATCH_PARTITION, SBATCH_ACCOUNT ... variables.
# Prints the three job ids. Output: OUT/seed-K (K = 0..SEEDS-1), OUT/baseline.h5, OUT/report.txt.
set -euo pipefail
DECK=${1:?usage: slurm/study.sh DECK SEEDS [sbatch options for the REWL array]}
SEEDS=${2:?usage: slurm/study.sh DECK SEEDS [sbatch options for the REWL array]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
BIN="${REWL_VENV:-$(pwd)/.venv}/bin"
REWL="${BIN}/rewl"
ranks=$("${REWL}" check "${DECK}" --print ranks)
rewl_job=$(sbatch --parsable --ntasks="${ranks}" --array="0-$(( SEEDS - 1 ))" "$@" "${here}/rewl.sbatch" "${DECK}")
sgd_job=$(sbatch --parsable "${here}/baselines.sbatch" "${DECK}")
# afterok: only when every seed and the baselines succeeded; a failed one cancels the analysis
# (--kill-on-invalid-dep) instead of leaving it pending forever. A requeued seed is not "ended".
analysis_job=$(sbatch --parsable --dependency="afterok:${rewl_job%%;*}:${sgd_job%%;*}" --kill-on-invalid-dep=yes \
    "${here}/analysis.sbatch" "${DECK}")
echo "rewl array ${rewl_job%%;*} (${SEEDS} seeds x ${ranks} ranks), baselines ${sgd_job%%;*}, analysis ${analysis_job%%;*}"
