#!/usr/bin/env bash
# Register a cohort of inhale / exhale pairs with `register batch`, then write the HTML report.
#
#   examples/batch_cohort.sh FOLDER OUTDIR [extra 'register batch' options]
#
# FOLDER holds <case>_insp.<ext> / <case>_exp.<ext> (and optional *_landmarks files; see
# make_manifest.sh). Re-running the same command resumes: finished pairs are kept, failed and
# interrupted ones are redone. Without arguments it runs on the bundled synthetic sample:
# data_samples/ is laid out as a two-case cohort (case01 as sampled, case02 the same lungs with
# inhale and exhale swapped) in ./cohort_demo, with results in ./cohort_demo/out.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ $# -ge 2 ]; then
  FOLDER=$1 OUTDIR=$2
  shift 2
else
  SAMPLES="$HERE/../data_samples"
  FOLDER=$PWD/cohort_demo/clouds OUTDIR=$PWD/cohort_demo/out
  mkdir -p "$FOLDER"
  ln -sf "$SAMPLES/lung_source.ply" "$FOLDER/case01_insp.ply"
  ln -sf "$SAMPLES/lung_target.ply" "$FOLDER/case01_exp.ply"
  ln -sf "$SAMPLES/lung_source_landmarks.csv" "$FOLDER/case01_insp_landmarks.csv"
  ln -sf "$SAMPLES/lung_target_landmarks.csv" "$FOLDER/case01_exp_landmarks.csv"
  ln -sf "$SAMPLES/lung_target.ply" "$FOLDER/case02_insp.ply"
  ln -sf "$SAMPLES/lung_source.ply" "$FOLDER/case02_exp.ply"
  ln -sf "$SAMPLES/lung_target_landmarks.csv" "$FOLDER/case02_insp_landmarks.csv"
  ln -sf "$SAMPLES/lung_source_landmarks.csv" "$FOLDER/case02_exp_landmarks.csv"
fi
MANIFEST=$(dirname "$OUTDIR")/$(basename "$OUTDIR").csv
"$HERE/make_manifest.sh" "$FOLDER" > "$MANIFEST"
echo "manifest: $MANIFEST ($(($(wc -l < "$MANIFEST") - 1)) pairs)" >&2

# Two pairs side by side (one torch thread each on a 2-core machine); lung preset (mm), vessel
# radius as mass. Exit code 3 means some pairs failed: the summary says which and why.
status=0
register batch "$MANIFEST" -o "$OUTDIR" --pipeline lung --weights radius --workers 2 "$@" || status=$?
echo "summary: $OUTDIR/summary.csv; report: $OUTDIR/report.html (open it in a browser)" >&2
echo "reopen one pair in 3-D: register show $OUTDIR/<id>" >&2
exit $status
