#!/usr/bin/env bash
# Run a batch on a SLURM cluster through Dask (dask-jobqueue), from a login node:
#
#   pip install 'register-ot[distributed]' dask-jobqueue      # once, in the shared environment
#   examples/batch_slurm.sh cohort.csv out --jobs 10 --cores 4 --memory 32GB --queue compute \
#       --prologue 'source ~/venvs/register/bin/activate'
#
# Arguments after OUTDIR go to examples/dask_cluster.py (see its help). The manifest's files and
# OUTDIR must be on a file system the compute nodes share. If the batch is interrupted (or the
# SLURM jobs run out of time), run the same command again: finished pairs are kept.
#
# Without sbatch on PATH the same steps run on a local Dask cluster (2 workers), so the script
# can be tried anywhere; without arguments it uses the bundled sample (see batch_cohort.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ $# -ge 2 ]; then
  MANIFEST=$1 OUTDIR=$2
  shift 2
else
  mkdir -p cohort_demo
  SAMPLES="$HERE/../data_samples"
  MANIFEST=$PWD/cohort_demo/slurm.csv OUTDIR=$PWD/cohort_demo/slurm_out
  cat > "$MANIFEST" <<CSV
id,source,target,source_landmarks,target_landmarks
case01,$SAMPLES/lung_source.ply,$SAMPLES/lung_target.ply,$SAMPLES/lung_source_landmarks.csv,$SAMPLES/lung_target_landmarks.csv
case01_reverse,$SAMPLES/lung_target.ply,$SAMPLES/lung_source.ply,$SAMPLES/lung_target_landmarks.csv,$SAMPLES/lung_source_landmarks.csv
CSV
fi
KIND=slurm
command -v sbatch >/dev/null || { KIND=local; echo "no sbatch here: using a local Dask cluster" >&2; }

ADDRESS_FILE=$(mktemp -u "${TMPDIR:-/tmp}/register-scheduler.XXXXXX")
python "$HERE/dask_cluster.py" "$KIND" --address-file "$ADDRESS_FILE" "$@" &
CLUSTER=$!
trap 'kill $CLUSTER 2>/dev/null; wait $CLUSTER 2>/dev/null || true' EXIT
for _ in $(seq 120); do [ -s "$ADDRESS_FILE" ] && break; sleep 1; done
[ -s "$ADDRESS_FILE" ] || { echo "batch_slurm.sh: the Dask cluster did not start" >&2; exit 1; }

status=0
register batch "$MANIFEST" -o "$OUTDIR" --pipeline lung --scheduler "$(cat "$ADDRESS_FILE")" || status=$?
echo "summary: $OUTDIR/summary.csv; report: $OUTDIR/report.html" >&2
exit $status
