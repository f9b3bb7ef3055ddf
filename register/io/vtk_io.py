"""VTK files: legacy ``.vtk`` (ASCII or binary) read here; legacy and XML (``.vtp`` / ``.vtu``) written.

Reading gives the points, every numeric point-data array (``SCALARS``, ``VECTORS``, ``FIELD``
arrays, ...; also dataset-level ``FIELD`` arrays with one tuple per point), polygon faces when
they all have the same size (triangle strips are split into triangles) and polylines split
into ``(L, 2)`` segments. Vertex cells and volume cells are ignored; string arrays are skipped.

Legacy files are parsed here with numpy: VTK's own legacy reader returns a full-size mesh of
garbage (or drops arrays) for truncated files, printing only a warning, so every section is
checked against the size its header line declares, and every count a header line declares
against the bytes left, before anything is allocated or looped over. XML files are parsed by
:mod:`register.io.vtk_xml` (bounded too); ``vtk``/``pyvista`` are imported inside the functions
that need them.

Writing uses VTK: binary by default, points plus one vertex cell per point (so ParaView shows
them), faces as polygons, lines as line cells, and every point attribute. An ``(N, 3)``
``displacement`` attribute is marked as the active vectors and an ``(N, 3)`` ``normals`` one as
the active normals (legacy ``VECTORS`` / ``NORMALS`` lines, XML ``<PointData Vectors= Normals=>``),
so ParaView / pyvista ``warp_by_vector()`` and glyphs use them without being told.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import (
    CORRUPT_FIX,
    cast_values,
    check_bytes,
    check_tokens,
    fail,
    header_count,
    mixed_faces,
    segments,
    strips_to_triangles,
    truncated,
    uniform_cells,
)

_TYPES = {
    "unsigned_char": "u1",
    "char": "i1",
    "signed_char": "i1",
    "unsigned_short": "u2",
    "short": "i2",
    "unsigned_int": "u4",
    "int": "i4",
    "unsigned_long": "u8",
    "long": "i8",
    "unsigned_long_long": "u8",
    "long_long": "i8",
    "vtktypeint64": "i8",
    "vtktypeuint64": "u8",
    "vtkidtype": "i4",  # the legacy writer stores vtkIdType as 32-bit int
    "float": "f4",
    "double": "f8",
}
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
_FACE_TYPES = (5, 7, 9)  # VTK_TRIANGLE, VTK_POLYGON, VTK_QUAD
_STRIP_TYPE = 6
_LINE_TYPES = (3, 4)  # VTK_LINE, VTK_POLY_LINE
_VERTEX_TYPES = (1, 2)
_ONCE = ("POINTS", *_CELL_KEYS, "CELL_TYPES", "POINT_DATA", "CELL_DATA")  # sections a file has at most once
_FIX = "Re-export the file from the tool that made it (as binary POLYDATA, or as .vtp)"
_TRUNCATED_OR_FIX = "Re-export or re-download the file (if it is valid, save it as .vtp instead)"


# ----------------------------------------------------------------------------------------------
# legacy reading


class _Cursor:
    """Walks a legacy VTK file: keyword lines, then ASCII values or big-endian binary blocks."""

    def __init__(self, data: bytes, pos: int, binary: bool, path: Path) -> None:
        self.data = data
        self.pos = pos
        self.binary = binary
        self.path = path

    def _raw_line(self) -> str:
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end
        text = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return text.strip()

    def line(self) -> list[str] | None:
        """Words of the next non-blank line, or ``None`` at the end of the file."""
        while self.pos < len(self.data):
            words = self._raw_line().split()
            if words:
                return words
        return None

    def peek(self) -> str | None:
        """First word of the next non-blank line (upper case), without consuming it."""
        pos = self.pos
        words = self.line()
        self.pos = pos
        return words[0].upper() if words else None

    def skip_block(self) -> None:
        """Skip lines up to the next blank line (a ``METADATA`` block)."""
        while self.pos < len(self.data) and self._raw_line():
            pass

    @property
    def left(self) -> int:
        """Bytes left after the cursor."""
        return len(self.data) - self.pos

    def values(self, count: int, type_name: str, what: str) -> np.ndarray:
        """Read ``count`` numbers of VTK type ``type_name`` as a native-order ``(count,)`` array.

        ``count`` is checked against the bytes left before anything is allocated: binary values
        take ``itemsize`` bytes each, ASCII values at least 2 (a digit and a separator).
        """
        code = _TYPES.get(type_name.lower())
        if code is None:
            raise fail(self.path, f"the {what} section has unsupported data type '{type_name}'", _FIX)
        if self.binary:
            return self._binary_values(count, np.dtype(">" + code), what)
        return self._ascii_values(count, np.dtype(code), what)

    def _binary_values(self, count: int, dtype: np.dtype, what: str) -> np.ndarray:
        nbytes = count * dtype.itemsize
        check_bytes(self.path, nbytes, self.left, f"the {what} section declares {count} values")
        arr = np.frombuffer(self.data, dtype, count, self.pos).astype(dtype.newbyteorder("="))
        self.pos += nbytes
        return arr

    def _ascii_values(self, count: int, dtype: np.dtype, what: str) -> np.ndarray:
        check_tokens(self.path, count, self.left, f"the {what} section declares")
        tokens: list[bytes] = []
        while len(tokens) < count:
            if self.pos >= len(self.data):
                raise truncated(
                    self.path,
                    f"the {what} section declares {count} values but the file ends after {len(tokens)}",
                )
            end = self.data.find(b"\n", self.pos)
            end = len(self.data) if end < 0 else end
            tokens.extend(self.data[self.pos : end].split())
            self.pos = end + 1
        if len(tokens) != count:
            raise fail(
                self.path, f"the {what} section has {len(tokens)} values on its lines, not {count}", _FIX
            )
        try:
            values = np.array(tokens, dtype=np.float64 if dtype.kind == "f" else np.int64)
        except (ValueError, OverflowError):
            raise truncated(
                self.path, f"the {what} section has fewer values than declared or a non-number"
            ) from None
        return cast_values(values, dtype, self.path, f"the {what} section")

    def skip_strings(self, count: int, what: str) -> None:
        """Skip the ``count`` strings of a string array (one line each in ASCII files).

        Every string takes at least one byte (its newline, or its binary length prefix), so a
        count larger than the bytes left is refused at once; the loop stops at the end of file.
        """
        if count > self.left + 1:
            raise truncated(
                self.path,
                f"the {what} string array declares {count} strings but only {self.left} bytes follow",
            )
        for done in range(count):
            if self.pos >= len(self.data):
                raise truncated(self.path, f"the {what} string array ends after {done} of {count} strings")
            if not self.binary:
                self._raw_line()
                continue
            length = self._string_length(what)
            check_bytes(self.path, length, self.left, f"string {done} of the {what} array declares")
            self.pos += length

    def _string_length(self, what: str) -> int:
        """Length prefix of a binary string: the top 2 bits of the first byte give its width."""
        width = {3: 1, 2: 2, 1: 4, 0: 8}[self.data[self.pos] >> 6]
        raw = self.data[self.pos : self.pos + width]
        if len(raw) < width:
            raise truncated(self.path, f"the {what} string array ends early")
        self.pos += width
        mask = (1 << (8 * width - 2)) - 1 if width < 8 else (1 << 64) - 1
        return int.from_bytes(raw, "big") & mask


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


def _preamble(data: bytes, path: Path) -> tuple[_Cursor, str]:
    """Check the version line, title, ASCII/BINARY and DATASET lines."""
    if not data.startswith(b"# vtk DataFile"):
        raise fail(
            path, "not a legacy VTK file (no '# vtk DataFile Version' first line)", "Check the file type"
        )
    cursor = _Cursor(data, 0, False, path)
    cursor._raw_line()  # version
    cursor._raw_line()  # title
    mode = (cursor.line() or [""])[0].upper()
    if mode not in ("ASCII", "BINARY"):
        raise fail(path, f"the third line should be ASCII or BINARY, got {mode!r}", _FIX)
    cursor.binary = mode == "BINARY"
    words = cursor.line() or [""]
    if words[0].upper() != "DATASET" or len(words) < 2:
        raise fail(path, "no DATASET line after the header", _FIX)
    dataset = words[1].upper()
    if dataset not in _DATASETS:
        raise fail(
            path,
            f"DATASET {dataset} is not supported (only POLYDATA, UNSTRUCTURED_GRID, STRUCTURED_GRID)",
            "Convert it to a point set first (e.g. in ParaView, save as .vtp)",
        )
    return cursor, dataset


def _parse_body(cursor: _Cursor, parsed: _Legacy, path: Path) -> _Legacy:
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
        raise fail(path, f"line {' '.join(words)[:80]!r} is missing values", _FIX)
    return words[i]


def _ints(words: list[str], start: int, path: Path, count: int = 1) -> list[int]:
    """``count`` counts (whole numbers >= 0) from ``words[start:]``."""
    line = " ".join(words)[:80]
    if len(words) < start + count:
        raise fail(path, f"line {line!r} is missing values", _FIX)
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


def _index_values(cursor: _Cursor, count: int, type_name: str, what: str, path: Path) -> np.ndarray:
    """``count`` integers (cell sizes, offsets, vertex indices, cell types) as int64."""
    if np.dtype(_TYPES.get(type_name.lower(), "f8")).kind not in "iu":
        raise fail(path, f"the {what} array has type '{type_name}', not an integer type", CORRUPT_FIX)
    return cursor.values(count, type_name, what).astype(np.int64)


def _read_cells(cursor: _Cursor, words: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
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
        raise fail(path, f"the {key} OFFSETS do not match its CONNECTIVITY", _FIX)


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
            raise fail(path, f"the {key} section's cell sizes do not add up to its declared size", _FIX)
        keep[pos] = False
        offsets[i + 1] = offsets[i] + values[pos]
        pos += 1 + values[pos]
    if pos != len(values):
        raise fail(path, f"the {key} section's cell sizes do not add up to its declared size", _FIX)
    return offsets, flat[keep]


def _read_attribute(cursor: _Cursor, words: list[str], n: int, path: Path) -> list[tuple[str, np.ndarray]]:
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


def _read_field(cursor: _Cursor, words: list[str], path: Path) -> list[tuple[str, np.ndarray]]:
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
        raise fail(path, "the file has no POINTS section", _FIX)
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


def _grid_cells(parsed: _Legacy, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Faces and line segments from UNSTRUCTURED_GRID cells, selected by cell type."""
    offsets, connectivity = parsed.cells["CELLS"]
    types = parsed.cell_types
    if types is None or len(types) != len(offsets) - 1:
        raise fail(path, "CELL_TYPES is missing or does not match CELLS", _FIX)
    return cells_by_type(offsets, connectivity, types, path)


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


# ----------------------------------------------------------------------------------------------
# VTK messages


@contextlib.contextmanager
def vtk_errors(obj) -> Iterator[list[str]]:
    """Collect the errors and warnings of a VTK object (a writer, a compressor), and keep VTK quiet."""
    from vtkmodules.util.misc import calldata_type
    from vtkmodules.util.vtkConstants import VTK_STRING
    from vtkmodules.vtkCommonCore import vtkCommand, vtkObject

    messages: list[str] = []

    @calldata_type(VTK_STRING)
    def record(_obj, event: str, text: str | None = None) -> None:
        messages.append(text or event)

    observers = [obj.AddObserver(e, record) for e in (vtkCommand.ErrorEvent, vtkCommand.WarningEvent)]
    display = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        yield messages
    finally:
        vtkObject.SetGlobalWarningDisplay(display)
        for tag in observers:
            obj.RemoveObserver(tag)


# ----------------------------------------------------------------------------------------------
# writing (VTK)


def write_legacy_vtk(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write legacy VTK 4.2 POLYDATA (binary by default): points, vertices, faces, lines, point data."""
    from vtkmodules.vtkIOLegacy import vtkPolyDataWriter

    writer = vtkPolyDataWriter()
    writer.SetFileVersion(42)  # readable by older VTK/ParaView too
    writer.SetFileTypeToBinary() if binary else writer.SetFileTypeToASCII()
    _run_writer(writer, _polydata(cloud, path), path)


def write_vtp(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write XML PolyData: points, vertices, faces, lines, point data (binary by default)."""
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    writer = vtkXMLPolyDataWriter()
    writer.SetDataModeToBinary() if binary else writer.SetDataModeToAscii()
    _run_writer(writer, _polydata(cloud, path), path)


def write_vtu(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write XML UnstructuredGrid: points, VERTEX cells, face and LINE cells, point data."""
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    writer = vtkXMLUnstructuredGridWriter()
    writer.SetDataModeToBinary() if binary else writer.SetDataModeToAscii()
    _run_writer(writer, _unstructured_grid(cloud, path), path)


def _run_writer(writer, mesh, path: Path) -> None:
    """Write ``mesh`` to ``path``; a VTK failure becomes an :class:`OSError`."""
    writer.SetFileName(str(path))
    writer.SetInputData(mesh)
    with vtk_errors(writer) as messages:
        ok = writer.Write()
    if ok != 1 or messages:
        raise OSError(f"VTK could not write {path}: {messages[0].strip() if messages else 'unknown error'}")


def _points3(cloud: PointCloud) -> np.ndarray:
    """``(N, 3)`` float64 points; 2-D clouds get z = 0 (VTK points are always 3-D)."""
    points = cloud.points
    if points.shape[1] == 2:
        points = np.column_stack([points, np.zeros(len(points))])
    return np.ascontiguousarray(points, dtype=np.float64)


def _padded(cells: np.ndarray) -> np.ndarray:
    """``(F, k)`` cells -> VTK's flat ``[k, i0, .., ik-1, k, ...]`` layout."""
    cells = np.asarray(cells, dtype=np.int64)
    return np.column_stack([np.full(len(cells), cells.shape[1]), cells]).ravel()


def _polydata(cloud: PointCloud, path: Path):
    import pyvista as pv

    n = len(cloud)
    verts = _padded(np.arange(n).reshape(-1, 1))
    faces = _padded(cloud.faces) if cloud.faces is not None and len(cloud.faces) else None
    lines = _padded(cloud.lines) if cloud.lines is not None and len(cloud.lines) else None
    mesh = pv.PolyData(_points3(cloud), verts=verts, faces=faces, lines=lines)
    _add_point_data(mesh, cloud, path)
    return mesh


def _unstructured_grid(cloud: PointCloud, path: Path):
    import pyvista as pv

    n = len(cloud)
    blocks = [(_padded(np.arange(n).reshape(-1, 1)), np.full(n, pv.CellType.VERTEX, np.uint8))]
    if cloud.faces is not None and len(cloud.faces):
        k = cloud.faces.shape[1]
        kind = {3: pv.CellType.TRIANGLE, 4: pv.CellType.QUAD}.get(k, pv.CellType.POLYGON)
        blocks.append((_padded(cloud.faces), np.full(len(cloud.faces), kind, np.uint8)))
    if cloud.lines is not None and len(cloud.lines):
        blocks.append((_padded(cloud.lines), np.full(len(cloud.lines), pv.CellType.LINE, np.uint8)))
    cells = np.concatenate([b[0] for b in blocks])
    types = np.concatenate([b[1] for b in blocks])
    mesh = pv.UnstructuredGrid(cells, types, _points3(cloud))
    _add_point_data(mesh, cloud, path)
    return mesh


def _add_point_data(mesh, cloud: PointCloud, path: Path) -> None:
    """Copy the attributes (bool -> uint8, float16 -> float32); refuse non-numeric ones."""
    for name, arr in cloud.point_data.items():
        arr = np.asarray(arr)
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        elif arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)
        elif arr.dtype.kind not in "iuf" or arr.ndim > 2:
            raise fail(
                path,
                f"point attribute '{name}' ({arr.dtype}, shape {arr.shape}) cannot be stored",
                "Convert it to numbers",
            )
        mesh.point_data[name] = np.ascontiguousarray(arr)
    _mark_active(mesh, cloud)


# point attributes VTK marks as active: name -> vtkDataSetAttributes setter (each (N, 3))
_ACTIVE = {"displacement": "SetActiveVectors", "normals": "SetActiveNormals"}


def _mark_active(mesh, cloud: PointCloud) -> None:
    """Mark an ``(N, 3)`` ``displacement`` as the active vectors, ``normals`` as the active normals.

    pyvista makes the first array added the active scalars; if that is one of these two it is
    unset, or the legacy writer would write the array twice (as ``SCALARS`` and ``VECTORS``).
    Other arrays are left as they are (``FIELD`` arrays in legacy files).
    """
    point_data = mesh.GetPointData()
    for name, setter in _ACTIVE.items():
        arr = cloud.point_data.get(name)
        if arr is None or np.ndim(arr) != 2 or np.shape(arr)[1] != 3:
            continue
        if point_data.GetScalars() is not None and point_data.GetScalars().GetName() == name:
            point_data.SetActiveScalars(None)
        getattr(point_data, setter)(name)
