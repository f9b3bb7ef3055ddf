"""Turn the DIR-LAB 4DCT dense landmark tables into point clouds and a ``register batch`` manifest.

Each ``caseN_dense_EI_EE_mm.csv`` (columns ``EI_x,EI_y,EI_z,EE_x,EE_y,EE_z`` in mm, one row per
landmark pair) gives two clouds: end-inhale (EI) and end-exhale (EE). Every case is registered
in both directions, so 5 cases give 10 pairs:

    caseN_EI_to_EE   source EI, target EE (rows shuffled), landmarks EI -> EE
    caseN_EE_to_EI   source EE, target EI (rows shuffled), landmarks EE -> EI

Targets are shuffled with ``numpy.random.default_rng(0).permutation`` (as the benchmarks do),
so the registration is not handed the correspondence; the unshuffled clouds serve as the
landmarks, so the TRE is measured on every point.

    python examples/dirlab4dct_manifest.py ../shared/data/lung/dirlab4dct WORK
    register batch WORK/manifest.csv -o WORK/out --pipeline lung --workers 2

Writes ``WORK/clouds/*.csv`` (header ``x,y,z``, mm) and ``WORK/manifest.csv``; WORK must be
outside the repository (the data's licence does not allow copying it into the project).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io import write_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with caseN_dense_EI_EE_mm.csv")
    parser.add_argument("work", type=Path, help="output folder (created)")
    parser.add_argument("--cases", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()

    clouds = args.work / "clouds"
    clouds.mkdir(parents=True, exist_ok=True)
    rows = ["id,source,target,source_landmarks,target_landmarks"]
    for n in args.cases:
        table = np.loadtxt(args.data / f"case{n}_dense_EI_EE_mm.csv", delimiter=",", comments="#", ndmin=2)
        phases = {"EI": table[:, :3], "EE": table[:, 3:6]}
        files = {}
        for phase, points in phases.items():
            files[phase] = clouds / f"case{n}_{phase}.csv"
            files[f"{phase}_shuffled"] = clouds / f"case{n}_{phase}_shuffled.csv"
            write_points(files[phase], PointCloud(points))
            write_points(
                files[f"{phase}_shuffled"],
                PointCloud(points[np.random.default_rng(0).permutation(len(points))]),
            )
        for src, tgt in (("EI", "EE"), ("EE", "EI")):
            cells = [files[src], files[f"{tgt}_shuffled"], files[src], files[tgt]]
            rows.append(f"case{n}_{src}_to_{tgt}," + ",".join(str(p.resolve()) for p in cells))
        print(f"case {n}: {len(table)} landmark pairs")
    (args.work / "manifest.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {args.work / 'manifest.csv'} ({len(rows) - 1} pairs)")


if __name__ == "__main__":
    main()
