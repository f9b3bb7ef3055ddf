"""PCD (Point Cloud Library format), ``DATA ascii``, ``binary`` and ``binary_compressed``.

Fields ``x, y[, z]`` become the points (float64); every other field becomes a point attribute
in its declared dtype, ``(N,)`` for ``COUNT 1`` and ``(N, COUNT)`` otherwise. Padding fields
named ``_`` are skipped. ``binary_compressed`` (LZF) is decompressed in pure Python.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import (
    cast_values,
    check_bytes,
    check_end,
    check_memory,
    check_plain_names,
    check_tokens,
    check_unique_names,
    fail,
    first_bad_token,
    format_rows,
    header_count,
    truncated,
)

_TYPES = {
    ("I", 1): "i1",
    ("I", 2): "i2",
    ("I", 4): "i4",
    ("I", 8): "i8",
    ("U", 1): "u1",
    ("U", 2): "u2",
    ("U", 4): "u4",
    ("U", 8): "u8",
    ("F", 4): "f4",
    ("F", 8): "f8",
}
_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS")
_DATA_LINE = re.compile(rb"^DATA[ \t]+(\S+)[ \t]*(?:\r?\n|$)", re.MULTILINE)
_FIX = "Fix the header or re-save the file (e.g. with pcl_convert_pcd_ascii_binary)"
_DIGITS = re.compile(r"[0-9]{1,9}")
# LZF's densest code is a 3-byte back reference expanding to 264 bytes: at most 88 output bytes
# per input byte. A compressed block claiming more is a lie, refused before decompressing.
_LZF_MAX_RATIO = 88


@dataclass(frozen=True)
class _Field:
    """One PCD field: name, little-endian dtype and number of components (COUNT)."""

    name: str
    dtype: np.dtype
    count: int


@dataclass(frozen=True)
class _Header:
    fields: tuple[_Field, ...]
    points: int
    data: str  # ascii, binary or binary_compressed
    body_start: int
    n_lines: int


# ----------------------------------------------------------------------------------------------
# reading


def read_pcd(path: Path) -> PointCloud:
    """Read a PCD file into a :class:`PointCloud` (not yet validated).

    Raises:
        InputError: not a PCD file, bad header, truncated or corrupt data.
    """
    data = path.read_bytes()
    header = _parse_header(data, path)
    if header.data == "ascii":
        columns = _read_ascii(data, header, path)
    elif header.data == "binary":
        columns = _read_binary(data, header, path)
    else:
        columns = _read_compressed(data, header, path)
    return _build_cloud(header.fields, columns, path)


def _parse_header(data: bytes, path: Path) -> _Header:
    """Parse the text header up to and including the ``DATA`` line."""
    match = _DATA_LINE.search(data)
    if match is None:
        raise fail(
            path, "not a PCD file (no 'DATA' header line found)", "Check the file type and its extension"
        )
    lines = data[: match.start()].decode("ascii", errors="replace").splitlines()
    values: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] not in _KEYS:
            raise fail(path, f"not a valid PCD header: unexpected line {number}: {line!r}", _FIX)
        if words[0] in values:
            raise fail(path, f"the PCD header has two {words[0]} lines (line {number})", _FIX)
        values[words[0]] = words[1:]
    kind = match.group(1).decode("ascii", errors="replace").lower()
    if kind not in ("ascii", "binary", "binary_compressed"):
        raise fail(
            path, f"unknown PCD data kind 'DATA {kind}'", "Use DATA ascii, binary or binary_compressed"
        )
    fields = _parse_fields(values, path)
    return _Header(fields, _point_count(values, path), kind, match.end(), len(lines) + 1)


def _parse_fields(values: dict[str, list[str]], path: Path) -> tuple[_Field, ...]:
    """Combine FIELDS, SIZE, TYPE and COUNT into :class:`_Field` entries."""
    names = values.get("FIELDS")
    if not names:
        raise fail(path, "the PCD header has no FIELDS line", _FIX)
    sizes, types = values.get("SIZE", []), values.get("TYPE", [])
    counts = values.get("COUNT", ["1"] * len(names))
    if not len(sizes) == len(types) == len(counts) == len(names):
        raise fail(
            path,
            f"the PCD header lists {len(names)} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE "
            f"and {len(counts)} COUNT entries",
            _FIX,
        )
    repeated = sorted(name for name, k in Counter(names).items() if k > 1 and name != "_")  # "_": padding
    if repeated:
        raise fail(path, f"the PCD FIELDS line names {', '.join(map(repr, repeated))} more than once", _FIX)
    fields = []
    for name, size, kind, count in zip(names, sizes, types, counts, strict=True):
        code = _TYPES.get((kind.upper(), int(size) if _DIGITS.fullmatch(size) else -1))
        if code is None or not _DIGITS.fullmatch(count) or int(count) < 1:
            raise fail(
                path, f"PCD field '{name}' has an unsupported TYPE/SIZE/COUNT {kind}/{size}/{count}", _FIX
            )
        fields.append(_Field(name, np.dtype("<" + code), int(count)))
    return tuple(fields)


def _point_count(values: dict[str, list[str]], path: Path) -> int:
    """POINTS, which must equal WIDTH * HEIGHT (HEIGHT defaults to 1); either may be absent.

    As in PCL, a header whose POINTS differs from WIDTH * HEIGHT is refused.
    """
    declared = {}
    for key in ("POINTS", "WIDTH", "HEIGHT"):
        if key in values:
            if len(values[key]) != 1:
                raise fail(path, f"the PCD {key} line should hold one number, not {values[key]!r}", _FIX)
            declared[key] = header_count(path, values[key][0], f"the PCD {key}")
    if "POINTS" not in declared and "WIDTH" not in declared:
        raise fail(path, "the PCD header has no POINTS (or WIDTH/HEIGHT) line", _FIX)
    grid = declared["WIDTH"] * declared.get("HEIGHT", 1) if "WIDTH" in declared else None
    points = declared.get("POINTS", grid)
    if grid is not None and points != grid:
        raise fail(
            path,
            f"the PCD header declares POINTS {points} but WIDTH {declared['WIDTH']} x HEIGHT "
            f"{declared.get('HEIGHT', 1)} = {grid}",
            _FIX,
        )
    return points


def _record_dtype(fields: tuple[_Field, ...]) -> np.dtype:
    """Packed little-endian record of all fields (named ``f0, f1, ...``)."""
    return np.dtype([(f"f{i}", f.dtype, (f.count,)) for i, f in enumerate(fields)])


def _record_size(fields: tuple[_Field, ...]) -> int:
    """Bytes of one point (all fields, all components), as an exact Python int."""
    return sum(f.dtype.itemsize * f.count for f in fields)


def _empty_columns(fields: tuple[_Field, ...]) -> list[np.ndarray]:
    return [np.empty((0, f.count), f.dtype.newbyteorder("=")) for f in fields]


def _read_binary(data: bytes, header: _Header, path: Path) -> list[np.ndarray]:
    """One ``(N, COUNT)`` array per field from packed records (exactly POINTS of them)."""
    record = _record_size(header.fields)
    needed = header.points * record
    what = f"the header declares {header.points} points of {record} bytes"
    check_bytes(path, needed, len(data) - header.body_start, what)
    check_end(path, data, header.body_start + needed, "points")
    if header.points == 0:
        return _empty_columns(header.fields)
    records = np.frombuffer(data, _record_dtype(header.fields), header.points, header.body_start)
    return [records[f"f{i}"].copy() for i in range(len(header.fields))]


def _read_compressed(data: bytes, header: _Header, path: Path) -> list[np.ndarray]:
    """One ``(N, COUNT)`` array per field from LZF-compressed, field-by-field (SoA) data.

    The block starts with two little-endian uint32: its compressed and uncompressed sizes. The
    uncompressed size must equal POINTS x the record size, the compressed block must fit in
    the file and end it, and LZF's largest expansion (88x) bounds what it may claim to expand
    to, all before anything is decompressed.
    """
    start = header.body_start
    if len(data) < start + 8:
        raise truncated(path, "the compressed block has no size header")
    compressed, raw_size = struct.unpack_from("<II", data, start)
    expected = header.points * _record_size(header.fields)
    if raw_size != expected:
        raise fail(path, f"the compressed block holds {raw_size} bytes, expected {expected}", _FIX)
    check_bytes(path, compressed, len(data) - start - 8, "the compressed block declares its size")
    check_end(path, data, start + 8 + compressed, "compressed block")
    if raw_size > _LZF_MAX_RATIO * compressed:
        raise fail(
            path,
            f"the compressed block claims to expand {compressed} bytes to {raw_size}, more than LZF can",
            _FIX,
        )
    check_memory(path, raw_size, "the compressed block")
    if header.points == 0:
        return _empty_columns(header.fields)
    raw = lzf_decompress(data[start + 8 : start + 8 + compressed], raw_size, path)
    columns, pos = [], 0
    for f in header.fields:
        size = header.points * f.count * f.dtype.itemsize
        columns.append(np.frombuffer(raw, f.dtype, header.points * f.count, pos).reshape(-1, f.count).copy())
        pos += size
    return columns


def lzf_decompress(src: bytes, size: int, path: Path | str = "<data>") -> bytes:
    """Decompress LZF data (liblzf format as used by PCL) to exactly ``size`` bytes.

    The output never grows past ``size`` (a corrupt stream stops there), and overlapping back
    references (runs) are copied a period at a time, so the time is linear in ``size``.

    Raises:
        InputError: the stream is corrupt or does not decompress to ``size`` bytes.
    """
    out = bytearray()
    i, n = 0, len(src)
    try:
        while i < n:
            ctrl = src[i]
            i += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                if i + ctrl + 1 > n:
                    raise IndexError
                out += src[i : i + ctrl + 1]
                i += ctrl + 1
            else:  # back reference: length (3 bits, 7 = one more byte) + 2, offset (13 bits) + 1
                length = ctrl >> 5
                if length == 7:
                    length += src[i]
                    i += 1
                ref = len(out) - ((ctrl & 0x1F) << 8) - src[i] - 1
                i += 1
                _copy_back(out, ref, length + 2)
            if len(out) > size:
                break
    except IndexError:
        raise truncated(path, "the LZF-compressed data is corrupt") from None
    if len(out) != size:
        raise truncated(path, f"the LZF data decompresses to {len(out)} or more bytes instead of {size}")
    return bytes(out)


def _copy_back(out: bytearray, ref: int, length: int) -> None:
    """Append ``length`` bytes copied from ``out[ref:]`` (the source may overlap the output).

    An overlapping copy repeats the last ``len(out) - ref`` bytes (byte-wise copy semantics).
    """
    end = len(out)
    if ref < 0:
        raise IndexError
    if ref + length <= end:
        out += out[ref : ref + length]
        return
    period = out[ref:end]
    out += (period * (length // len(period) + 1))[:length]


def _read_ascii(data: bytes, header: _Header, path: Path) -> list[np.ndarray]:
    """One ``(N, COUNT)`` array per field from text rows (exactly POINTS non-blank lines)."""
    width = sum(f.count for f in header.fields)
    check_tokens(path, header.points * width, len(data) - header.body_start, "the header declares")
    text = data[header.body_start :].decode("ascii", errors="replace")
    numbered = enumerate(text.splitlines(), start=header.n_lines + 1)
    rows = [(number, line.split()) for number, line in numbered if line.strip()]
    if len(rows) < header.points:
        raise truncated(
            path, f"the header declares {header.points} points but only {len(rows)} data lines follow"
        )
    if len(rows) > header.points:
        raise fail(
            path,
            f"the header declares {header.points} points but {len(rows)} data lines follow "
            f"(from line {rows[0][0]})",
            "Fix POINTS, WIDTH and HEIGHT in the header (or remove the extra lines)",
        )
    if header.points == 0:
        return _empty_columns(header.fields)
    for number, tokens in rows:
        if len(tokens) != width:
            raise fail(path, f"line {number} has {len(tokens)} values but the header declares {width}", _FIX)
    tokens = [t for _, t in rows]
    try:
        values = np.array(tokens, dtype=np.float64).reshape(len(rows), width)
    except ValueError:
        i, j, token = first_bad_token(tokens, float)
        raise fail(path, f"line {rows[i][0]}, value {j + 1}: {token!r} is not a number", _FIX) from None
    columns, pos = [], 0
    for f in header.fields:
        columns.append(
            cast_values(values[:, pos : pos + f.count], f.dtype.newbyteorder("="), path, f"field '{f.name}'")
        )
        pos += f.count
    return columns


def _build_cloud(fields: tuple[_Field, ...], columns: list[np.ndarray], path: Path) -> PointCloud:
    """Points from x, y[, z]; every other (non-padding) field becomes an attribute."""
    by_name = {f.name: col for f, col in zip(fields, columns, strict=True) if f.name != "_"}
    if "x" not in by_name or "y" not in by_name:
        raise fail(path, "the PCD file has no 'x' and 'y' fields", "Name the coordinate fields x, y, z")
    axes = ("x", "y", "z") if "z" in by_name else ("x", "y")
    if any(by_name[a].shape[1] != 1 for a in axes):
        raise fail(path, "the PCD coordinate fields must have COUNT 1", _FIX)
    points = np.column_stack([by_name[a][:, 0].astype(np.float64) for a in axes]).reshape(-1, len(axes))
    point_data = {
        name: (col[:, 0] if col.shape[1] == 1 else col) for name, col in by_name.items() if name not in axes
    }
    return PointCloud(points, point_data, None, None, str(path))


# ----------------------------------------------------------------------------------------------
# writing

_CODES = {"i": "I", "u": "U", "f": "F"}


def write_pcd(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write ``cloud`` as PCD v0.7, ``DATA binary`` by default (``binary=False``: ``DATA ascii``).

    Coordinates are written as ``F 8`` (float64, exact); each attribute is one field in its own
    dtype (bool as ``U 1``, float16 as ``F 4``) with ``COUNT k`` for ``(N, k)`` arrays. Faces and
    lines are not stored (PCD has no place for them).

    Raises:
        InputError: an attribute PCD cannot store (bad name, dtype or shape).
    """
    axes = ["x", "y", "z"][: cloud.points.shape[1]]
    fields = [(a, cloud.points[:, i : i + 1]) for i, a in enumerate(axes)]
    fields += [(name, _pcd_column(arr, name, path)) for name, arr in cloud.point_data.items()]
    check_plain_names([name for name, _ in fields], path)
    check_unique_names([name for name, _ in fields], path)
    header = _header_text(fields, len(cloud), binary)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        if binary:
            records = np.empty(
                len(cloud), np.dtype([(f"f{i}", a.dtype, (a.shape[1],)) for i, (_, a) in enumerate(fields)])
            )
            for i, (_, arr) in enumerate(fields):
                records[f"f{i}"] = arr
            f.write(records.tobytes())
        else:
            f.write(format_rows([a[:, j] for _, a in fields for j in range(a.shape[1])], " ").encode("ascii"))


def _pcd_column(arr: np.ndarray, name: str, path: Path) -> np.ndarray:
    """The attribute as an ``(N, k)`` little-endian array of a dtype PCD can hold."""
    arr = np.asarray(arr)
    if arr.ndim > 2:
        raise fail(
            path,
            f"point attribute '{name}' has shape {arr.shape}, which cannot be written",
            "Reshape it to (N, k)",
        )
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind not in "iuf":
        raise fail(
            path,
            f"point attribute '{name}' has dtype {arr.dtype}, which PCD cannot store",
            "Convert it to numbers",
        )
    return arr.reshape(len(arr), -1).astype(arr.dtype.newbyteorder("<"))


def _header_text(fields: list[tuple[str, np.ndarray]], n: int, binary: bool) -> str:
    names = " ".join(name for name, _ in fields)
    sizes = " ".join(str(a.dtype.itemsize) for _, a in fields)
    types = " ".join(_CODES[a.dtype.kind] for _, a in fields)
    counts = " ".join(str(a.shape[1]) for _, a in fields)
    return (
        "# .PCD v0.7 - Point Cloud Data file format (written by register)\n"
        f"VERSION 0.7\nFIELDS {names}\nSIZE {sizes}\nTYPE {types}\nCOUNT {counts}\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {'binary' if binary else 'ascii'}\n"
    )
