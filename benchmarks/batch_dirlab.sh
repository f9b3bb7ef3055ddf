#!/usr/bin/env bash
# `register batch` over the 10 DIR-LAB 4DCT dense registrations (cases 1-5, EI -> EE and
# EE -> EI), lung preset, two local workers; killed with `kill -9` half-way and run again, with
# checks that nothing finished was lost or recomputed (benchmarks/batch_resume.py).
#
#   bash benchmarks/batch_dirlab.sh [DATA] [WORK] [extra 'register batch' options]
#
# DATA: the shared data folder (default ../shared/data); WORK: a folder outside the repository
# for the converted clouds and the results (default /tmp/register_dirlab_batch; must not hold
# an earlier 'out'). Prints the times; WORK/out.resume.json keeps them with the checks;
# WORK/out/report.html is the visual QA page. Takes tens of minutes of both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
WORK=${2:-/tmp/register_dirlab_batch}
shift $(($# < 2 ? $# : 2))
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python examples/dirlab4dct_manifest.py "$DATA/lung/dirlab4dct" "$WORK"
python -m benchmarks.batch_resume "$WORK/manifest.csv" "$WORK/out" -- --pipeline lung --workers 2 "$@"
