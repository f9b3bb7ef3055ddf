#!/usr/bin/env bash
# Benchmark set-up: the peer tools of benchmarks/peers.py (not needed by the tests or the package).
#   bash benchmarks/setup_peers.sh            build BCPD and install the Python peers
#   bash benchmarks/setup_peers.sh bcpd       build BCPD only
#   bash benchmarks/setup_peers.sh python     install the Python peers only
# BCPD (MIT, O. Hirose) is compiled from ../shared/peers/bcpd with its own build.sh into .peers/bin/
# (git-ignored), where benchmarks/peers.py finds it (then on PATH). Its build needs gcc with OpenMP
# and OpenBLAS (build.sh installs libopenblas-dev with apt when run as root). The Python peers are
# the `bench` extra of pyproject.toml, then probreg with --no-deps (its metadata pulls the full
# open3d on top of open3d-cpu). Idempotent; PYTHON selects the interpreter (default: python).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_SRC:-$root/../shared/peers}
python=${PYTHON:-python}
what=${1:-all}

build_bcpd() {
  if [ ! -f "$peers/bcpd/build.sh" ]; then
    echo "setup_peers: $peers/bcpd/build.sh not found: BCPD not built (set PEERS_SRC)" >&2
    return 1
  fi
  if ! command -v gcc >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq gcc) >/dev/null
  fi
  bash "$peers/bcpd/build.sh" "$root/.peers/bin" >/dev/null
  "$root/.peers/bin/bcpd" -v >/dev/null 2>&1 || true  # a smoke start (prints its version)
  echo "setup_peers: built $root/.peers/bin/bcpd"
}

install_python() {
  # open3d (the open3d_icp peer) needs the system library libusb-1.0.
  if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) >/dev/null
  fi
  "$python" -m pip install -q pycpd psutil scikit-learn six transforms3d matplotlib \
    "open3d-cpu>=0.18; platform_system == 'Linux' and platform_machine == 'x86_64'" \
    "open3d>=0.18; platform_system != 'Linux' or platform_machine != 'x86_64'"
  "$python" -c "import probreg" 2>/dev/null || "$python" -m pip install -q --no-deps probreg
  echo "setup_peers: installed pycpd, probreg, open3d and their run-time imports into $("$python" -c 'import sys; print(sys.prefix)')"
}

case "$what" in
  all) build_bcpd; install_python ;;
  bcpd) build_bcpd ;;
  python) install_python ;;
  *) echo "setup_peers: unknown action '$what' (use bcpd, python or nothing)" >&2; exit 2 ;;
esac
