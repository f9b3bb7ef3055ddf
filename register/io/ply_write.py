"""PLY writing: binary (little or big endian) or ASCII, every point attribute kept.

The header lists the ``vertex`` element (``x, y[, z]`` as ``double``, then one property per
attribute column), a ``face`` element when there are faces and an ``edge`` element when there
are lines; it is read back by :mod:`register.io.ply`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import check_plain_names, fail, format_rows, split_components

_TYPE_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint"}
_TYPE_NAMES.update({"f4": "float", "f8": "double"})


def write_ply(path: Path, cloud: PointCloud, *, binary: bool = True, byte_order: str = "<") -> None:
    """Write ``cloud`` as PLY: binary little endian by default (``byte_order=">"`` for big endian).

    Coordinates are written as ``double`` (exact); attributes keep their dtype where PLY has one
    (int64 becomes int32 when the values fit, else double; bool becomes uchar); ``(N, k)``
    attributes become properties ``name_0 .. name_{k-1}``. Faces go to a ``face`` element
    (``vertex_indices``), lines to an ``edge`` element (``vertex1``, ``vertex2``).

    Raises:
        InputError: an attribute PLY cannot store (bad name, dtype or shape).
    """
    axes = ["x", "y", "z"][: cloud.points.shape[1]]
    columns = [(a, cloud.points[:, i]) for i, a in enumerate(axes)]
    columns += split_components(cloud.point_data, path, reserved=axes)
    check_plain_names([name for name, _ in columns], path)
    typed = [(name, *_ply_column(arr, name, path)) for name, arr in columns]
    faces = None if cloud.faces is None or len(cloud.faces) == 0 else np.asarray(cloud.faces)
    lines = None if cloud.lines is None or len(cloud.lines) == 0 else np.asarray(cloud.lines)
    header = _header_text(typed, len(cloud), faces, lines, binary, byte_order)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            _write_binary_body(f, typed, faces, lines, byte_order)
        else:
            _write_ascii_body(f, typed, faces, lines)


def _ply_column(arr: np.ndarray, name: str, path: Path) -> tuple[str, np.ndarray]:
    """PLY type name and the column converted to a dtype PLY can hold."""
    arr = np.asarray(arr)
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.uint8)
    elif kind in "iu" and arr.dtype.itemsize == 8:
        arr = _narrow_int64(arr)
    elif kind == "f" and arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    elif kind not in "iuf":
        raise fail(
            path,
            f"point attribute '{name}' has dtype {arr.dtype}, which PLY cannot store",
            "Convert it to numbers",
        )
    code = arr.dtype.newbyteorder("=").str[1:]
    return _TYPE_NAMES[code], arr


def _narrow_int64(arr: np.ndarray) -> np.ndarray:
    """int64/uint64 -> int32/uint32 if every value fits, else float64."""
    target = np.int32 if arr.dtype.kind == "i" else np.uint32
    info = np.iinfo(target)
    if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max):
        return arr.astype(target)
    return arr.astype(np.float64)


def _header_text(
    typed: list[tuple[str, str, np.ndarray]],
    n: int,
    faces: np.ndarray | None,
    lines: np.ndarray | None,
    binary: bool,
    byte_order: str,
) -> str:
    fmt = "ascii" if not binary else ("binary_big_endian" if byte_order == ">" else "binary_little_endian")
    out = ["ply", f"format {fmt} 1.0", "comment written by register", f"element vertex {n}"]
    out += [f"property {type_name} {name}" for name, type_name, _ in typed]
    if faces is not None:
        count_type = "uchar" if faces.shape[1] < 256 else "int"
        out += [f"element face {len(faces)}", f"property list {count_type} int vertex_indices"]
    if lines is not None:
        out += [f"element edge {len(lines)}", "property int vertex1", "property int vertex2"]
    out.append("end_header")
    return "\n".join(out) + "\n"


def _write_binary_body(f, typed, faces, lines, byte_order: str) -> None:
    """Vertex records, then faces (count + indices), then edges, packed in ``byte_order``."""
    dtype = np.dtype([(f"c{i}", arr.dtype.newbyteorder(byte_order)) for i, (_, _, arr) in enumerate(typed)])
    records = np.empty(len(typed[0][2]), dtype)
    for i, (_, _, arr) in enumerate(typed):
        records[f"c{i}"] = arr
    f.write(records.tobytes())
    if faces is not None:
        k = faces.shape[1]
        count = np.dtype("u1") if k < 256 else np.dtype("i4").newbyteorder(byte_order)
        face_dtype = np.dtype([("n", count), ("v", np.dtype("i4").newbyteorder(byte_order), (k,))])
        face_records = np.empty(len(faces), face_dtype)
        face_records["n"] = k
        face_records["v"] = faces
        f.write(face_records.tobytes())
    if lines is not None:
        f.write(np.asarray(lines, dtype=np.dtype("i4").newbyteorder(byte_order)).tobytes())


def _write_ascii_body(f, typed, faces, lines) -> None:
    """One text line per vertex, face and edge."""
    f.write(format_rows([arr for _, _, arr in typed], " ").encode("ascii"))
    if faces is not None:
        cols = [np.full(len(faces), faces.shape[1])] + [faces[:, j] for j in range(faces.shape[1])]
        f.write(format_rows(cols, " ").encode("ascii"))
    if lines is not None:
        f.write(format_rows([lines[:, 0], lines[:, 1]], " ").encode("ascii"))
