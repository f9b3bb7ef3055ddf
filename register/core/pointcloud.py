"""The :class:`PointCloud` container shared by I/O, stages and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from register.errors import InputError


@dataclass
class PointCloud:
    """A point set with optional per-point attributes and faces.

    Attributes:
        points: ``(N, D)`` float64 coordinates in the user's units (D is 3, or 2 for
            planar data which the pipeline embeds in 3-D).
        point_data: per-point arrays, each ``(N,)`` or ``(N, k)``, keyed by name
            (e.g. ``"radius"``, ``"weights"``, ``"displacement"``).
        faces: ``(F, k)`` int64 vertex indices of polygons (0-based), or ``None``.
        lines: ``(L, 2)`` int64 vertex indices of line segments, or ``None``.
        path: the file the cloud came from, used in error messages (``None`` if made
            in memory).
        dropped: how many points of the file were removed on reading (NaN/Inf coordinates
            with ``read_points(..., drop_nan=True)``), 0 otherwise.
    """

    points: np.ndarray
    point_data: dict[str, np.ndarray] = field(default_factory=dict)
    faces: np.ndarray | None = None
    lines: np.ndarray | None = None
    path: str | None = None
    dropped: int = 0

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64)
        if self.points.ndim != 2:
            raise InputError(f"{self.label}: points must be an (N, 3) array, got shape {self.points.shape}")
        for name, arr in list(self.point_data.items()):
            arr = np.asarray(arr)
            if arr.shape[:1] != (len(self.points),):
                raise InputError(
                    f"{self.label}: point attribute '{name}' has {arr.shape[0] if arr.ndim else 0} rows "
                    f"but the cloud has {len(self.points)} points"
                )
            self.point_data[name] = arr

    @property
    def label(self) -> str:
        """How to name this cloud in messages: its file path, or ``<in-memory cloud>``."""
        return self.path or "<in-memory cloud>"

    def __len__(self) -> int:
        return len(self.points)

    def with_points(self, points: np.ndarray, **extra_data: np.ndarray) -> PointCloud:
        """A copy with new coordinates (same attributes and faces), plus extra attributes."""
        data = dict(self.point_data)
        data.update(extra_data)
        return PointCloud(points, data, self.faces, self.lines, self.path)
