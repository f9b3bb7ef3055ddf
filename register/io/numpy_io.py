"""NumPy files: ``.npy`` (one ``(N, 3)`` or ``(N, 2)`` array) and ``.npz`` (points + attributes).

``.npz`` layout: key ``points`` (or the only array in the file) holds the coordinates; ``faces``
(``(F, k)`` integers) and ``lines`` (``(L, 2)`` integers) are optional; every other numeric array
whose first dimension is N and which has 1 or 2 dimensions becomes a point attribute (other
arrays, and archive members that are not ``.npy`` files, are ignored). Pickled (object) arrays
are never loaded.

Both are read here rather than with ``np.load``: every ``.npy`` header (shape and dtype, see
the NPY format spec) is checked against the bytes that follow it before the array is
allocated, and every ``.npz`` member against its size in the zip directory, which in turn is
checked against its compressed size (deflate expands at most 1032 times) and the memory left.
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from register.core.pointcloud import PointCloud
from register.errors import InputError
from register.io._common import CORRUPT_FIX, check_memory, fail, truncated

_RESERVED = ("points", "faces", "lines")
_CORRUPT_FIX = "The file is truncated or corrupt; re-create it with numpy.save / numpy.savez"
# What zipfile and zlib raise on a corrupt archive: bad directory or CRC, a stream ending early,
# an "encrypted" member (RuntimeError), an unsupported feature (NotImplementedError).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    RuntimeError,
    NotImplementedError,
    ValueError,
    OSError,
)
# What numpy's NPY header parser raises on a mangled header (it falls back on tokenize).
_HEADER_ERRORS = (ValueError, TypeError, EOFError, SyntaxError, tokenize.TokenError, RecursionError)
_DEFLATE_MAX_RATIO = 1032  # deflate's largest expansion (258-byte matches in ~2 bits)


def read_npy(path: Path) -> PointCloud:
    """Read an ``.npy`` file holding an ``(N, 3)`` or ``(N, 2)`` numeric array.

    Raises:
        InputError: pickled/object data, not numeric, wrong shape, truncated file, a header
            declaring more or fewer bytes than the file holds.
    """
    with open(path, "rb") as f:
        arr = _read_array(f, os.fstat(f.fileno()).st_size, path, "the .npy array")
    return PointCloud(_points_array(arr, path, "the array"), {}, None, None, str(path))


def _read_array(f: BinaryIO, size: int, path: Path, what: str) -> np.ndarray:
    """Read one NPY-format array of exactly ``size`` bytes (header included) from ``f``.

    The header's shape x itemsize must account for every byte after the header: checked before
    the array is allocated, so a header claiming 10^12 rows allocates nothing.
    """
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):  # 3.0 only differs by a UTF-8 header (field names)
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown NPY format version {version[0]}.{version[1]}")
    except _HEADER_ERRORS as exc:
        raise fail(path, f"cannot load {what} (bad NPY header: {str(exc)[:120]})", _CORRUPT_FIX) from None
    if dtype.hasobject:
        raise fail(
            path,
            f"cannot load {what}: it holds Python objects, which are never loaded for safety",
            _CORRUPT_FIX,
        )
    if any(d < 0 for d in shape):
        raise fail(path, f"cannot load {what}: its header declares the shape {shape}", _CORRUPT_FIX)
    nbytes = math.prod(shape) * dtype.itemsize
    left = size - f.tell()
    if nbytes != left:
        problem = (
            f"{what} declares shape {shape} of {dtype} ({nbytes} bytes) but {left} bytes follow its header"
        )
        raise truncated(path, problem) if nbytes > left else fail(path, problem, CORRUPT_FIX)
    arr = np.empty(math.prod(shape), dtype)
    if nbytes and f.readinto(arr.view(np.uint8)) != nbytes:
        raise truncated(path, f"{what} ends early")
    return arr.reshape(shape[::-1]).T if fortran_order else arr.reshape(shape)


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


def read_npz(path: Path, *, points_key: str | None = None) -> PointCloud:
    """Read an ``.npz`` archive (see the module docstring for its layout).

    Args:
        path: the archive.
        points_key: the array holding the points (``pc1`` of a scene-flow pair), instead of
            ``points`` / the only array.

    Raises:
        InputError: no ``points`` key among several arrays (or no ``points_key``), bad shapes,
            pickled data, corrupt archive, sizes that do not add up, more data than memory allows.
    """
    with open(path, "rb") as f:  # outside the try: an unreadable file is an OSError for read_points
        try:
            with zipfile.ZipFile(f) as archive:
                arrays = _read_members(archive, path)
        except InputError:
            raise
        except _ZIP_ERRORS as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:120]}"
            raise fail(path, f"cannot load the .npz archive ({reason})", _CORRUPT_FIX) from None
    key = _points_key(arrays, path) if points_key is None else points_key
    if key not in arrays:
        raise fail(
            path,
            f"the archive has no array '{key}' (arrays: {', '.join(sorted(arrays)) or 'none'})",
            f"Write {path}:NAME with one of those names",
        )
    points = _points_array(arrays[key], path, f"array '{key}'")
    faces = _cells(arrays, "faces", path)
    lines = _cells(arrays, "lines", path)
    point_data = {
        name: arr
        for name, arr in arrays.items()
        if name not in (key, *_RESERVED)
        and arr.dtype.kind in "biuf"
        and arr.ndim in (1, 2)
        and len(arr) == len(points)
    }
    return PointCloud(points, point_data, faces, lines, str(path))


def _read_members(archive: zipfile.ZipFile, path: Path) -> dict[str, np.ndarray]:
    """Every ``.npy`` member as an array, keyed by its name without ``.npy``.

    Sizes are checked before anything is decompressed: a stored member's size must equal its
    compressed size, a deflated one's may not exceed 1032 times it, and all of them together
    must fit in the memory left.
    """
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[: -len(".npy")]
        what = f"member '{info.filename}'"
        if key in members:
            raise fail(path, f"the archive holds two members named '{info.filename}'", _CORRUPT_FIX)
        if info.compress_type == zipfile.ZIP_STORED:
            ok = info.file_size == info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            ok = info.file_size <= _DEFLATE_MAX_RATIO * info.compress_size + 64
        else:
            raise fail(
                path,
                f"{what} uses zip compression method {info.compress_type}",
                "Re-save it with numpy.savez",
            )
        if not ok:
            raise fail(
                path,
                f"{what} claims {info.file_size} bytes from {info.compress_size} compressed bytes",
                _CORRUPT_FIX,
            )
        members[key] = info
    check_memory(path, sum(info.file_size for info in members.values()), "the archive")
    arrays = {}
    for key, info in members.items():
        with archive.open(info) as f:
            arrays[key] = _read_array(f, info.file_size, path, f"member '{info.filename}'")
    return arrays


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
