#!/usr/bin/env bash
# Build a batch manifest from a folder of inhale / exhale files named <case>_insp.<ext> and
# <case>_exp.<ext> (any format register reads). Landmarks are added when the folder also holds
# <case>_insp_landmarks.<ext> and <case>_exp_landmarks.<ext> (rows in correspondence).
#
#   examples/make_manifest.sh FOLDER > cohort.csv                 # inspiration -> expiration
#   DIRECTION=exp-to-insp examples/make_manifest.sh FOLDER > cohort.csv
#   DIRECTION=both examples/make_manifest.sh FOLDER > cohort.csv  # two pairs per case
#
# Paths are written absolute, so the manifest can live anywhere.
set -euo pipefail
FOLDER=${1:?usage: make_manifest.sh FOLDER > manifest.csv}
DIRECTION=${DIRECTION:-insp-to-exp}
case "$DIRECTION" in insp-to-exp | exp-to-insp | both) ;; *)
  echo "make_manifest.sh: DIRECTION must be insp-to-exp, exp-to-insp or both" >&2; exit 2 ;;
esac
FOLDER=$(cd "$FOLDER" && pwd)

echo "id,source,target,source_landmarks,target_landmarks"
found=0
shopt -s nullglob
for insp in "$FOLDER"/*_insp.*; do
  name=$(basename "$insp")
  case=${name%_insp.*}
  exp=("$FOLDER/${case}_exp".*)
  [ ${#exp[@]} -eq 1 ] || { echo "make_manifest.sh: no single ${case}_exp.* for $name; skipped" >&2; continue; }
  lm_insp=("$FOLDER/${case}_insp_landmarks".*)
  lm_exp=("$FOLDER/${case}_exp_landmarks".*)
  lm_i="" lm_e=""
  if [ ${#lm_insp[@]} -eq 1 ] && [ ${#lm_exp[@]} -eq 1 ]; then lm_i=${lm_insp[0]}; lm_e=${lm_exp[0]}; fi
  if [ "$DIRECTION" != exp-to-insp ]; then
    echo "${case}_insp_to_exp,$insp,${exp[0]},$lm_i,$lm_e"
  fi
  if [ "$DIRECTION" != insp-to-exp ]; then
    echo "${case}_exp_to_insp,${exp[0]},$insp,$lm_e,$lm_i"
  fi
  found=$((found + 1))
done
if [ "$found" -eq 0 ]; then
  echo "make_manifest.sh: no *_insp.* files in $FOLDER" >&2
  exit 1
fi
