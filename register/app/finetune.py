"""Unsupervised OT loss on real, unlabelled pairs (fine-tuning the flow network).

Real pairs have no ground-truth flow. The network's finest flow ``F_i`` on the source points
it kept, ``x_i``, is scored by the debiased Sinkhorn divergence of GeomLoss between the warped
source and the target (uniform masses, model units):

    L_OT = S_{eps, rho}( (1/N) sum_i delta_{x_i + F_i},  (1/M) sum_j delta_{y_j} )        (3)

with ``eps = blur^2`` and reach ``rho`` (``inf``: balanced). It is small when the warped source
covers the target. :func:`register.app.train.train` adds ``ot_weight * L_OT`` of one real pair
per step to the supervised loss (1) of the synthetic batch, so the network keeps its synthetic
supervision while it adapts to what real clouds look like.

Real pairs come from a ``register batch`` manifest (``.csv`` / ``.jsonl``, columns ``id``,
``source``, ``target``) or a folder of pair folders ``DIR/<id>/source.<ext>`` and
``DIR/<id>/target.<ext>`` (any supported point format).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from register.errors import InputError
from register.synth.pairs import pair_seed

REAL_STREAM = 3  # seed stream of the real-pair draws (synthetic streams: 0-2)


@dataclass(frozen=True)
class RealPairFiles:
    """One real pair: its name and the point files (source is moved onto target)."""

    id: str
    source: Path
    target: Path


def real_pair_files(path: str | Path) -> list[RealPairFiles]:
    """The pairs of a manifest file or a folder of pair folders (see the module docstring).

    Raises:
        InputError: naming ``--real`` and the path, with what is wrong and the expected layout.
    """
    from register.app.batch.manifest import FORMATS, read_manifest
    from register.io import supported_extensions

    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in FORMATS:
            raise InputError(
                f"--real {path}: a manifest must be {' / '.join(FORMATS)}; or give a folder of pair folders"
            )
        return [RealPairFiles(p.id, p.source, p.target) for p in read_manifest(path)]
    if not path.is_dir():
        raise InputError(f"--real {path}: no such file or folder")
    exts = set(supported_extensions())
    pairs, problems = [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        found = {}
        for role in ("source", "target"):
            files = [f for f in folder.glob(f"{role}.*") if f.suffix.lower() in exts]
            if len(files) != 1:
                problems.append(f"{folder.name}: {len(files)} '{role}.<ext>' point files (need exactly 1)")
            else:
                found[role] = files[0]
        if len(found) == 2:
            pairs.append(RealPairFiles(folder.name, found["source"], found["target"]))
    if problems:
        raise InputError(f"--real {path}: " + "; ".join(problems))
    if not pairs:
        raise InputError(
            f"--real {path}: no pair folders; expected {path}/<id>/source.<ext> and {path}/<id>/target.<ext>"
        )
    return pairs


class RealPairs:
    """The real pairs of a run, read once, drawn deterministically per step.

    Args:
        files: the pairs (:func:`real_pair_files`).
        feature: point attribute the network takes ("" = none); a cloud without it gets zeros
            (as the synthetic pairs whose feature is dropped).
    """

    def __init__(self, files: list[RealPairFiles], feature: str = "") -> None:
        from register.io import read_points

        self.files = files
        self.clouds = []
        for pair in files:
            clouds = [read_points(p) for p in (pair.source, pair.target)]
            for cloud, p in zip(clouds, (pair.source, pair.target), strict=True):
                if cloud.points.shape[1] != 3:
                    raise InputError(
                        f"--real: {p} has {cloud.points.shape[1]}-D points; the network needs 3-D"
                    )
            feats = [c.point_data.get(feature) if feature else None for c in clouds]
            if any(f is None for f in feats):
                feats = [None, None]
            self.clouds.append([(c.points, f) for c, f in zip(clouds, feats, strict=True)])

    def __len__(self) -> int:
        return len(self.clouds)

    def draw(
        self, seed: int, step: int, points: int, spec, device
    ) -> tuple[torch.Tensor, torch.Tensor, list]:
        """The real pair of step ``step``: ``source (1, n, 3)``, ``target (1, m, 3)`` in model units
        (the preset's normalisation, frame of the source), features ``[(1, n, 1), (1, m, 1)]`` or
        ``[]``; each cloud a seeded subsample of at most ``points`` points."""
        s = pair_seed(seed, REAL_STREAM, step)
        rng = np.random.default_rng(s)
        (xs, fs), (ys, ft) = self.clouds[s % len(self.clouds)]
        ix = rng.choice(len(xs), min(points, len(xs)), replace=False)
        iy = rng.choice(len(ys), min(points, len(ys)), replace=False)
        frame = spec.normalisation.frame(xs[ix])

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a[None], dtype=torch.float32, device=device)

        features = []
        if spec.feature:
            features = [
                t(np.zeros((len(idx), 1)) if f is None else frame.feature(f[idx]))
                for f, idx in ((fs, ix), (ft, iy))
            ]
        return t(frame.points(xs[ix])), t(frame.points(ys[iy])), features


def ot_loss(net, source: torch.Tensor, target: torch.Tensor, features: list, blur: float, reach: float):
    """(3) for one pair: ``source (1, N, 3)``, ``target (1, M, 3)`` (model units); a scalar tensor
    (squared model units, differentiable in the network's weights)."""
    from geomloss import SamplesLoss

    out = net(source, target, *features)
    kept = torch.gather(source, 1, out.index[0][..., None].expand(-1, -1, 3))
    warped = kept + out.flows[0]
    loss = SamplesLoss(
        "sinkhorn",
        p=2,
        blur=blur,
        reach=None if math.isinf(reach) else reach,
        debias=True,
        backend="tensorized",  # the training clouds are small (a few thousand points)
    )
    return loss(warped[0], target[0])
