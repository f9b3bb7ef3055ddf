#!/usr/bin/env bash
# One-command set-up for register.
#   bash setup.sh demo   set everything up, then register the bundled lung sample
#   bash setup.sh test   set everything up, then run the test suite
#   bash setup.sh        set everything up only
# Idempotent: re-running reuses .venv and skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

# Off-screen rendering (QA pictures, `register batch` images) uses EGL with Mesa's software
# rasteriser: Debian/Ubuntu packages libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri.
if ! ldconfig -p 2>/dev/null | grep -q libEGL_mesa; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri) >/dev/null
  else
    echo "setup.sh: for off-screen pictures install libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of PyTorch first: a bare "torch" requirement would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
# [test] includes [distributed] (Dask), so the LocalCluster test of `register batch` runs too.
python -m pip install -q -e ".[test]"

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
case "${1:-}" in
  demo)
    register data_samples/lung_source.ply data_samples/lung_target.ply --pipeline lung \
      --output demo_output --screenshot demo_output_qa.png --overwrite
    ;;
  test)
    python -m pytest -q
    ;;
  "") echo "set up: activate with '. .venv/bin/activate', then run 'register --help'" ;;
  *) echo "setup.sh: unknown action '$1' (use demo or test)" >&2; exit 2 ;;
esac
