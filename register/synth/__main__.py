"""Write the synthetic lung pair: ``python -m register.synth OUTDIR [--seed 0] [--n-points 8000]``."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from register.synth.samples import make_lung_pair

_README = """\
# Synthetic lung vessel pair

Made with

    python -m register.synth {outdir} --seed {seed} --n-points {n_points}

Units are mm; axes: x left-right, y antero-posterior, z cranio-caudal (apex at high z).

- `lung_source.ply`, `lung_target.ply`: {n_points} points each, with a `radius` vertex property
  (vessel radius, mm). Both are independent samplings of the same procedural two-lung vessel
  tree (`register.synth.vessels.build_vessel_tree`, seed {seed}), so they share no points.
- The target sampling is deformed by `register.synth.samples.LungDeformation`:
  `breathing` (exhale-like: the base rises by {amplitude} mm, the apex stays,
  {lateral_pct}% lateral expansion; box centre {center} mm, half-size {extent} mm)
  plus a smooth random Gaussian field (sigma {sigma:.1f} mm, {n_controls} controls,
  mean magnitude {field} mm). Target = sampling + displacement.
- `lung_source_landmarks.csv`, `lung_target_landmarks.csv` (header `x,y,z`): {n_landmarks}
  bifurcations of the tree and their deformed positions, row for row.

Regenerate the exact ground truth in Python with
`register.synth.make_lung_pair(seed={seed}, n_points={n_points})`.
"""


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, write the files, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m register.synth", description=__doc__)
    parser.add_argument("outdir", help="directory to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--n-points", type=int, default=8000, help="points per cloud (default 8000)")
    args = parser.parse_args(argv)

    from register.core.pointcloud import PointCloud
    from register.io import write_points

    pair = make_lung_pair(seed=args.seed, n_points=args.n_points)
    os.makedirs(args.outdir, exist_ok=True)
    for name in ("source", "target"):
        cloud = PointCloud(pair[name], point_data={"radius": pair[f"{name}_radius"]}, path=None)
        write_points(os.path.join(args.outdir, f"lung_{name}.ply"), cloud)
        np.savetxt(
            os.path.join(args.outdir, f"lung_{name}_landmarks.csv"),
            pair[f"{name}_landmarks"],
            delimiter=",",
            header="x,y,z",
            comments="",
            fmt="%.6f",
        )
    p = pair["params"]
    readme = _README.format(
        outdir=args.outdir,
        seed=args.seed,
        n_points=args.n_points,
        amplitude=p["breathing_amplitude_mm"],
        lateral_pct=round(100 * p["breathing_lateral"]),
        center=[round(c, 1) for c in p["breathing_center_mm"]],
        extent=[round(c, 1) for c in p["breathing_extent_mm"]],
        sigma=p["field_sigma_mm"],
        n_controls=p["field_n_controls"],
        field=p["field_mean_magnitude_mm"],
        n_landmarks=len(pair["source_landmarks"]),
    )
    with open(os.path.join(args.outdir, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
