"""Dense displacement fields: seconds and peak memory of ``register field`` on CT-sized grids.

    python -m benchmarks.field_speed [--sizes 64,128,256] [--exact 128]

The transform is a real one: the bundled lung sample (``data_samples/lung_*.ply``, mm)
registered with ``-p lung`` (an affine and five kernel fields, widths 40 to 5 mm). Each grid
covers the sample's bounding box plus 20 mm with ``n^3`` voxels. Every measurement runs in a
fresh child process, so its peak resident memory (``ru_maxrss``) is its own:

* ``lattice``: :func:`register.fields.displacement_on_grid` (exact every ``s`` voxels + cubic
  spline, error measured at the check voxels);
* ``exact``: the transform applied at every voxel (what evaluating the field meant before), on
  the ``--exact`` grid only, checked against ``lattice`` there.

Ratio column: exact seconds per voxel x the grid's voxels / lattice seconds, both from this run.
Results: ``benchmarks/results/speed/field_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.machine import run_meta

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "speed" / "field_speed"

_CHILD = r"""
import json, resource, sys, time
import numpy as np
from register.core.transforms import load_transform
from register.fields import displacement_on_grid
from register.io import read_points
from register.io.images import Grid

transform_path, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
T = load_transform(transform_path)
pts = read_points(sys.argv[4]).points
lo, hi = pts.min(0) - 20, pts.max(0) + 20
grid = Grid((n, n, n), lo, (hi - lo) / (n - 1), np.eye(3))
out = {"n": n, "voxels": grid.voxels, "spacing_mm": grid.spacing.round(3).tolist()}
start = time.perf_counter()
if mode == "lattice":
    f = displacement_on_grid(T, grid)
    out.update(stride=f.stride, max_error_mm=f.max_error, checked=f.checked)
    np.save(sys.argv[5], f.displacement) if len(sys.argv) > 5 else None
else:
    idx = np.stack(np.meshgrid(*(np.arange(n),) * 3, indexing="ij"), -1).reshape(-1, 3)
    x = grid.world(idx)
    d = (T.apply(x) - x).reshape(n, n, n, 3)
    if len(sys.argv) > 5:
        ref = np.load(sys.argv[5])
        out["lattice_vs_exact_max_mm"] = float(np.linalg.norm(ref - d, axis=-1).max())
out["seconds"] = time.perf_counter() - start
out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _transform(folder: Path, threads: int) -> Path:
    """Register the bundled lung sample with ``-p lung``; the transform's path."""
    out = folder / "lung"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(
        [sys.executable, "-m", "register", str(ROOT / "data_samples" / "lung_source.ply"),
         str(ROOT / "data_samples" / "lung_target.ply"), "-p", "lung", "-o", str(out), "-q"],
        check=True, env=env,
    )  # fmt: skip
    return out / "transform.npz"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256", help="grid sizes n (n^3 voxels)")
    parser.add_argument("--exact", type=int, default=128, help="grid size of the exact evaluation")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    source = str(ROOT / "data_samples" / "lung_source.ply")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        transform = str(_transform(Path(tmp), args.threads))
        ref = str(Path(tmp) / "lattice.npy")
        exact = _child([transform, "lattice", str(args.exact), source, ref], args.threads)
        exact = _child([transform, "exact", str(args.exact), source, ref], args.threads)
        per_voxel = exact["seconds"] / exact["voxels"]
        for n in sizes:
            row = _child([transform, "lattice", str(n), source], args.threads)
            row["exact_estimate_s"] = per_voxel * row["voxels"]
            row["ratio"] = row["exact_estimate_s"] / row["seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = run_meta("benchmarks.field_speed", argv, args.threads)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({**meta, "exact": exact, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Dense displacement fields on CT-sized grids",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']['cpu']}, {meta['machine']['threads']} threads; {meta['date']}",
        "- transform: the bundled lung sample registered with `-p lung` (affine + kernel fields, widths 40-5 mm)",
        f"- exact evaluation (every voxel) on {args.exact}^3: {exact['seconds']:.1f} s, "
        f"{exact['peak_mib']:.0f} MiB peak; the lattice field differs from it by at most "
        f"{exact['lattice_vs_exact_max_mm']:.3g} mm there",
        "",
        "| grid | voxel mm | stride | max error mm (checked voxels) | seconds | peak MiB | exact, estimated s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']}^3 | {'x'.join(f'{s:.2f}' for s in r['spacing_mm'])} | {r['stride']} | "
            f"{r['max_error_mm']:.3g} ({r['checked']:,}) | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
            f"{r['exact_estimate_s']:.0f} | {r['ratio']:.0f}x |"
        )
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
