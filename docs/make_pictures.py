"""Regenerate the QA pictures of docs/pictures.md (``register.app.viz.render``).

    python docs/make_pictures.py                 # all pictures (the third-party ones need the data)
    python docs/make_pictures.py --only lung     # the bundled sample only (no third-party data)

Pictures (1200 x 500 PNG, PIL ``optimize``):

- ``lung.png``: the bundled synthetic lung pair ``data_samples/lung_source.ply`` ->
  ``lung_target.ply`` registered with ``-p lung`` (TRE from the bundled landmarks);
- ``lung_affine_only.png``: the same pair with ``-p lung --stages affine --set
  pipeline.fallback='""'`` (only the affine stage, and no fallback, whose own affine settings
  would replace the ones named: a deliberately incomplete registration);
- ``lung_rigid_only.png``: the same with ``--set affine.mode='"rigid"'`` too (a rotation and a
  translation cannot follow breathing: a deliberately broken registration);
- ``small_gicp_rigid.png``: the small_gicp LiDAR pair (``rigid/small_gicp``, MIT licence) with
  ``-p rigid``;
- ``kitti_000000_sceneflow.png``: the KITTI scene-flow pair ``sceneflow/kitti_000000.npz`` with
  ``-p sceneflow``. KITTI is CC BY-NC-SA 3.0, which a derived image would inherit and which the
  MIT licence of this repository cannot carry: it is written to ``--third-party-out`` (a
  temporary folder by default), never into docs/pictures/.

The third-party data folder is ``../shared/data`` beside the repository or ``$REGISTER_DATA``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
PICTURES = ROOT / "docs" / "pictures"
DATA = Path(os.environ.get("REGISTER_DATA", ROOT.parent / "shared" / "data"))
SIZE = (1200, 500)


def _register(source, target, preset: str, stages: str | None = None, overrides: tuple[str, ...] = ()):
    """``register run SRC TGT -p PRESET [--stages STAGES] [--set KEY=VALUE ...]`` through the
    Python API (seed 0)."""
    from register import register
    from register.app.run import build_config

    return register(source, target, build_config(preset, stages=stages, overrides=overrides), seed=0)


def _lung(stages: str | None = None, overrides: tuple[str, ...] = (), label: str = ""):
    from register import read_points

    source, target = read_points(SAMPLES / "lung_source.ply"), read_points(SAMPLES / "lung_target.ply")
    src_lm = read_points(SAMPLES / "lung_source_landmarks.csv").points
    tgt_lm = read_points(SAMPLES / "lung_target_landmarks.csv").points
    result = _register(source, target, "lung", stages, overrides)
    tre = (
        float(np.linalg.norm(src_lm - tgt_lm, axis=1).mean()),
        float(np.linalg.norm(result.transform.apply(src_lm) - tgt_lm, axis=1).mean()),
    )
    return source.points, target.points, result, f"bundled lung sample, -p lung{label}", tre


# No fallback either: after a first result that leaves mass unmatched (it does on this pair) the
# lung preset's fallback would run the same stages with its own affine settings.
AFFINE_ONLY = ('pipeline.fallback=""',)
RIGID_ONLY = (*AFFINE_ONLY, 'affine.mode="rigid"')


def _small_gicp():
    from register import read_points

    folder = DATA / "rigid" / "small_gicp"
    source, target = read_points(folder / "source.ply"), read_points(folder / "target.ply")
    result = _register(source, target, "rigid")
    return source.points, target.points, result, "small_gicp LiDAR pair (MIT), -p rigid", None


def _kitti():
    with np.load(DATA / "sceneflow" / "kitti_000000.npz") as pair:
        source, target = pair["pc1"].astype(np.float64), pair["pc2"].astype(np.float64)
    result = _register(source, target, "sceneflow")
    return source, target, result, "KITTI kitti_000000 (CC BY-NC-SA 3.0), -p sceneflow", None


# name -> (make, may the picture be committed to this repository, needs the third-party data)
PICTURES_MADE = {
    "lung": (_lung, True, False),
    "lung_affine_only": (lambda: _lung("affine", AFFINE_ONLY, " --stages affine, no fallback"), True, False),
    "lung_rigid_only": (
        lambda: _lung("affine", RIGID_ONLY, " --stages affine, rigid, no fallback"),
        True,
        False,
    ),
    "small_gicp_rigid": (_small_gicp, True, True),
    "kitti_000000_sceneflow": (_kitti, False, True),
}


def _compress(path: Path) -> None:
    """Re-save ``path`` as an RGB PNG with PIL ``optimize`` (no alpha channel; a 256-colour
    palette would band the colour bars)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.save(path, optimize=True)


def make(name: str, folder: Path) -> Path:
    """Register the pair of picture ``name`` and render its QA picture into ``folder``."""
    from register.app.viz import render

    make_pair, _, _ = PICTURES_MADE[name]
    source, target, result, title, tre = make_pair()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    config = result.config
    render(
        source,
        target,
        result.warped,
        screenshot=path,
        title=title,
        window_size=SIZE,
        units=(config.pipeline.units if config is not None else "") or "data units",
        verdict=result.reliability.verdict if result.reliability is not None else None,
        chamfer=(result.metrics["chamfer_before"], result.metrics["chamfer_after"]),
        tre=tre,
    )
    _compress(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(PICTURES_MADE), help="Pictures to make.")
    parser.add_argument("--out", type=Path, default=PICTURES, help="Folder of the redistributable pictures.")
    parser.add_argument(
        "--third-party-out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "register-pictures",
        help="Folder of the pictures whose data licence forbids committing them (KITTI).",
    )
    args = parser.parse_args(argv)
    names = args.only or list(PICTURES_MADE)
    for name in names:
        _, redistributable, third_party = PICTURES_MADE[name]
        if third_party and not DATA.is_dir():
            print(f"{name}: skipped, third-party data folder {DATA} not found (set REGISTER_DATA)")
            continue
        start = time.perf_counter()
        path = make(name, args.out if redistributable else args.third_party_out)
        kb = path.stat().st_size / 1024
        print(f"{name}: {path} ({kb:.0f} KB, {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
