"""PLY (Stanford polygon format) reading, ASCII and binary (little / big endian), with a numpy parser.

Reading keeps every ``vertex`` property: ``x, y[, z]`` become the points (float64), every other
scalar property becomes an ``(N,)`` point attribute in its declared dtype, and consecutive
properties ``name_0 .. name_{k-1}`` are reassembled into one ``(N, k)`` attribute. A ``face``
element with a ``vertex_indices`` (or ``vertex_index``) list gives ``faces`` (uniform polygon
size only) and an ``edge`` element with ``vertex1``/``vertex2`` gives ``lines``. Other elements
are skipped.

The header is parsed by :mod:`register.io.ply_header`; files are written by
:mod:`register.io.ply_write`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import (
    CORRUPT_FIX,
    cast_values,
    check_bytes,
    check_end,
    fail,
    first_bad_token,
    merge_components,
    mixed_faces,
    truncated,
)
from register.io.ply_header import Element, Header, Property, parse_header

_FACE_LISTS = ("vertex_indices", "vertex_index")


def read_ply(path: Path) -> PointCloud:
    """Read a PLY file (ASCII or binary) into a :class:`PointCloud` (not yet validated).

    Raises:
        InputError: not a PLY file, bad header, truncated data, mixed face sizes.
    """
    data = path.read_bytes()
    header = parse_header(data, path)
    if header.byte_order is None:
        arrays = _read_ascii_body(data, header, path)
    else:
        arrays = _read_binary_body(data, header, path)
    return _build_cloud(arrays, header, path)


# -- binary


@dataclass(frozen=True)
class _Mixed:
    """Marks an element whose list properties vary in length (sizes ``smallest..largest``)."""

    smallest: int
    largest: int


_Arrays = dict[str, "dict[str, np.ndarray] | _Mixed"]


def _read_binary_body(data: bytes, header: Header, path: Path) -> _Arrays:
    """Arrays of every element, by element name (:class:`_Mixed` for variable-size lists)."""
    offset = header.body_start
    arrays: _Arrays = {}
    for element in header.elements:
        arrays[element.name], offset = _binary_element(data, offset, element, header.byte_order or "<", path)
    check_end(path, data, offset, "records")
    return arrays


def _binary_element(
    data: bytes, offset: int, element: Element, order: str, path: Path
) -> tuple[dict[str, np.ndarray] | _Mixed, int]:
    """Read one element at ``offset``; returns its arrays and the offset after it.

    Fast path: list lengths are taken from the first record and checked on all records. If they
    vary, records are walked one by one to find the size range and where the element ends.
    The record count is first checked against the bytes left, at the smallest record size
    (every list empty), so neither path allocates or loops beyond the end of the file.
    """
    if element.count == 0:
        return _empty_columns(element), offset
    smallest = sum(
        p.dtype.itemsize if p.count_dtype is None else p.count_dtype.itemsize for p in element.properties
    )
    check_bytes(
        path,
        element.count * smallest,
        len(data) - offset,
        f"the header declares {element.count} '{element.name}' records of at least {smallest} bytes each",
    )
    lengths = _first_record_lengths(data, offset, element, order, path)
    dtype = _record_dtype(element, order, lengths)
    end = offset + element.count * dtype.itemsize
    if end <= len(data):
        records = np.frombuffer(data, dtype, element.count, offset)
        if all((records[_count_field(i)] == k).all() for i, k in lengths.items()):
            return _record_columns(records, element), end
    elif not lengths:
        raise truncated(path, _short_message(element, len(data) - offset, end - offset))
    return _walk_records(data, offset, element, order, path)


def _empty_columns(element: Element) -> dict[str, np.ndarray]:
    return {p.name: np.empty((0,) if p.count_dtype is None else (0, 0), p.dtype) for p in element.properties}


def _first_record_lengths(
    data: bytes, offset: int, element: Element, order: str, path: Path
) -> dict[int, int]:
    """Lengths of the list properties (by property index) in the record at ``offset``."""
    lengths: dict[int, int] = {}
    pos = offset
    for i, prop in enumerate(element.properties):
        if prop.count_dtype is None:
            pos += prop.dtype.itemsize
            continue
        n = _read_count(data, pos, prop, order, path, element)
        lengths[i] = n
        pos += prop.count_dtype.itemsize + n * prop.dtype.itemsize
    return lengths


def _read_count(data: bytes, pos: int, prop: Property, order: str, path: Path, element: Element) -> int:
    """The list length stored at byte ``pos``."""
    count_dtype = prop.count_dtype.newbyteorder(order)  # type: ignore[union-attr]
    if pos + count_dtype.itemsize > len(data):
        raise truncated(path, f"the data ends inside the '{element.name}' element")
    n = int(np.frombuffer(data, count_dtype, 1, pos)[0])
    if n < 0:
        raise fail(
            path, f"negative list length in the '{element.name}' element", "The file is corrupt; re-export it"
        )
    start = pos + count_dtype.itemsize
    check_bytes(
        path,
        n * prop.dtype.itemsize,
        len(data) - start,
        f"a list of the '{element.name}' element declares {n} items",
    )
    return n


def _record_dtype(element: Element, order: str, lengths: dict[int, int]) -> np.dtype:
    """Packed structured dtype of one record; a list becomes a count field plus ``(k,)`` items."""
    fields: list[tuple] = []
    for i, prop in enumerate(element.properties):
        if prop.count_dtype is None:
            fields.append((prop.name, prop.dtype.newbyteorder(order)))
        else:
            fields.append((_count_field(i), prop.count_dtype.newbyteorder(order)))
            fields.append((prop.name, prop.dtype.newbyteorder(order), (lengths[i],)))
    return np.dtype(fields)


def _count_field(i: int) -> str:
    """Name of the list-length field of property ``i`` (a space: no PLY property can clash)."""
    return f"count {i}"


def _record_columns(records: np.ndarray, element: Element) -> dict[str, np.ndarray]:
    """Copy each property out of the records, in native byte order."""
    return {p.name: records[p.name].astype(p.dtype.newbyteorder("=")) for p in element.properties}


def _walk_records(data: bytes, offset: int, element: Element, order: str, path: Path) -> tuple[_Mixed, int]:
    """Walk the records one by one (slow; only for variable-size lists): size range and end offset."""
    pos = offset
    sizes: set[int] = set()
    for _ in range(element.count):
        for prop in element.properties:
            if prop.count_dtype is None:
                pos += prop.dtype.itemsize
                continue
            n = _read_count(data, pos, prop, order, path, element)
            sizes.add(n)
            pos += prop.count_dtype.itemsize + n * prop.dtype.itemsize
        if pos > len(data):
            raise truncated(path, f"the data ends inside the '{element.name}' element")
    return _Mixed(min(sizes), max(sizes)), pos


def _short_message(element: Element, available: int, needed: int) -> str:
    return (
        f"the header declares {element.count} '{element.name}' records ({needed} bytes) "
        f"but only {max(available, 0)} bytes of data follow"
    )


# -- ASCII


def _read_ascii_body(data: bytes, header: Header, path: Path) -> _Arrays:
    """Arrays of every element from an ASCII body (one record per line, blank lines ignored)."""
    try:
        text = data[header.body_start :].decode("ascii")
    except UnicodeDecodeError as exc:
        raise fail(
            path, "the ASCII PLY body contains non-ASCII bytes", "The file is corrupt; re-export it"
        ) from exc
    numbered = enumerate(text.splitlines(), start=header.n_lines + 1)
    lines = [(number, line.split()) for number, line in numbered if line.strip()]
    arrays: _Arrays = {}
    cursor = 0
    for element in header.elements:
        rows = lines[cursor : cursor + element.count]
        if len(rows) < element.count:
            raise truncated(
                path,
                f"the header declares {element.count} '{element.name}' records "
                f"but only {len(rows)} lines follow",
            )
        arrays[element.name] = _ascii_element(rows, element, path)
        cursor += element.count
    if cursor < len(lines):
        raise fail(
            path,
            f"{len(lines) - cursor} more lines follow the records the header declares (from line "
            f"{lines[cursor][0]}); its counts are too small",
            CORRUPT_FIX,
        )
    return arrays


def _ascii_element(
    rows: list[tuple[int, list[str]]], element: Element, path: Path
) -> dict[str, np.ndarray] | _Mixed:
    """Parse the text records of one element (``rows``: line number and tokens)."""
    if not rows:
        return _empty_columns(element)
    spans = _ascii_spans(rows[0], element, path)
    width = spans[-1][1] if spans else 0
    if any(len(tokens) != width for _, tokens in rows):
        return _ascii_mixed(rows, element, path, width)
    values = _parse_numbers(rows, path)
    for prop, (start, stop) in zip(element.properties, spans, strict=True):
        if prop.count_dtype is not None and (values[:, start - 1] != stop - start).any():
            return _ascii_mixed(rows, element, path, width)
    return {
        prop.name: cast_values(
            values[:, start] if prop.count_dtype is None else values[:, start:stop],
            prop.dtype,
            path,
            f"property '{prop.name}' of element '{element.name}'",
        )
        for prop, (start, stop) in zip(element.properties, spans, strict=True)
    }


def _ascii_spans(row: tuple[int, list[str]], element: Element, path: Path) -> list[tuple[int, int]]:
    """Token range ``(start, stop)`` of each property in one line (list lengths read from it)."""
    number, tokens = row
    spans: list[tuple[int, int]] = []
    pos = 0
    for prop in element.properties:
        if prop.count_dtype is None:
            spans.append((pos, pos + 1))
            pos += 1
            continue
        try:
            n = int(tokens[pos])
        except (IndexError, ValueError):
            raise fail(
                path,
                f"line {number}: missing or bad list length in the '{element.name}' element",
                "Fix the file",
            ) from None
        if n < 0:
            raise fail(
                path, f"line {number}: negative list length in the '{element.name}' element", CORRUPT_FIX
            )
        spans.append((pos + 1, pos + 1 + n))
        pos += 1 + n
    return spans


def _ascii_mixed(rows: list[tuple[int, list[str]]], element: Element, path: Path, width: int) -> _Mixed:
    """Check every line's own structure (slow path) and return the list size range."""
    has_lists = any(p.count_dtype is not None for p in element.properties)
    sizes: set[int] = set()
    for row in rows:
        spans = _ascii_spans(row, element, path)
        need = spans[-1][1] if spans else 0
        if not has_lists or len(row[1]) != need:
            expected = need if has_lists else width
            raise fail(
                path,
                f"line {row[0]} has {len(row[1])} values but the '{element.name}' record needs {expected}",
                "Fix or re-export the file",
            )
        sizes.update(
            stop - start
            for prop, (start, stop) in zip(element.properties, spans, strict=True)
            if prop.count_dtype
        )
    return _Mixed(min(sizes), max(sizes))


def _parse_numbers(rows: list[tuple[int, list[str]]], path: Path) -> np.ndarray:
    """``(R, C)`` float64 values of equally long token rows."""
    tokens = [t for _, t in rows]
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        i, j, token = first_bad_token(tokens, float)
        raise fail(
            path, f"line {rows[i][0]}, value {j + 1}: {token!r} is not a number", "Fix the file"
        ) from None


# -- assembling


def _build_cloud(arrays: _Arrays, header: Header, path: Path) -> PointCloud:
    """Points, attributes, faces and lines from the element arrays."""
    vertex = arrays.get("vertex")
    if vertex is None:
        raise fail(
            path, "the PLY file has no 'vertex' element", "Save the points as a 'vertex' element with x, y, z"
        )
    if isinstance(vertex, _Mixed):
        raise fail(path, "the PLY vertex element has lists of varying length", "Save one value per property")
    if "x" not in vertex or "y" not in vertex:
        raise fail(
            path, "the PLY 'vertex' element has no 'x' and 'y' properties", "Name the coordinates x, y, z"
        )
    axes = ("x", "y", "z") if "z" in vertex else ("x", "y")
    points = np.column_stack([vertex[a].astype(np.float64) for a in axes]).reshape(-1, len(axes))
    point_data = merge_components([(k, v) for k, v in vertex.items() if k not in axes])
    return PointCloud(points, point_data, _faces(arrays, header, path), _edges(arrays, path), str(path))


def _faces(arrays: _Arrays, header: Header, path: Path) -> np.ndarray | None:
    """``(F, k)`` int64 faces from the ``face`` element's vertex list, or ``None``."""
    element = next((e for e in header.elements if e.name == "face"), None)
    if element is None or element.count == 0:
        return None
    key = next((p.name for p in element.properties if p.name in _FACE_LISTS and p.count_dtype), None)
    face = arrays["face"]
    if key is None:
        return None
    if isinstance(face, _Mixed):
        raise mixed_faces(path, face.smallest, face.largest, "faces")
    faces = _indices(face[key], f"the face property '{key}'", path)
    if faces.shape[1] == 0:
        raise fail(path, "its faces have no vertices", CORRUPT_FIX)
    return faces


def _edges(arrays: _Arrays, path: Path) -> np.ndarray | None:
    """``(L, 2)`` int64 segments from an ``edge`` element with ``vertex1``/``vertex2``, or ``None``."""
    edge = arrays.get("edge")
    if (
        not isinstance(edge, dict)
        or "vertex1" not in edge
        or "vertex2" not in edge
        or len(edge["vertex1"]) == 0
    ):
        return None
    ends = [_indices(edge[name], f"the edge property '{name}'", path) for name in ("vertex1", "vertex2")]
    if any(end.ndim != 1 for end in ends):
        raise fail(path, "the edge properties vertex1 / vertex2 are lists, not single indices", CORRUPT_FIX)
    return np.column_stack(ends)


def _indices(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    """Vertex indices as int64; refuses a floating-point index type (it would be truncated)."""
    if values.dtype.kind not in "iu":
        raise fail(path, f"{what} has type {values.dtype.name}, not an integer type", CORRUPT_FIX)
    return values.astype(np.int64)
