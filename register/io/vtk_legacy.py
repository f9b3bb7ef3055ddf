"""Legacy VTK files (``.vtk``, ASCII or binary): read with a bounded numpy parser, written by VTK.

Reading gives the points, every numeric point-data array (``SCALARS``, ``VECTORS``, ``FIELD``
arrays, ...; also dataset-level ``FIELD`` arrays with one tuple per point), polygon faces when
they all have the same size (triangle strips are split into triangles) and polylines split
into ``(L, 2)`` segments. Vertex cells and volume cells are ignored; string arrays are skipped.
The XML formats (``.vtp`` / ``.vtu``) are in :mod:`register.io.vtk_xml`.

Legacy files are parsed here with numpy: VTK's own legacy reader returns a full-size mesh of
garbage (or drops arrays) for truncated files, printing only a warning, so every section is
checked against the size its header line declares, and every count a header line declares
against the bytes left, before anything is allocated or looped over (the values are read by
:class:`register.io.vtk_cursor.Cursor`).

Writing uses VTK (:mod:`register.io.vtk_backend`, which imports ``vtk``/``pyvista`` inside the
functions that need them): VTK 4.2 POLYDATA, binary by default, with the points, one vertex cell
per point, faces, lines and every point attribute (``displacement`` / ``normals`` as the active
``VECTORS`` / ``NORMALS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import (
    CORRUPT_FIX,
    check_bytes,
    fail,
    header_count,
    segments,
    truncated,
)
from register.io.vtk_backend import polydata, run_writer
from register.io.vtk_cells import cells_by_type, uniform_faces
from register.io.vtk_cursor import FIX, TYPES, Cursor

_STRING_TYPES = ("string", "utf8_string")
_DATASETS = ("POLYDATA", "UNSTRUCTURED_GRID", "STRUCTURED_GRID")
_CELL_KEYS = ("VERTICES", "LINES", "POLYGONS", "TRIANGLE_STRIPS", "CELLS")
_ATTRIBUTE_KEYS = (
    "SCALARS",
    "COLOR_SCALARS",
    "LOOKUP_TABLE",
    "VECTORS",
    "NORMALS",
    "TEXTURE_COORDINATES",
    "TENSORS",
    "TENSORS6",
    "FIELD",
    "GLOBAL_IDS",
    "PEDIGREE_IDS",
    "EDGE_FLAGS",
)
_ONCE = ("POINTS", *_CELL_KEYS, "CELL_TYPES", "POINT_DATA", "CELL_DATA")  # sections a file has at most once
_TRUNCATED_OR_FIX = "Re-export or re-download the file (if it is valid, save it as .vtp instead)"


# ----------------------------------------------------------------------------------------------
# legacy reading


@dataclass
class _Legacy:
    """What the body parser collects (local to one read)."""

    dataset: str
    points: np.ndarray | None = None
    point_count: int | None = None  # what POINT_DATA declares
    cells: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cell_types: np.ndarray | None = None
    point_arrays: list[tuple[str, np.ndarray]] = field(default_factory=list)
    field_arrays: list[tuple[str, np.ndarray]] = field(default_factory=list)


def read_legacy_vtk(path: Path) -> PointCloud:
    """Read a legacy ``.vtk`` file (ASCII or binary; POLYDATA, UNSTRUCTURED_GRID, STRUCTURED_GRID).

    Raises:
        InputError: not a legacy VTK file, unsupported dataset, truncated or corrupt sections,
            mixed polygon sizes.
    """
    data = path.read_bytes()
    cursor, dataset = _preamble(data, path)
    parsed = _parse_body(cursor, _Legacy(dataset), path)
    return _legacy_cloud(parsed, path)


def _preamble(data: bytes, path: Path) -> tuple[Cursor, str]:
    """Check the version line, title, ASCII/BINARY and DATASET lines."""
    if not data.startswith(b"# vtk DataFile"):
        raise fail(
            path, "not a legacy VTK file (no '# vtk DataFile Version' first line)", "Check the file type"
        )
    cursor = Cursor(data, 0, False, path)
    cursor.raw_line()  # version
    cursor.raw_line()  # title
    mode = (cursor.line() or [""])[0].upper()
    if mode not in ("ASCII", "BINARY"):
        raise fail(path, f"the third line should be ASCII or BINARY, got {mode!r}", FIX)
    cursor.binary = mode == "BINARY"
    words = cursor.line() or [""]
    if words[0].upper() != "DATASET" or len(words) < 2:
        raise fail(path, "no DATASET line after the header", FIX)
    dataset = words[1].upper()
    if dataset not in _DATASETS:
        raise fail(
            path,
            f"DATASET {dataset} is not supported (only POLYDATA, UNSTRUCTURED_GRID, STRUCTURED_GRID)",
            "Convert it to a point set first (e.g. in ParaView, save as .vtp)",
        )
    return cursor, dataset


def _parse_body(cursor: Cursor, parsed: _Legacy, path: Path) -> _Legacy:
    """Read every section; attributes of ``POINT_DATA`` are kept, ``CELL_DATA`` ones dropped.

    Every loop here consumes at least one line or one value, so it ends with the file.
    """
    section: tuple[str, int] | None = None
    seen: set[str] = set()
    while (words := cursor.line()) is not None:
        key = words[0].upper()
        if key in _ONCE:
            if key in seen:
                raise fail(path, f"the file has two {key} sections", CORRUPT_FIX)
            seen.add(key)
        if key == "POINTS":
            n, type_name = _ints(words, 1, path)[0], _word(words, 2, path)
            parsed.points = cursor.values(3 * n, type_name, "POINTS").reshape(n, 3).astype(np.float64)
        elif key in _CELL_KEYS:
            parsed.cells[key] = _read_cells(cursor, words, path)
        elif key == "CELL_TYPES":
            parsed.cell_types = _index_values(cursor, _ints(words, 1, path)[0], "int", "CELL_TYPES", path)
        elif key == "METADATA":
            cursor.skip_block()
        elif key == "DIMENSIONS":
            continue
        elif key in ("POINT_DATA", "CELL_DATA"):
            section = (key, _ints(words, 1, path)[0])
            if key == "POINT_DATA":
                parsed.point_count = section[1]
                _check_point_data_count(parsed, path)
        elif key == "FIELD" and section is None:
            parsed.field_arrays += _read_field(cursor, words, path)
        elif key in _ATTRIBUTE_KEYS and section is not None:
            arrays = _read_attribute(cursor, words, section[1], path)
            if section[0] == "POINT_DATA":
                parsed.point_arrays += arrays
        else:
            raise fail(
                path,
                f"unexpected line {' '.join(words)[:60]!r}: the file is truncated or corrupt",
                _TRUNCATED_OR_FIX,
            )
    return parsed


def _word(words: list[str], i: int, path: Path) -> str:
    if len(words) <= i:
        raise fail(path, f"line {' '.join(words)[:80]!r} is missing values", FIX)
    return words[i]


def _ints(words: list[str], start: int, path: Path, count: int = 1) -> list[int]:
    """``count`` counts (whole numbers >= 0) from ``words[start:]``."""
    line = " ".join(words)[:80]
    if len(words) < start + count:
        raise fail(path, f"line {line!r} is missing values", FIX)
    return [header_count(path, w, f"a count on line {line!r}") for w in words[start : start + count]]


def _check_point_data_count(parsed: _Legacy, path: Path) -> None:
    """POINT_DATA must declare one tuple per point (whichever of the two comes first)."""
    if (
        parsed.points is not None
        and parsed.point_count is not None
        and parsed.point_count != len(parsed.points)
    ):
        raise fail(
            path,
            f"POINT_DATA declares {parsed.point_count} values but POINTS declares {len(parsed.points)}",
            CORRUPT_FIX,
        )


def _index_values(cursor: Cursor, count: int, type_name: str, what: str, path: Path) -> np.ndarray:
    """``count`` integers (cell sizes, offsets, vertex indices, cell types) as int64."""
    if np.dtype(TYPES.get(type_name.lower(), "f8")).kind not in "iu":
        raise fail(path, f"the {what} array has type '{type_name}', not an integer type", CORRUPT_FIX)
    return cursor.values(count, type_name, what).astype(np.int64)


def _read_cells(cursor: Cursor, words: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and connectivity of a cell section, in either the 5.x or the 4.x layout."""
    key = words[0].upper()
    a, b = _ints(words, 1, path, 2)
    if cursor.peek() == "OFFSETS":  # 5.x: "<key> n_offsets n_connectivity", then two arrays
        offsets = _index_values(cursor, a, _word(cursor.line() or [], 1, path), f"{key} OFFSETS", path)
        words2 = cursor.line() or [""]
        if words2[0].upper() != "CONNECTIVITY":
            raise truncated(path, f"the {key} section has no CONNECTIVITY array")
        connectivity = _index_values(cursor, b, _word(words2, 1, path), f"{key} CONNECTIVITY", path)
        _check_offsets(offsets, len(connectivity), key, path)
        return offsets, connectivity
    flat = _index_values(cursor, b, "int", key, path)  # 4.x: "<key> n_cells size", [k, i0, .., ik-1]
    return _legacy_cells(flat, a, key, path)


def _check_offsets(offsets: np.ndarray, size: int, key: str, path: Path) -> None:
    """5.x offsets: start at 0, never decrease, end at the connectivity size."""
    if len(offsets) == 0 and size == 0:
        return
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != size or (np.diff(offsets) < 0).any():
        raise fail(path, f"the {key} OFFSETS do not match its CONNECTIVITY", FIX)


def _legacy_cells(flat: np.ndarray, n_cells: int, key: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Split the 4.x ``[k, i0, .., ik-1, k, ...]`` list into offsets and connectivity."""
    if n_cells == 0:
        return np.zeros(1, np.int64), np.empty(0, np.int64)
    if n_cells > len(flat):  # every cell takes at least one value (its size): checked before allocating
        raise fail(
            path, f"the {key} section declares {n_cells} cells in only {len(flat)} values", CORRUPT_FIX
        )
    k = int(flat[0])
    if k >= 0 and len(flat) == n_cells * (k + 1) and (flat[:: k + 1] == k).all():
        return np.arange(n_cells + 1, dtype=np.int64) * k, flat.reshape(n_cells, k + 1)[:, 1:].ravel()
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    keep = np.ones(len(flat), dtype=bool)
    values, pos = flat.tolist(), 0
    for i in range(n_cells):
        if pos >= len(values) or values[pos] < 0 or pos + 1 + values[pos] > len(values):
            raise fail(path, f"the {key} section's cell sizes do not add up to its declared size", FIX)
        keep[pos] = False
        offsets[i + 1] = offsets[i] + values[pos]
        pos += 1 + values[pos]
    if pos != len(values):
        raise fail(path, f"the {key} section's cell sizes do not add up to its declared size", FIX)
    return offsets, flat[keep]


def _read_attribute(cursor: Cursor, words: list[str], n: int, path: Path) -> list[tuple[str, np.ndarray]]:
    """Read one POINT_DATA/CELL_DATA attribute of ``n`` tuples; returns ``(name, array)`` pairs."""
    key = words[0].upper()
    if key == "FIELD":
        return _read_field(cursor, words, path)
    name = unquote(_word(words, 1, path))
    if key == "LOOKUP_TABLE":
        size = _ints(words, 2, path)[0]
        cursor.values(4 * size, "unsigned_char" if cursor.binary else "float", "LOOKUP_TABLE")
        return []
    if key == "COLOR_SCALARS":
        width = _width(words, 2, n, path)
        values = cursor.values(n * width, "unsigned_char" if cursor.binary else "float", key)
        return [(name, _shape(values, n, width))]
    width, type_name = _attribute_layout(key, words, n, path)
    if key == "SCALARS" and cursor.peek() == "LOOKUP_TABLE":
        cursor.line()
    if type_name.lower() in _STRING_TYPES:
        cursor.skip_strings(n * width, key)
        return []
    return [(name, _shape(cursor.values(n * width, type_name, f"{key} {name}"), n, width))]


def _width(words: list[str], i: int, tuples: int, path: Path) -> int:
    """Components per tuple declared at ``words[i]``: at least 1 when there are tuples."""
    width = _ints(words, i, path)[0]
    if width == 0 and tuples > 0:
        raise fail(path, f"line {' '.join(words)[:80]!r} declares 0 components per value", CORRUPT_FIX)
    return width


def _attribute_layout(key: str, words: list[str], n: int, path: Path) -> tuple[int, str]:
    """Components per tuple and data type of an attribute line."""
    if key == "SCALARS":
        return (_width(words, 3, n, path) if len(words) > 3 else 1), _word(words, 2, path)
    if key == "TEXTURE_COORDINATES":
        return _width(words, 2, n, path), _word(words, 3, path)
    width = {"VECTORS": 3, "NORMALS": 3, "TENSORS": 9, "TENSORS6": 6}.get(key, 1)
    return width, _word(words, 2, path)


def _read_field(cursor: Cursor, words: list[str], path: Path) -> list[tuple[str, np.ndarray]]:
    """Read the arrays of a ``FIELD <name> <n_arrays>`` block (string arrays are skipped).

    Each array starts with a line of at least 8 bytes (``a 1 1 int``), so a count of arrays
    larger than the bytes left allow is refused before the loop.
    """
    n_arrays = _ints(words, 2, path)[0]
    check_bytes(path, 8 * n_arrays, cursor.left, f"the FIELD block declares {n_arrays} arrays")
    arrays = []
    for done in range(n_arrays):
        line = cursor.line()
        if line is None:
            raise truncated(
                path, f"the FIELD block declares {n_arrays} arrays but the file ends after {done}"
            )
        if line[0].upper() == "NULL_ARRAY":
            continue
        name = unquote(line[0])
        count = _ints(line, 2, path)[0]
        width = _width(line, 1, count, path)
        type_name = _word(line, 3, path)
        if type_name.lower() in _STRING_TYPES:
            cursor.skip_strings(width * count, f"FIELD {name}")
        else:
            arrays.append(
                (name, _shape(cursor.values(width * count, type_name, f"FIELD {name}"), count, width))
            )
        if cursor.peek() == "METADATA":
            cursor.line()
            cursor.skip_block()
    return arrays


def _shape(values: np.ndarray, n: int, width: int) -> np.ndarray:
    """``(n,)`` for one component, else ``(n, width)``."""
    return values if width == 1 else values.reshape(n, width)


def _legacy_cloud(parsed: _Legacy, path: Path) -> PointCloud:
    """Assemble the cloud: points, point data, faces and line segments."""
    if parsed.points is None:
        raise fail(path, "the file has no POINTS section", FIX)
    n = len(parsed.points)
    _check_point_data_count(parsed, path)
    point_data: dict[str, np.ndarray] = {}
    for name, arr in parsed.point_arrays + [(k, v) for k, v in parsed.field_arrays if len(v) == n]:
        point_data.setdefault(name, arr)
    if parsed.dataset == "UNSTRUCTURED_GRID" and "CELLS" in parsed.cells:
        faces, lines = _grid_cells(parsed, path)
    else:
        faces = uniform_faces(parsed.cells.get("POLYGONS"), parsed.cells.get("TRIANGLE_STRIPS"), path)
        lines = segments(*parsed.cells["LINES"]) if "LINES" in parsed.cells else None
    return PointCloud(parsed.points, point_data, faces, lines, str(path))


def _grid_cells(parsed: _Legacy, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Faces and line segments from UNSTRUCTURED_GRID cells, selected by cell type."""
    offsets, connectivity = parsed.cells["CELLS"]
    types = parsed.cell_types
    if types is None or len(types) != len(offsets) - 1:
        raise fail(path, "CELL_TYPES is missing or does not match CELLS", FIX)
    return cells_by_type(offsets, connectivity, types, path)


# ----------------------------------------------------------------------------------------------
# legacy writing


def write_legacy_vtk(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write legacy VTK 4.2 POLYDATA (binary by default): points, vertices, faces, lines, point data."""
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter

    writer = vtkPolyDataWriter()
    writer.SetFileVersion(42)  # readable by older VTK/ParaView too
    writer.SetFileTypeToBinary() if binary else writer.SetFileTypeToASCII()
    run_writer(writer, polydata(cloud, path), path)
