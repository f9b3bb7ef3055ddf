"""The inputs of a registration checked and prepared before any work: the device, the clouds
(shape, finite coordinates, spread, extent against the settings' units), per-point masses, the
flow network's point features and the classes of label-aware matching."""

from __future__ import annotations

import math

import numpy as np

from register.config import PipelineConfig
from register.core.pointcloud import PointCloud
from register.errors import InputError

MIN_POINTS = 4  # fewer points cannot determine a 3-D affine map


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; checks an explicit CUDA request."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r}: CUDA is not available on this machine; use device='cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"device={device!r}: expected auto, cpu, cuda or cuda:N")
    return device


def masses(cloud: PointCloud, name: str) -> np.ndarray:
    """Per-point masses ``(N,)``: uniform, or the point attribute ``name`` (e.g. vessel radius)."""
    from register.io.weights import read_weights

    if not name:
        return np.ones(len(cloud))
    try:
        return read_weights(cloud, name)
    except InputError as exc:
        raise InputError(f"pipeline.weights = {name!r}: {exc}") from None


def feature(cloud: PointCloud, name: str) -> np.ndarray | None:
    """``(N,)`` point attribute ``name`` fed to the flow network, or ``None`` when absent."""
    from register.io.weights import read_weights

    if not name or name not in cloud.point_data:
        return None
    try:
        return read_weights(cloud, name)
    except InputError as exc:
        raise InputError(
            f"pipeline.stages has 'flow': the flow model reads the point attribute '{name}': {exc}"
        ) from None


# How far beyond the bulk of a cloud a point may lie, in extents of the cloud's central 98 %.
# The matching normalises both clouds by their joint extent and runs in float32 (24-bit
# mantissa, ~6e-8 relative): one point 1e6 extents away squeezes the rest of the cloud into
# fewer than ~16 distinguishable positions per axis, and the result is noise or a failure
# deep in the solver (a NaN schedule length, a non-converging SVD). Such a point is an error
# in the file (a sentinel value, a unit slip), so it is refused with its row, not "handled".
MAX_SPREAD = 1e6


def _check_spread(cloud: PointCloud) -> None:
    """Refuse a cloud with points more than :data:`MAX_SPREAD` robust extents from its centre."""
    p = cloud.points
    lo, hi = np.percentile(p, [1, 99], axis=0)
    extent = float(np.linalg.norm(hi - lo))
    if extent == 0.0:  # the bulk is one point: nothing to resolve (a degenerate cloud)
        return
    distance = np.linalg.norm(p - np.median(p, axis=0), axis=1)
    far = distance > MAX_SPREAD * extent
    if far.any():
        i = int(np.argmax(distance))
        raise InputError(
            f"{cloud.label}: point {i} (0-based) at {p[i].tolist()} lies {distance[i] / extent:.2g} times "
            f"the extent of the cloud's central 98 % from its centre ({int(far.sum())} such point(s)); "
            "registration cannot resolve the rest of the cloud at that scale: remove the point or fix "
            "its units"
        )


def as_cloud(points, what: str) -> PointCloud:
    cloud = points if isinstance(points, PointCloud) else PointCloud(np.asarray(points), path=what)
    p = cloud.points
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise InputError(f"{cloud.label}: expected (N, 3) points (or (N, 2)), got shape {p.shape}")
    if len(p) < MIN_POINTS:
        raise InputError(f"{cloud.label}: {len(p)} points; registration needs at least {MIN_POINTS}")
    if not np.isfinite(p).all():
        raise InputError(f"{cloud.label}: coordinates contain NaN or Inf; clean the file first")
    _check_spread(cloud)
    return cloud


def check_extent(cfg: PipelineConfig, cloud: PointCloud, settings: str = "these settings") -> None:
    """Refuse ``cloud`` when its bounding-box diagonal (data units) lies outside
    ``[pipeline.min_extent, pipeline.max_extent]``: settings whose lengths are physical
    (``pipeline.units``) would run every blur, reach and kernel width off by the factor between
    the units. ``settings`` names them in the message (e.g. ``"the lung preset"``).

    Raises:
        InputError: naming the cloud, its extent, the expected range and the unit.
    """
    lo, hi = cfg.pipeline.min_extent, cfg.pipeline.max_extent
    if lo <= 0 and math.isinf(hi):
        return
    p = cloud.points
    extent = float(np.linalg.norm(p.max(0) - p.min(0)))
    if lo <= extent <= hi:
        return
    unit = cfg.pipeline.units or "data units"
    raise InputError(
        f"{cloud.label} spans {extent:.3g} units (bounding-box diagonal), but the units of {settings} are "
        f"{unit}, in which such clouds span {lo:g}-{hi:g} (pipeline.min_extent, max_extent): "
        f"rescale the points to {unit}, or use settings without units (preset default)"
    )


def match_classes(src: PointCloud, tgt: PointCloud, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``(N,)`` and ``(M,)`` int64 classes of label-aware matching (``pipeline.labels``), or
    ``None`` when ``name`` is empty.

    Raises:
        InputError: a cloud lacks the attribute, or it is not one integer per point.
    """
    if not name:
        return None
    out = []
    for cloud in (src, tgt):
        if name not in cloud.point_data:
            have = ", ".join(sorted(cloud.point_data)) or "none"
            raise InputError(
                f"{cloud.label}: no point attribute '{name}' for pipeline.labels (attributes: {have}); "
                "give both clouds the label attribute, or match without labels"
            )
        values = np.asarray(cloud.point_data[name], dtype=np.float64)
        if values.ndim != 1 or not np.isfinite(values).all() or (values != np.round(values)).any():
            raise InputError(
                f"{cloud.label}: attribute '{name}' must hold one integer label per point for pipeline.labels"
            )
        out.append(values.astype(np.int64))
    shared = np.intersect1d(out[0], out[1])
    if len(shared) == 0:
        raise InputError(
            f"pipeline.labels = {name!r}: the source's labels {sorted(set(out[0].tolist()))[:8]} and the target's "
            f"{sorted(set(out[1].tolist()))[:8]} have none in common; nothing could match"
        )
    return out[0], out[1]
