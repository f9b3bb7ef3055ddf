#!/usr/bin/env bash
# Register one lung vessel pair, move its landmarks, and report the landmark error.
# Runs on the bundled synthetic sample; replace the four paths with your own files.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=data_samples/lung_source.ply
TGT=data_samples/lung_target.ply
SRC_LM=data_samples/lung_source_landmarks.csv
TGT_LM=data_samples/lung_target_landmarks.csv
OUT=${1:-example_output}

register "$SRC" "$TGT" --pipeline lung --weights radius -o "$OUT" --overwrite \
    --landmarks "$SRC_LM" "$TGT_LM" --screenshot "$OUT.png" --json --quiet > "$OUT.json"
register warp "$OUT/transform.npz" "$SRC_LM" -o "$OUT/landmarks_warped.csv" --overwrite
register eval "$OUT/transform.npz" --landmarks "$SRC_LM" "$TGT_LM"
