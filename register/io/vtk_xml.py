"""VTK XML files: ``.vtp`` (PolyData) and ``.vtu`` (UnstructuredGrid), read with a bounded parser.

Reading gives what the legacy reader gives (see :mod:`register.io.vtk_legacy`): the points, every
numeric point-data array (and dataset ``FieldData`` arrays with one tuple per point), uniform
polygon faces (triangle strips split into triangles) and polylines split into ``(L, 2)``
segments; vertex and volume cells are ignored, string arrays skipped. Several pieces are joined
(point indices shifted); a point-data array is kept if every piece has it.

The files are parsed here rather than by VTK's XML readers, which crash the process (segfault,
abort, SIGFPE) or loop on headers that lie: a block count of 0, a block size of 0,
``NumberOfPoints="4294967296"``. The layout follows VTK's "XML File Formats" page: the XML part
is parsed with :mod:`xml.etree.ElementTree` (expat, whose entity-amplification limits stop
"billion laughs" files); each ``DataArray`` is ``format="ascii"`` (numbers in its text),
``"binary"`` (base64 in its text) or ``"appended"`` (at byte ``offset`` of the ``AppendedData``
section, raw or base64). Binary data start with a header of ``header_type`` integers (UInt32 or
UInt64): the byte count when uncompressed; with a ``compressor`` it is
``[n_blocks, block_size, last_block_size, compressed_size_0 .. n_blocks-1]``, the blocks then
follow (zlib, LZ4 or LZMA). Every count (points, cells, components, block sizes) is checked
against the data that are really there before anything is allocated or decompressed, and a
block is never decompressed past its declared size.

Writing uses VTK's XML writers (:mod:`register.io.vtk_backend`; binary by default): the points,
one vertex cell per point, faces, lines and every point attribute (``displacement`` /
``normals`` as the active ``Vectors`` / ``Normals``).
"""

from __future__ import annotations

import base64
import binascii
import lzma
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from register.core.pointcloud import PointCloud
from register.io._common import (
    CORRUPT_FIX,
    cast_values,
    check_bytes,
    check_end,
    check_memory,
    check_tokens,
    fail,
    header_count,
    segments,
    truncated,
)
from register.io.vtk_backend import polydata, run_writer, unstructured_grid, vtk_errors
from register.io.vtk_cells import cells_by_type, uniform_faces

_TYPES = {
    "Int8": "i1",
    "UInt8": "u1",
    "Int16": "i2",
    "UInt16": "u2",
    "Int32": "i4",
    "UInt32": "u4",
    "Int64": "i8",
    "UInt64": "u8",
    "Float32": "f4",
    "Float64": "f8",
}
_HEADER_TYPES = {"UInt32": "u4", "UInt64": "u8"}
_COMPRESSORS = ("vtkZLibDataCompressor", "vtkLZ4DataCompressor", "vtkLZMADataCompressor")
_POLY_CELLS = ("Lines", "Strips", "Polys")  # vertex cells (Verts) are ignored, so not read
_FIX = "Re-export the file from the tool that made it (e.g. ParaView: File > Save Data)"
_APPENDED = re.compile(rb"<AppendedData\b([^>]*)>")


@dataclass
class _File:
    """What every array of one file shares: encoding settings, the appended section, a budget."""

    path: Path
    order: str  # "<" or ">"
    header: np.dtype  # UInt32 / UInt64 in the file's byte order
    compressor: str | None
    appended: bytes | None = None  # the AppendedData bytes after "_", raw or base64 text
    appended_base64: bool = False
    expanded: int = 0  # bytes decompressed so far, checked against the memory available


def read_vtp(path: Path) -> PointCloud:
    """Read an XML PolyData ``.vtp`` file (see the module docstring)."""
    return _read(path, "PolyData")


def read_vtu(path: Path) -> PointCloud:
    """Read an XML UnstructuredGrid ``.vtu`` file (see the module docstring)."""
    return _read(path, "UnstructuredGrid")


def _read(path: Path, kind: str) -> PointCloud:
    data = path.read_bytes()
    root, appended, encoding = _parse_xml(data, path)
    if root.tag != "VTKFile" or root.get("type") != kind:
        raise fail(
            path,
            f"not a VTK XML {kind} file (its root is <{root.tag} type={root.get('type')!r}>)",
            "Check the file type and its extension (.vtp holds PolyData, .vtu UnstructuredGrid)",
        )
    file = _settings(root, path)
    if appended is not None:
        file.appended, file.appended_base64 = appended, encoding == "base64"
    dataset = root.find(kind)
    pieces = dataset.findall("Piece") if dataset is not None else []
    if not pieces:
        raise fail(path, f"the file has no <{kind}><Piece> element", _FIX)
    parts = [_read_piece(file, piece, kind) for piece in pieces]
    return _join(parts, _field_arrays(file, dataset), path)


def _parse_xml(data: bytes, path: Path) -> tuple[ElementTree.Element, bytes | None, str]:
    """The XML tree, and the raw ``AppendedData`` content (after its ``_``) with its encoding.

    The appended section is not XML (raw bytes), so the tree is parsed from the text before it.
    """
    tag = data.find(b"<AppendedData")
    match = _APPENDED.match(data, tag) if tag >= 0 else None
    xml, appended, encoding = data, None, ""
    if match is not None:
        start = data.find(b"_", match.end())
        end = data.rfind(b"</AppendedData>")
        if start < 0 or end < start:
            raise truncated(path, "the AppendedData section has no '_' start or no end tag")
        appended = data[start + 1 : end]
        attributes = re.search(rb'encoding="([^"]*)"', match.group(1))
        encoding = attributes.group(1).decode("latin-1") if attributes else ""
        if encoding not in ("raw", "base64"):
            raise fail(path, f"the AppendedData encoding is {encoding!r}, not 'raw' or 'base64'", _FIX)
        xml = data[: match.start()] + b"</VTKFile>"
    try:
        return ElementTree.fromstring(xml), appended, encoding
    except ElementTree.ParseError as exc:
        raise fail(path, f"not a valid VTK XML file (XML error: {exc})", _FIX) from None


def _settings(root: ElementTree.Element, path: Path) -> _File:
    """Byte order, header type and compressor of the ``<VTKFile>`` element."""
    order = {"LittleEndian": "<", "BigEndian": ">"}.get(root.get("byte_order", "LittleEndian"))
    header = _HEADER_TYPES.get(root.get("header_type", "UInt32"))
    compressor = root.get("compressor") or None
    if order is None or header is None or (compressor is not None and compressor not in _COMPRESSORS):
        raise fail(
            path,
            f"unsupported VTKFile settings byte_order={root.get('byte_order')!r} "
            f"header_type={root.get('header_type')!r} compressor={compressor!r}",
            _FIX,
        )
    return _File(path, order, np.dtype(order + header), compressor)


def _count(element: ElementTree.Element, name: str, path: Path, default: int | None = None) -> int:
    """A count attribute (``NumberOfPoints``, ``offset``, ...), a whole number >= 0."""
    value = element.get(name)
    if value is None and default is not None:
        return default
    return header_count(path, value, f"{name} of <{element.tag}>")


# ----------------------------------------------------------------------------------------------
# data arrays


def _array(file: _File, element: ElementTree.Element, tuples: int, what: str) -> np.ndarray | None:
    """The ``(tuples,)`` or ``(tuples, components)`` values of a ``DataArray``; ``None`` if skipped.

    String and unknown-type arrays are skipped (``None``) without reading their data.
    """
    code = _TYPES.get(element.get("type", ""))
    if code is None:
        return None
    path = file.path
    components = _count(element, "NumberOfComponents", path, default=1)
    if components == 0 and tuples > 0:
        raise fail(path, f"{what} declares 0 components per value", CORRUPT_FIX)
    count = tuples * components
    dtype = np.dtype(file.order + code)
    fmt = element.get("format", "ascii")
    if fmt == "ascii":
        values = _ascii(element.text or "", count, dtype, path, what)
    elif fmt == "binary":
        text = (element.text or "").strip().encode("ascii", errors="replace")  # non-ASCII: not base64
        if len(text.split(None, 1)) > 1:  # VTK writes no inner whitespace, other writers may wrap lines
            text = b"".join(text.split())
        raw, end = _binary(file, text, 0, count * dtype.itemsize, what, base64_text=True)
        check_end(path, text, end, f"values of {what}")
        values = np.frombuffer(raw, dtype)
    elif fmt == "appended":
        if file.appended is None:
            raise fail(path, f"{what} is 'appended' but the file has no AppendedData section", _FIX)
        offset = _count(element, "offset", path)
        raw, _ = _binary(
            file, file.appended, offset, count * dtype.itemsize, what, base64_text=file.appended_base64
        )
        values = np.frombuffer(raw, dtype)
    else:
        raise fail(path, f"{what} has format {fmt!r}, not ascii, binary or appended", _FIX)
    values = values.astype(dtype.newbyteorder("="))  # a writable copy in native byte order
    return values if components == 1 else values.reshape(tuples, components)


def _ascii(text: str, count: int, dtype: np.dtype, path: Path, what: str) -> np.ndarray:
    """``count`` numbers written as text, cast to ``dtype`` (integers must fit)."""
    check_tokens(path, count, len(text), f"{what} declares")
    tokens = text.split()
    if len(tokens) != count:
        raise fail(path, f"{what} holds {len(tokens)} values, not the {count} declared", CORRUPT_FIX)
    try:
        values = np.array(tokens, dtype=np.float64 if dtype.kind == "f" else np.int64)
    except (ValueError, OverflowError):
        raise fail(path, f"{what} holds a value that is not a number", CORRUPT_FIX) from None
    return cast_values(values, dtype.newbyteorder("="), path, what)


def _binary(
    file: _File, data: bytes, offset: int, nbytes: int, what: str, *, base64_text: bool
) -> tuple[bytes, int]:
    """Exactly ``nbytes`` of array data starting at ``offset`` of ``data``, and where they end.

    ``data`` is raw bytes or base64 text; uncompressed data are one base64 stream (header and
    values together), compressed ones two (the block header, then the blocks).
    """
    path = file.path
    size = file.header.itemsize
    source = _Source(data, offset, base64_text, path, what)
    if file.compressor is None:
        declared = int(np.frombuffer(source.peek(size), file.header)[0])
        if declared != nbytes:
            raise fail(path, f"{what} holds {declared} bytes of data, expected {nbytes}", CORRUPT_FIX)
        return source.take(size + nbytes)[size:], source.pos
    n_blocks = int(np.frombuffer(source.peek(size), file.header)[0])
    check_bytes(path, (3 + n_blocks) * size, source.left, f"{what} declares {n_blocks} compressed blocks")
    header = [int(v) for v in np.frombuffer(source.take((3 + n_blocks) * size), file.header)]
    block, last, sizes = header[1], header[2], header[3:]
    total = 0 if n_blocks == 0 else (n_blocks - 1) * block + (last or block)
    if total != nbytes or (n_blocks and (block == 0 or last > block)):
        raise fail(
            path,
            f"{what} has a compression header of {n_blocks} blocks of {block} bytes (last {last}) for "
            f"{nbytes} bytes of data",
            CORRUPT_FIX,
        )
    check_bytes(path, sum(sizes), source.left, f"{what} declares {n_blocks} compressed blocks")
    file.expanded += nbytes
    check_memory(path, file.expanded, "the file's compressed data")
    blocks = source.take(sum(sizes))
    out, pos = [], 0
    for i, csize in enumerate(sizes):
        expected = block if i < n_blocks - 1 or last == 0 else last
        out.append(_decompress(file, blocks[pos : pos + csize], expected, what))
        pos += csize
    return b"".join(out), source.pos


class _Source:
    """Reads consecutive byte ranges from raw data or base64 text, bounded by what is there."""

    def __init__(self, data: bytes, offset: int, base64_text: bool, path: Path, what: str) -> None:
        self.data, self.pos, self.base64, self.path, self.what = data, offset, base64_text, path, what
        if offset > len(data):
            raise truncated(path, f"{what} starts at byte {offset} of data {len(data)} bytes long")

    @property
    def left(self) -> int:
        """Bytes left (3 per 4 base64 characters)."""
        return (len(self.data) - self.pos) * 3 // 4 if self.base64 else len(self.data) - self.pos

    def _chars(self, nbytes: int) -> int:
        return 4 * -(-nbytes // 3) if self.base64 else nbytes

    def peek(self, nbytes: int) -> bytes:
        """The next ``nbytes`` (of a base64 stream starting here), without moving."""
        return self._decode(self.pos, nbytes)

    def take(self, nbytes: int) -> bytes:
        """The next ``nbytes``: a whole base64 stream (with its padding) when base64."""
        out = self._decode(self.pos, nbytes)
        self.pos += self._chars(nbytes)
        return out

    def _decode(self, pos: int, nbytes: int) -> bytes:
        chunk = self.data[pos : pos + self._chars(nbytes)]
        if self.base64:
            try:
                chunk = base64.b64decode(chunk, validate=True)
            except (binascii.Error, ValueError):
                raise fail(self.path, f"{self.what} is not valid base64", CORRUPT_FIX) from None
        if len(chunk) < nbytes:
            raise truncated(self.path, f"{self.what} needs {nbytes} bytes where {len(chunk)} are left")
        return chunk[:nbytes]


def _decompress(file: _File, block: bytes, size: int, what: str) -> bytes:
    """One compressed block, to exactly ``size`` bytes (never more)."""
    try:
        if file.compressor == "vtkZLibDataCompressor":
            decompressor = zlib.decompressobj()
            out = decompressor.decompress(block, size + 1)  # one more: reaches the end marker
            complete = decompressor.eof
        elif file.compressor == "vtkLZMADataCompressor":
            lz = lzma.LZMADecompressor()
            out = lz.decompress(block, max_length=size + 1)
            complete = lz.eof
        else:
            out, complete = _lz4(block, size), True
    except (zlib.error, lzma.LZMAError, EOFError):
        out, complete = b"", False
    if len(out) != size or not complete:
        raise fail(file.path, f"{what} has a corrupt compressed block", CORRUPT_FIX)
    return out


def _lz4(block: bytes, size: int) -> bytes:
    """LZ4 block decompression with VTK's own (bounded) decompressor; ``b""`` on error."""
    from vtkmodules.vtkIOCore import vtkLZ4DataCompressor

    compressor = vtkLZ4DataCompressor()
    out = bytearray(size)
    with vtk_errors(compressor):
        written = compressor.Uncompress(block, len(block), out, size) if size else 0
    return bytes(out) if written == size else b""


# ----------------------------------------------------------------------------------------------
# pieces


@dataclass
class _Piece:
    points: np.ndarray
    point_data: dict[str, np.ndarray]
    faces: np.ndarray | None
    lines: np.ndarray | None


def _read_piece(file: _File, piece: ElementTree.Element, kind: str) -> _Piece:
    """Points, point data and cells of one ``<Piece>``."""
    path = file.path
    n = _count(piece, "NumberOfPoints", path)
    points_element = piece.find("Points/DataArray")
    if points_element is None:
        raise fail(path, "a <Piece> has no <Points> array", _FIX)
    if _count(points_element, "NumberOfComponents", path, default=1) != 3:
        raise fail(path, "the <Points> array does not have 3 components", _FIX)
    points = _array(file, points_element, n, "the Points array")
    if points is None:
        raise fail(path, f"the <Points> array has unsupported type {points_element.get('type')!r}", _FIX)
    point_data = {}
    for element in piece.findall("PointData/DataArray"):
        name = element.get("Name", "")
        arr = _array(file, element, n, f"point array '{name}'")
        if arr is not None:
            point_data.setdefault(name, arr)
    if kind == "UnstructuredGrid":
        offsets, connectivity, types = _cells(
            file, piece, "Cells", _count(piece, "NumberOfCells", path), True
        )
        faces, lines = cells_by_type(offsets, connectivity, types, path)
    else:
        cells = {
            key: _cells(file, piece, key, _count(piece, f"NumberOf{key}", path, 0), False)
            for key in _POLY_CELLS
        }
        faces = uniform_faces(cells["Polys"][:2], cells["Strips"][:2], path)
        lines = segments(*cells["Lines"][:2])
    return _Piece(points.astype(np.float64, copy=False), point_data, faces, lines)


def _cells(
    file: _File, piece: ElementTree.Element, key: str, n_cells: int, with_types: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets ``(n + 1,)`` from 0, connectivity and (for grids) cell types of a cell block."""
    path = file.path
    element = piece.find(key)
    arrays = {} if element is None else {a.get("Name"): a for a in element.findall("DataArray")}
    empty = (np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))
    if n_cells == 0:
        return empty
    needed = ("connectivity", "offsets", "types") if with_types else ("connectivity", "offsets")
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise fail(path, f"the <{key}> block of {n_cells} cells has no {', '.join(missing)} array", _FIX)
    ends = _integers(file, arrays["offsets"], n_cells, f"the {key} offsets")
    if ends.min() < 0 or (np.diff(ends) < 0).any():
        raise fail(path, f"the {key} offsets are negative or decrease", CORRUPT_FIX)
    connectivity = _integers(file, arrays["connectivity"], int(ends[-1]), f"the {key} connectivity")
    types = _integers(file, arrays["types"], n_cells, f"the {key} types") if with_types else empty[2]
    return np.concatenate([[0], ends]), connectivity, types


def _integers(file: _File, element: ElementTree.Element, count: int, what: str) -> np.ndarray:
    """A one-component integer array of ``count`` values, as int64."""
    if _TYPES.get(element.get("type", ""), "f")[0] not in "iu":
        raise fail(file.path, f"{what} have type {element.get('type')!r}, not an integer type", CORRUPT_FIX)
    if _count(element, "NumberOfComponents", file.path, default=1) != 1:
        raise fail(file.path, f"{what} must have one component", CORRUPT_FIX)
    return _array(file, element, count, what).astype(np.int64, copy=False)


def _field_arrays(file: _File, dataset: ElementTree.Element) -> dict[str, np.ndarray]:
    """Numeric ``FieldData`` arrays of the dataset (``NumberOfTuples`` each)."""
    out = {}
    for element in dataset.findall("FieldData/DataArray"):
        name = element.get("Name", "")
        tuples = _count(element, "NumberOfTuples", file.path)
        arr = _array(file, element, tuples, f"field array '{name}'")
        if arr is not None:
            out.setdefault(name, arr)
    return out


def _join(parts: list[_Piece], fields: dict[str, np.ndarray], path: Path) -> PointCloud:
    """One cloud from the pieces: points stacked, cell indices shifted, shared arrays joined."""
    if len(parts) == 1:
        points, point_data = parts[0].points, dict(parts[0].point_data)
    else:
        points = np.concatenate([p.points for p in parts])
        point_data = {}
        for name, first in parts[0].point_data.items():
            arrays = [p.point_data.get(name) for p in parts]
            if all(a is not None and a.shape[1:] == first.shape[1:] for a in arrays):
                point_data[name] = np.concatenate(arrays)
    for name, arr in fields.items():
        if len(arr) == len(points):
            point_data.setdefault(name, arr)
    starts = np.cumsum([0] + [len(p.points) for p in parts])
    faces = _shifted([p.faces for p in parts], starts, path)
    lines = _shifted([p.lines for p in parts], starts, path)
    return PointCloud(points, point_data, faces, lines, str(path))


def _shifted(cells: list[np.ndarray | None], starts: np.ndarray, path: Path) -> np.ndarray | None:
    """Concatenate per-piece cells, each shifted by its piece's first point index."""
    present = [(c + s) for c, s in zip(cells, starts[:-1].tolist(), strict=True) if c is not None]
    if not present:
        return None
    widths = sorted({c.shape[1] for c in present})
    if len(widths) > 1:
        raise fail(path, f"its pieces have faces of different sizes ({widths[0]} to {widths[-1]})", _FIX)
    return np.concatenate(present)


# ----------------------------------------------------------------------------------------------
# writing (VTK)


def write_vtp(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write XML PolyData: points, vertices, faces, lines, point data (binary by default)."""
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    writer = vtkXMLPolyDataWriter()
    writer.SetDataModeToBinary() if binary else writer.SetDataModeToAscii()
    run_writer(writer, polydata(cloud, path), path)


def write_vtu(path: Path, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write XML UnstructuredGrid: points, VERTEX cells, face and LINE cells, point data."""
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    writer = vtkXMLUnstructuredGridWriter()
    writer.SetDataModeToBinary() if binary else writer.SetDataModeToAscii()
    run_writer(writer, unstructured_grid(cloud, path), path)
