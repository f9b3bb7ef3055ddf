"""Checks every cloud passes after reading (and before writing).

One function, :func:`check_cloud`, so that every format gives the same messages.
"""

from __future__ import annotations

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import fail


def check_cloud(cloud: PointCloud, min_points: int = 1) -> PointCloud:
    """Validate a freshly read cloud and return it unchanged.

    Checks, in order: 2 or 3 coordinate columns, at least one point, finite coordinates, at
    least ``min_points`` points, face and line indices in range.

    Args:
        cloud: the cloud; ``cloud.label`` (its path) names it in messages.
        min_points: the least number of points the caller can work with (at least 1 is enforced).

    Raises:
        InputError: naming the file, what is wrong and how to fix it.
    """
    label = cloud.label
    points = cloud.points
    if points.shape[1] not in (2, 3):
        raise fail(
            label,
            f"wrong number of columns: the points have {points.shape[1]} coordinates per row",
            "Give 3 coordinates (x y z) per point, or 2 for planar data",
        )
    if len(points) == 0:
        raise fail(label, "the file contains no points (empty cloud)", "Check that you passed the right file")
    _check_finite(points, label)
    needed = max(int(min_points), 1)
    if len(points) < needed:
        raise fail(
            label,
            f"the cloud has {len(points)} points but this step needs at least {needed} points",
            "Use a denser cloud or lower the requirement",
        )
    _check_cells(cloud.faces, len(points), label, "faces")
    _check_cells(cloud.lines, len(points), label, "lines")
    return cloud


def _check_finite(points: np.ndarray, label: str) -> None:
    """Refuse NaN/Inf coordinates, saying how many rows and the first (0-based) row index."""
    finite = np.isfinite(points)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.all(axis=1))
    n_nan = int(np.isnan(points).any(axis=1).sum())
    n_inf = int(np.isinf(points).any(axis=1).sum())
    raise fail(
        label,
        f"{len(bad_rows)} of {len(points)} points have NaN or Inf coordinates ({n_nan} with NaN, "
        f"{n_inf} with Inf); the first is row {int(bad_rows[0])} (0-based)",
        "Remove or repair those points, or read with drop_nan=True to drop them",
    )


def _check_cells(cells: np.ndarray | None, n_points: int, label: str, what: str) -> None:
    """Refuse faces/lines that are not a 2-D integer array of indices in ``[0, n_points)``."""
    if cells is None:
        return
    cells = np.asarray(cells)
    if cells.ndim != 2 or (cells.size and cells.dtype.kind not in "iu"):
        raise fail(
            label,
            f"{what} must be an (F, k) array of integer vertex indices, got shape {cells.shape} "
            f"and dtype {cells.dtype}",
            f"Store {what} as integer indices into the points",
        )
    if cells.size and (cells.min() < 0 or cells.max() >= n_points):
        raise fail(
            label,
            f"{what} refer to vertex indices {int(cells.min())}..{int(cells.max())} but the cloud has "
            f"{n_points} points",
            "The file is corrupt or its faces belong to another point set; re-export it",
        )


def drop_nonfinite(cloud: PointCloud) -> PointCloud:
    """The cloud without its points that have a NaN/Inf coordinate.

    Their attributes go with them; a face or line using one of them is dropped, the others are
    renumbered. ``dropped`` of the result counts the removed points.
    """
    keep = np.isfinite(cloud.points).all(axis=1)
    if keep.all():
        return cloud
    new_index = np.cumsum(keep) - 1  # old vertex index -> new one (valid where keep)

    def cells(arr: np.ndarray | None) -> np.ndarray | None:
        if arr is None or not len(arr):
            return arr
        arr = np.asarray(arr)
        if arr.ndim != 2 or arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= len(keep):
            return arr  # check_cloud refuses it with its own message
        arr = arr[keep[arr].all(axis=1)]
        return new_index[arr] if len(arr) else None

    data = {name: np.asarray(values)[keep] for name, values in cloud.point_data.items()}
    return PointCloud(
        cloud.points[keep],
        data,
        cells(cloud.faces),
        cells(cloud.lines),
        cloud.path,
        cloud.dropped + int((~keep).sum()),
    )
