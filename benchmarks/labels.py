"""Label-aware matching on labelled synthetic vessel pairs: ``-p lung`` with and without labels.

Each case interleaves two independent procedural vessel trees in the same lungs (the
"arteries", label 0, and the "veins", label 1: :func:`register.synth.vessels.build_vessel_tree`
with two seeds), as the two vascular trees of a real lung run side by side. The source and
the target sample the trees independently (no point has an exact partner; 10,000 points each,
half per tree); the target is moved by a breathing motion (12 mm) plus a smooth random field
(mean 4 mm). The error is ``mean_i |T(x_i) - phi(x_i)|`` over the source points (mm), with
``phi`` the true motion.

Run: ``python -m benchmarks.labels [--cases 5] [--points 10000] [--out DIR]``; writes
``labels.md`` and ``labels.json`` to ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from register.app.run import build_config
from register.core.pointcloud import PointCloud
from register.pipeline import register
from register.synth.deform import breathing, make_smooth_random_field
from register.synth.vessels import build_vessel_tree


def labelled_pair(case: int, n_points: int) -> tuple[PointCloud, PointCloud, np.ndarray]:
    """Source and target clouds (attributes ``label``, ``radius``) and the true target
    position ``(N, 3)`` of each source point (mm)."""
    rng = np.random.default_rng(1000 + case)
    trees = [build_vessel_tree(rng) for _ in range(2)]

    def sample(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        parts = [tree.sample(n_points // 2, r) for tree in trees]
        points = np.concatenate([p for p, _ in parts])
        radius = np.concatenate([q for _, q in parts])
        label = np.repeat([0.0, 1.0], n_points // 2)
        return points, radius, label

    xs, rs, ls = sample(2000 + case)
    yt, rt, lt = sample(3000 + case)
    everything = np.concatenate([xs, yt])
    lo, hi = everything.min(0), everything.max(0)
    centre, extent = (lo + hi) / 2, (hi - lo) / 2
    field = make_smooth_random_field(everything, 4000 + case, magnitude=4.0)

    def motion(p: np.ndarray) -> np.ndarray:
        return p + breathing(p, 12.0, center=centre, extent=extent) + field(p)

    source = PointCloud(xs, {"label": ls, "radius": rs})
    target = PointCloud(motion(yt), {"label": lt, "radius": rt})
    return source, target, motion(xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    rows = []
    for case in range(args.cases):
        source, target, truth = labelled_pair(case, args.points)
        row = {"case": case, "none": float(np.linalg.norm(source.points - truth, axis=1).mean())}
        for name, labels in (("register", None), ("register --labels", "label")):
            cfg = build_config("lung", overrides=(f'pipeline.labels="{labels}"',) if labels else ())
            t0 = time.perf_counter()
            result = register(source, target, cfg, seed=0)
            seconds = time.perf_counter() - t0
            err = np.linalg.norm(result.warped - truth, axis=1)
            same = err  # per label below
            row[name] = float(err.mean())
            row[f"{name} seconds"] = seconds
            for k in (0, 1):
                row[f"{name} label {k}"] = float(same[source.point_data["label"] == k].mean())
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labels.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Label-aware matching, labelled synthetic vessel pairs (mean error on the source points, mm)",
        "",
        f"`python -m benchmarks.labels --cases {args.cases} --points {args.points}`",
        "",
        "| case | none | -p lung | -p lung --labels label | seconds (without / with) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['none']:.2f} | {r['register']:.2f} | {r['register --labels']:.2f} | "
            f"{r['register seconds']:.1f} / {r['register --labels seconds']:.1f} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("none", "register", "register --labels")}
    lines.append(
        f"| **mean** | {mean['none']:.2f} | {mean['register']:.2f} | {mean['register --labels']:.2f} | |"
    )
    (args.out / "labels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
