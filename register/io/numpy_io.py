"""NumPy files: ``.npy`` (one ``(N, 3)`` or ``(N, 2)`` array) and ``.npz`` (points + attributes).

``.npz`` layout: key ``points`` (or the only array in the file) holds the coordinates; ``faces``
(``(F, k)`` integers) and ``lines`` (``(L, 2)`` integers) are optional; every other array whose
first dimension is N and which has 1 or 2 dimensions becomes a point attribute (others are
ignored). Pickled (object) arrays are never loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import fail

_RESERVED = ("points", "faces", "lines")
_CORRUPT_FIX = "The file is truncated or corrupt; re-create it with numpy.save / numpy.savez"
# numpy's loaders raise many exception types on corrupt input (ValueError, EOFError, zipfile and
# zlib errors, RuntimeError for "encrypted" zip members, tokenize errors from a mangled header...)
_LOAD_ERRORS = (Exception,)


def read_npy(path: Path) -> PointCloud:
    """Read an ``.npy`` file holding an ``(N, 3)`` or ``(N, 2)`` numeric array.

    Raises:
        InputError: pickled/object data, not numeric, wrong shape, truncated file.
    """
    try:
        with open(path, "rb") as f:
            arr = np.load(f, allow_pickle=False)
    except _LOAD_ERRORS as exc:
        raise fail(path, f"cannot load the .npy array ({_reason(exc)})", _CORRUPT_FIX) from exc
    return PointCloud(_points_array(arr, path, "the array"), {}, None, None, str(path))


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "pickle" in text.lower():
        return "it holds Python objects, which are never loaded for safety"
    return text or type(exc).__name__


def _points_array(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Check that ``arr`` is an ``(N, 3)`` or ``(N, 2)`` real array and return it as float64."""
    if arr.dtype.kind not in "biuf":
        raise fail(
            path, f"{what} has dtype {arr.dtype}, not real numbers", "Save the points as a float array"
        )
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise fail(
            path,
            f"wrong number of columns: {what} has shape {arr.shape}, expected (N, 3) or (N, 2)",
            "Save the points as an (N, 3) array (attributes go in a .npz file)",
        )
    return arr.astype(np.float64)


def read_npz(path: Path) -> PointCloud:
    """Read an ``.npz`` archive (see the module docstring for its layout).

    Raises:
        InputError: no ``points`` key among several arrays, bad shapes, pickled data, corrupt archive.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except _LOAD_ERRORS as exc:
        raise fail(path, f"cannot load the .npz archive ({_reason(exc)})", _CORRUPT_FIX) from exc
    key = _points_key(arrays, path)
    points = _points_array(arrays[key], path, f"array '{key}'")
    faces = _cells(arrays, "faces", path)
    lines = _cells(arrays, "lines", path)
    point_data = {
        name: arr
        for name, arr in arrays.items()
        if name not in (key, *_RESERVED) and arr.ndim in (1, 2) and len(arr) == len(points)
    }
    return PointCloud(points, point_data, faces, lines, str(path))


def _points_key(arrays: dict[str, np.ndarray], path: Path) -> str:
    if "points" in arrays:
        return "points"
    if len(arrays) == 1:
        return next(iter(arrays))
    keys = ", ".join(sorted(arrays)) or "none"
    raise fail(
        path,
        f"the archive has no 'points' array (arrays: {keys})",
        "Save the coordinates under the key 'points', e.g. numpy.savez(path, points=xyz, ...)",
    )


def _cells(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray | None:
    """``faces`` / ``lines`` as ``(F, k)`` int64, or ``None`` if absent or empty."""
    arr = arrays.get(key)
    if arr is None or arr.size == 0:
        return None
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or (key == "lines" and arr.shape[1] != 2):
        shape = "(L, 2)" if key == "lines" else "(F, k)"
        raise fail(
            path,
            f"array '{key}' has shape {arr.shape} and dtype {arr.dtype}",
            f"Store {key} as an {shape} integer array",
        )
    return arr.astype(np.int64)


def write_npy(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write the ``(N, D)`` float64 coordinates only (attributes and faces need ``.npz``).

    Raises:
        InputError: ``binary=False`` (``.npy`` is always binary).
    """
    if not binary:
        raise fail(path, ".npy files are always binary", "Use .xyz, .csv or .txt for a text file")
    with open(path, "wb") as f:
        np.save(f, cloud.points, allow_pickle=False)


def write_npz(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write points, attributes, faces and lines to a compressed ``.npz`` archive (exact).

    Raises:
        InputError: ``binary=False``, an attribute named like a reserved key, or a non-numeric
            attribute.
    """
    if not binary:
        raise fail(path, ".npz files are always binary", "Use .xyz, .csv or .txt for a text file")
    arrays = {"points": cloud.points}
    for name, arr in cloud.point_data.items():
        if name in _RESERVED:
            raise fail(
                path, f"point attribute '{name}' clashes with a reserved .npz key", "Rename the attribute"
            )
        if np.asarray(arr).dtype.kind not in "biuf":
            raise fail(path, f"point attribute '{name}' has dtype {arr.dtype}", "Convert it to numbers")
        arrays[name] = np.asarray(arr)
    if cloud.faces is not None:
        arrays["faces"] = np.asarray(cloud.faces, dtype=np.int64)
    if cloud.lines is not None:
        arrays["lines"] = np.asarray(cloud.lines, dtype=np.int64)
    with open(path, "wb") as f:
        np.savez_compressed(f, allow_pickle=False, **arrays)
