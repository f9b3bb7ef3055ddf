"""Faces and line segments of VTK cell arrays, shared by the legacy and the XML readers.

A cell array is VTK's ``offsets`` ``(n + 1,)`` (from 0) plus ``connectivity`` (point indices).
Polygons must all have the same size to become ``(F, k)`` faces (triangle strips are split into
triangles); lines and polylines become ``(L, 2)`` segments; vertex and volume cells are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.io._common import mixed_faces, segments, strips_to_triangles, uniform_cells

_FACE_TYPES = (5, 7, 9)  # VTK_TRIANGLE, VTK_POLYGON, VTK_QUAD
_STRIP_TYPE = 6
_LINE_TYPES = (3, 4)  # VTK_LINE, VTK_POLY_LINE
_VERTEX_TYPES = (1, 2)  # VTK_VERTEX, VTK_POLY_VERTEX: ignored


def uniform_faces(
    polys: tuple[np.ndarray, np.ndarray] | None, strips: tuple[np.ndarray, np.ndarray] | None, path: Path
) -> np.ndarray | None:
    """Uniform ``(F, k)`` faces from polygons plus triangulated strips, or ``None``."""
    parts = []
    if polys is not None:
        faces = uniform_cells(*polys, path)
        if faces is not None:
            parts.append(faces)
    if strips is not None and len(strips[0]) > 1:
        parts.append(strips_to_triangles(*strips))
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    sizes = sorted({p.shape[1] for p in parts})
    if len(sizes) > 1:
        raise mixed_faces(path, sizes[0], sizes[-1])
    return np.concatenate(parts)


def cells_by_type(
    offsets: np.ndarray, connectivity: np.ndarray, types: np.ndarray, path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Faces (polygons and strips) and line segments of mixed-type cells; other cells are ignored."""
    polys = _select(offsets, connectivity, np.isin(types, _FACE_TYPES))
    strips = _select(offsets, connectivity, types == _STRIP_TYPE)
    lines = _select(offsets, connectivity, np.isin(types, _LINE_TYPES))
    return uniform_faces(polys, strips, path), segments(*lines)


def _select(offsets: np.ndarray, connectivity: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cells where ``mask`` is true, as new offsets and connectivity."""
    sizes = np.diff(offsets)[mask]
    starts = offsets[:-1][mask]
    new_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    index = np.repeat(starts - new_offsets[:-1], sizes) + np.arange(new_offsets[-1])
    return new_offsets, np.asarray(connectivity, dtype=np.int64)[index]
