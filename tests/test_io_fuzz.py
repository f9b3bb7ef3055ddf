"""Seeded, structure-aware mutation fuzzing of the point-cloud readers (issue 19).

Every reader family starts from valid files written by register's own writers
(:func:`register.io.write_points`, with attributes, faces and lines; legacy VTK also from VTK's own
writer, which adds string arrays, dataset ``FIELD`` data, the 5.x cell layout and unstructured
grids; ``binary_compressed`` PCD is re-packed from the writer's binary PCD). Each mutant is made
of 1 to 3 mutations: bit flips, byte inserts / deletes, truncation at a random offset, header
count edits (a number replaced by 0, -1, off-by-one, doubled or huge), duplicated / removed /
swapped header lines, swapped type keywords, and format-specific edits (NPY header dicts, NPZ
members and zip fields, VTK XML attributes and base64 blocks).

Every mutant is read by :func:`register.io.read_points` in a worker subprocess (one per family,
restarted after a hang, a crash or a blow-up) whose address space is limited (``RLIMIT_AS``,
1 GiB over its baseline) and whose peak RSS is watched (256 MiB); each read has a time limit
(2 s, and a read over it is tried once more for 8 s in a fresh worker, so a loaded machine does
not count as a hang). The oracle, by outcome kind:

* ``accepted``: a finite, consistent cloud (points ``(N, D)`` finite float64 with N >= 1 and
  D in {2, 3}, numeric attributes of length N, faces / lines integer indices in ``[0, N)``);
* ``rejected``: an :class:`InputError` whose one-line message names the file;
* failures: ``bad_accept`` (a cloud failing those checks), ``bad_message``, ``fallback`` (an
  unexpected exception that only ``read_points``' catch-all turned into an InputError: the
  reader did not check something), ``crash:<type>``, ``died:<signal>``, ``hang``, ``memory``
  (a MemoryError anywhere in the exception chain, or the RSS bound).

A failure prints the family, seed, index and mutations, and is reproduced in-process with::

    python tests/test_io_fuzz.py replay FAMILY INDEX [--seed SEED]

and the whole table of outcomes by family is printed by::

    python tests/test_io_fuzz.py campaign [--mutants N] [--seed SEED]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = 19  # the issue number; every mutant is a pure function of (SEED, family, index)
MUTANTS = 300  # per family in the default run
SLOW_FACTOR = 10  # the @slow campaign
READ_TIMEOUT = 2.0  # seconds per read (a timed-out read is retried once with RETRY_TIMEOUT)
RETRY_TIMEOUT = 8.0
ADDRESS_SPACE = 1 << 30  # bytes of address space a worker may add after its imports
RSS_GROWTH = 256 << 20  # bytes of peak-RSS growth over the worker's baseline counted as a blow-up
HUGE = (10**12, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**64, 10**30)

# ----------------------------------------------------------------------------------------------
# valid seed files


def _seed_cloud(n: int, seed: int, faces: int = 3, lines: bool = True):
    """A small cloud with the usual attribute kinds (float64, uint8, int32, float32, (N, 3))."""
    from register.core.pointcloud import PointCloud

    rng = np.random.default_rng(seed)
    data = {
        "radius": rng.random(n) * 5,
        "label": rng.integers(0, 4, n).astype(np.uint8),  # few values: LZF back-references
        "normal": rng.normal(size=(n, 3)),
        "intensity": rng.random(n).astype(np.float32),
        "index": np.arange(n, dtype=np.int32),
    }
    face_array = rng.integers(0, n, size=(n // 2, faces)).astype(np.int64) if faces else None
    line_array = np.column_stack([np.arange(n - 1), np.arange(1, n)]).astype(np.int64) if lines else None
    return PointCloud(rng.normal(size=(n, 3)) * 10, data, face_array, line_array)


def _written(ext: str, cloud, **options) -> bytes:
    """The bytes :func:`register.io.write_points` writes for ``cloud``."""
    from register.io import write_points

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"seed{ext}"
        write_points(path, cloud, **options)
        return path.read_bytes()


def lzf_compress(raw: bytes) -> bytes:
    """A small greedy LZF compressor (liblzf stream format), to make ``binary_compressed`` PCDs.

    Back references are at most 8192 bytes back and 264 bytes long; literals run up to 32 bytes.
    """
    out = bytearray()
    literal = bytearray()
    table: dict[bytes, int] = {}

    def flush() -> None:
        for start in range(0, len(literal), 32):
            chunk = literal[start : start + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literal.clear()

    i, n = 0, len(raw)
    while i < n:
        if i + 2 < n:
            key = raw[i : i + 3]
            ref = table.get(key)
            table[key] = i
            if ref is not None and i - ref - 1 < 8192:
                length = 3
                while length < min(264, n - i) and raw[ref + length] == raw[i + length]:
                    length += 1
                flush()
                offset, code = i - ref - 1, length - 2
                if code < 7:
                    out.append((code << 5) | (offset >> 8))
                else:
                    out += bytes([(7 << 5) | (offset >> 8), code - 7])
                out.append(offset & 0xFF)
                i += length
                continue
        literal.append(raw[i])
        i += 1
    flush()
    return bytes(out)


def _compressed_pcd(binary_pcd: bytes) -> bytes:
    """Re-pack a ``DATA binary`` PCD written by register as ``DATA binary_compressed``."""
    end = binary_pcd.index(b"DATA binary\n") + len(b"DATA binary\n")
    header = binary_pcd[:end].decode()
    words = {line.split()[0]: line.split()[1:] for line in header.splitlines() if line[:1].isalpha()}
    kinds = {"F": "f", "U": "u", "I": "i"}
    dtype = np.dtype(
        [
            (f"f{i}", f"<{kinds[t]}{s}", (int(c),))
            for i, (t, s, c) in enumerate(zip(words["TYPE"], words["SIZE"], words["COUNT"], strict=True))
        ]
    )
    records = np.frombuffer(binary_pcd, dtype, int(words["POINTS"][0]), end)
    raw = b"".join(records[name].tobytes() for name in dtype.names)  # field by field (SoA)
    body = lzf_compress(raw)
    new_header = header.replace("DATA binary\n", "DATA binary_compressed\n").encode()
    return new_header + struct.pack("<II", len(body), len(raw)) + body


def _vtk_written(mesh, version: int, binary: bool) -> bytes:
    """Legacy VTK bytes written by VTK's own writer (poly data or unstructured grid)."""
    from vtkmodules import vtkIOLegacy

    grid = mesh.IsA("vtkUnstructuredGrid")
    writer = vtkIOLegacy.vtkUnstructuredGridWriter() if grid else vtkIOLegacy.vtkPolyDataWriter()
    writer.SetFileVersion(version)
    writer.SetFileTypeToBinary() if binary else writer.SetFileTypeToASCII()
    writer.SetInputData(mesh)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.vtk"
        writer.SetFileName(str(path))
        writer.Write()
        return path.read_bytes()


def _vtk_meshes() -> list:
    """Poly data with strips, polylines, string and 64-bit arrays, field data; a mixed grid."""
    import pyvista as pv

    points = np.random.default_rng(3).normal(size=(8, 3))
    poly = pv.PolyData(
        points,
        faces=np.array([3, 0, 1, 2, 3, 4, 5, 6]),
        strips=np.array([4, 0, 1, 2, 3]),
        lines=np.array([3, 3, 4, 5]),
    )
    poly.point_data["big ids"] = np.arange(8, dtype=np.int64) * 10**12
    poly.point_data["vec"] = points * 2
    poly.point_data["names"] = np.array(["a", "bb", "c", "d", "e", "f", "g", "h"])
    poly.field_data["note"] = ["hello world", "two"]
    poly.field_data["per point"] = np.arange(8.0)
    cells = np.array([3, 0, 1, 2, 3, 1, 2, 3, 4, 0, 1, 2, 3, 2, 3, 4, 1, 4, 4, 4, 5, 6, 7])
    types = np.array(
        [
            pv.CellType.TRIANGLE,
            pv.CellType.TRIANGLE,
            pv.CellType.TETRA,
            pv.CellType.LINE,
            pv.CellType.VERTEX,
            pv.CellType.POLY_LINE,
        ],
        np.uint8,
    )
    grid = pv.UnstructuredGrid(cells[:18].tolist() + [4, 4, 5, 6, 7], types, points)
    grid.point_data["w"] = np.linspace(0, 1, 8)
    grid.point_data["tags"] = np.array(["x"] * 8)
    return [poly, grid]


def _legacy_vtk_seeds(binary: bool) -> list[bytes]:
    seeds = [_written(".vtk", _seed_cloud(12, 1), binary=binary)]
    seeds.append(_written(".vtk", _seed_cloud(10, 2, faces=4, lines=False), binary=binary))
    for mesh in _vtk_meshes():
        seeds += [_vtk_written(mesh, 42, binary), _vtk_written(mesh, 51, binary)]
    return seeds


def _npz_seeds() -> list[bytes]:
    seeds = [_written(".npz", _seed_cloud(12, 1)), _written(".npz", _seed_cloud(9, 2, faces=4, lines=False))]
    buffer = io.BytesIO()
    np.savez(buffer, points=np.random.default_rng(5).normal(size=(7, 2)), w=np.arange(7.0))  # stored
    return [*seeds, buffer.getvalue()]


def _xml_seeds(ext: str) -> list[bytes]:
    """register's own .vtp / .vtu (binary and ASCII), and VTK-written variants of a mesh with
    strips, polylines and field data: appended raw or base64 data, no / LZ4 / LZMA compression,
    UInt64 headers, several blocks per array, two pieces."""
    from vtkmodules import vtkIOXML

    seeds = [
        _written(ext, _seed_cloud(12, 1)),
        _written(ext, _seed_cloud(10, 2, faces=4, lines=False), binary=False),
    ]
    mesh = _vtk_meshes()[0 if ext == ".vtp" else 1]
    variants = [("Appended", "None", 32, False, 1), ("Appended", "LZ4", 64, True, 1),
                ("Binary", "LZMA", 32, True, 1), ("Appended", "ZLib", 32, False, 2)]  # fmt: skip
    for mode, compressor, header, encode, pieces in variants:
        writer = vtkIOXML.vtkXMLPolyDataWriter() if ext == ".vtp" else vtkIOXML.vtkXMLUnstructuredGridWriter()
        writer.SetInputData(mesh)
        getattr(writer, f"SetDataModeTo{mode}")()
        getattr(writer, f"SetCompressorTypeTo{compressor}")()
        getattr(writer, f"SetHeaderTypeToUInt{header}")()
        writer.SetEncodeAppendedData(encode)
        writer.SetBlockSize(64)  # several blocks per array
        writer.SetNumberOfPieces(pieces)
        with tempfile.TemporaryDirectory() as tmp:
            writer.SetFileName(str(Path(tmp) / f"seed{ext}"))
            writer.Write()
            seeds.append(Path(writer.GetFileName()).read_bytes())
    return seeds


# ----------------------------------------------------------------------------------------------
# mutations

Mutation = Callable[[bytes, np.random.Generator], tuple[bytes, str]]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _hostile_number(rng: np.random.Generator, value: int) -> int:
    """0, -1, off-by-one, doubled, huge or random in place of ``value``."""
    choices = [0, -1, value - 1, value + 1, 2 * value, value * 1000 + 7, *HUGE, int(rng.integers(0, 1 << 16))]
    return _pick(rng, choices)


def _span(data: bytes, region: tuple[int, int] | None) -> tuple[int, int]:
    return region if region is not None and region[1] > region[0] else (0, len(data))


def bit_flips(region: Callable[[bytes], tuple[int, int] | None] | None = None) -> Mutation:
    """Flip 1-8 random bits, half of the time inside ``region(data)`` (e.g. the header)."""

    def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        if not data:
            return data, "flip nothing"
        lo, hi = _span(data, region(data) if region and rng.random() < 0.5 else None)
        out = bytearray(data)
        flips = []
        for _ in range(int(rng.integers(1, 9))):
            pos, bit = int(rng.integers(lo, hi)), int(rng.integers(8))
            out[pos] ^= 1 << bit
            flips.append(f"{pos}.{bit}")
        return bytes(out), f"flip bits {','.join(flips)}"

    return mutate


def insert_bytes(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Insert 1-16 random bytes, or a copy of a slice of the file, at a random offset."""
    pos = int(rng.integers(len(data) + 1))
    if rng.random() < 0.5 and data:
        start = int(rng.integers(len(data)))
        chunk = data[start : start + int(rng.integers(1, 64))]
    else:
        chunk = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    return data[:pos] + chunk + data[pos:], f"insert {len(chunk)} bytes at {pos}"


def delete_bytes(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Delete 1-16 bytes at a random offset."""
    pos, k = int(rng.integers(len(data) + 1)), int(rng.integers(1, 17))
    return data[:pos] + data[pos + k :], f"delete {k} bytes at {pos}"


def truncate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Cut the file at a random offset."""
    cut = int(rng.integers(len(data) + 1))
    return data[:cut], f"truncate at {cut} of {len(data)}"


def byte_mutations(region: Callable[[bytes], tuple[int, int] | None] | None = None) -> list[Mutation]:
    """The format-blind mutations: bit flips (half in ``region``), inserts, deletes, truncation."""
    return [bit_flips(region), insert_bytes, delete_bytes, truncate]


_NUMBER = re.compile(rb"(?<![\w.+-])-?\d+(?![\w.])")


def number_edit(region: Callable[[bytes], list[tuple[int, int]]]) -> Mutation:
    """Replace one integer inside the text spans ``region(data)`` by a hostile number."""

    def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        found = [
            (lo + m.start(), lo + m.end()) for lo, hi in region(data) for m in _NUMBER.finditer(data[lo:hi])
        ]
        if not found:
            return data, "no number to edit"
        start, end = _pick(rng, found)
        new = _hostile_number(rng, int(data[start:end]))
        return data[:start] + str(new).encode() + data[end:], f"number {data[start:end]!r}@{start} -> {new}"

    return mutate


def line_edit(region: Callable[[bytes], tuple[int, int] | None]) -> Mutation:
    """Duplicate, remove or swap lines inside ``region(data)`` (the text header)."""

    def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        lo, hi = _span(data, region(data) if region else None)
        lines = data[lo:hi].split(b"\n")
        if len(lines) < 2:
            return data, "no line to edit"
        i, j = int(rng.integers(len(lines))), int(rng.integers(len(lines)))
        action = _pick(rng, ["duplicate", "remove", "swap"])
        if action == "duplicate":
            lines.insert(j, lines[i])
        elif action == "remove":
            del lines[i]
        else:
            lines[i], lines[j] = lines[j], lines[i]
        return data[:lo] + b"\n".join(lines) + data[hi:], f"{action} header line {i} (with {j})"

    return mutate


def word_swap(words: tuple[bytes, ...], region: Callable[[bytes], tuple[int, int] | None]) -> Mutation:
    """Replace one occurrence of a keyword of the format by another one (e.g. a type name)."""
    pattern = re.compile(rb"(?<![\w])(" + b"|".join(re.escape(w) for w in words) + rb")(?![\w])")

    def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        lo, hi = _span(data, region(data) if region else None)
        found = list(pattern.finditer(data, lo, hi))
        if not found:
            return data, "no keyword to swap"
        match = _pick(rng, found)
        new = _pick(rng, words)
        return data[: match.start()] + new + data[match.end() :], f"word {match.group()!r} -> {new!r}"

    return mutate


def token_edit(region: Callable[[bytes], tuple[int, int] | None]) -> Mutation:
    """Replace one whitespace/comma separated token of a text body by a hostile one."""
    replacements = (
        b"nan",
        b"inf",
        b"-inf",
        b"1e999",
        b"-1",
        b"0",
        b"abc",
        b"",
        b"3.5",
        b"1,2",
        b"\x00",
        b"\xff",
    )

    def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        lo, hi = _span(data, region(data) if region else None)
        found = list(re.finditer(rb"[^\s,;]+", data[lo:hi]))
        if not found:
            return data, "no token to edit"
        match = _pick(rng, found)
        new = _pick(rng, [*replacements, str(_pick(rng, HUGE)).encode()])
        start, end = lo + match.start(), lo + match.end()
        return data[:start] + new + data[end:], f"token {match.group()[:20]!r}@{start} -> {new!r}"

    return mutate


def _text_header(marker: bytes) -> Callable[[bytes], tuple[int, int] | None]:
    """The header span: from the start to the end of the first line starting with ``marker``."""

    def region(data: bytes) -> tuple[int, int] | None:
        match = re.search(rb"^" + re.escape(marker) + rb"[^\n]*\n?", data, re.MULTILINE)
        return (0, match.end()) if match else None

    return region


def _after(region: Callable[[bytes], tuple[int, int] | None]) -> Callable[[bytes], tuple[int, int] | None]:
    """The body: everything after ``region``."""

    def body(data: bytes) -> tuple[int, int] | None:
        span = region(data)
        return (span[1], len(data)) if span else None

    return body


def _one(region: Callable[[bytes], tuple[int, int] | None]) -> Callable[[bytes], list[tuple[int, int]]]:
    def spans(data: bytes) -> list[tuple[int, int]]:
        span = region(data)
        return [span] if span else []

    return spans


_VTK_KEYWORD_LINE = re.compile(rb"^[A-Z_]{4,}(?: [^\n]*)?$|^[A-Za-z][\w%]* \d+ \d+ \w+$", re.MULTILINE)


def _vtk_keyword_lines(data: bytes) -> list[tuple[int, int]]:
    """Spans of the keyword lines of a legacy VTK file (``POINTS 12 double``, ``name 1 12 int``)."""
    return [m.span() for m in _VTK_KEYWORD_LINE.finditer(data)]


def _vtk_header(data: bytes) -> tuple[int, int] | None:
    """From the first to the last keyword line (in binary files the data sit in between)."""
    spans = _vtk_keyword_lines(data)
    return (0, spans[-1][1]) if spans else None


def _vtk_line_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Duplicate or remove one keyword line of a legacy VTK file."""
    spans = _vtk_keyword_lines(data)
    if not spans:
        return data, "no keyword line"
    start, end = _pick(rng, spans)
    line = data[start : end + 1]
    if rng.random() < 0.5:
        return data[:start] + line + data[start:], f"duplicate line {line.strip()!r}"
    return data[:start] + data[end + 1 :], f"remove line {line.strip()!r}"


def _npy_header(data: bytes) -> tuple[int, int] | None:
    """The dict text of an ``.npy`` header."""
    end = data.find(b"}", 0, 70000)
    return (8, end + 1) if data.startswith(b"\x93NUMPY") and end > 0 else None


def _npy_length_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Set the header-length field (bytes 8-9, or 8-11 for version 2/3) or the version byte."""
    if len(data) < 12:
        return data, "too short for the length field"
    if rng.random() < 0.3:
        version = _pick(rng, [0, 1, 2, 3, 4, 255])
        return data[:6] + bytes([version]) + data[7:], f"npy major version -> {version}"
    value = _pick(rng, [0, 1, 9, 10, 118, 127, 128, 1000, 65535])
    return data[:8] + struct.pack("<H", value) + data[10:], f"npy header length -> {value}"


_NPY_DESCR = (b"'<f8'", b"'<f4'", b"'>f8'", b"'<i8'", b"'|u1'", b"'|b1'", b"'|O'", b"'<U3'", b"'<c16'", b"'|V8'",
              b"'<M8[s]'", b"'<f2'", b"[('a', '<f8')]", b"'<f16'")  # fmt: skip


def _npy_descr_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    match = re.search(rb"'descr': ('[^']*'|\[[^\]]*\])", data[:4096])
    if match is None:
        return data, "no descr"
    new = _pick(rng, _NPY_DESCR)
    return data[: match.start(1)] + new + data[match.end(1) :], f"descr {match.group(1)!r} -> {new!r}"


def _npy_order_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    for old, new in ((b"'fortran_order': False", b"'fortran_order': True"), (b"'fortran_order': True", b"'fortran_order': False")):  # fmt: skip
        if old in data[:4096]:
            return data.replace(old, new, 1), f"{old!r} -> {new!r}"
    return data, "no fortran_order"


def _npy_append(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    extra = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return data + extra, f"append {len(extra)} bytes"


NPY_MUTATIONS: list[Mutation] = [
    *byte_mutations(_npy_header),
    number_edit(_one(_npy_header)),
    number_edit(_one(_npy_header)),
    _npy_length_edit,
    _npy_descr_edit,
    _npy_order_edit,
    _npy_append,
]


def _pick_member(data: bytes, rng: np.random.Generator) -> tuple[list[tuple[str, bytes]], int] | None:
    """The members of a zip (name, bytes) and a random index into them; ``None`` if unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            named = [(info.filename, archive.read(info)) for info in archive.infolist()]
    except Exception:  # a mutant of a mutant: not a zip any more
        return None
    return (named, int(rng.integers(len(named)))) if named else None


def _rezip(members: list[tuple[str, bytes]], stored: bool) -> bytes:
    buffer = io.BytesIO()
    with (
        warnings.catch_warnings(),  # duplicate member names are one of the mutations
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as archive,
    ):
        warnings.simplefilter("ignore")
        for name, payload in members:
            archive.writestr(name, payload)
    return buffer.getvalue()


def _npz_member_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Mutate one ``.npy`` member with an NPY mutation (or drop / rename / replace one), re-zip."""
    picked = _pick_member(data, rng)
    if picked is None:
        return data, "not a readable zip"
    named, i = picked
    name, payload = named[i]
    action = _pick(rng, ["mutate", "mutate", "mutate", "drop", "rename", "replace"])
    if action == "mutate":
        new, what = _pick(rng, NPY_MUTATIONS)(payload, rng)
        named[i] = (name, new)
        detail = f"member {name}: {what}"
    elif action == "drop":
        del named[i]
        detail = f"drop member {name}"
    elif action == "rename":
        new_name = _pick(rng, ["points.npy", "faces.npy", "lines.npy", "x.npy", "points", "../evil.npy"])
        named[i] = (new_name, payload)
        detail = f"rename member {name} -> {new_name}"
    else:
        buffer = io.BytesIO()
        replacement = _pick(
            rng,
            [
                np.array([[0, 1, 99]]),
                np.array([[0.5, 1, 2]]),
                np.zeros((3, 3, 3)),
                np.array([[-1, 0]]),
                np.zeros((0, 3)),
                np.array(["a", "b"]),
                np.full((4, 3), np.nan),
                np.zeros((2**20, 0)),
            ],
        )
        np.save(buffer, replacement)
        named[i] = (name, buffer.getvalue())
        detail = f"replace member {name} by {replacement.dtype}{replacement.shape}"
    stored = rng.random() < 0.3
    return _rezip(named, stored), detail + (" (stored)" if stored else "")


def _zip_field_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Set a size, count or offset field of a local header, the central directory or its end record."""
    fields = []  # (offset, struct format, name)
    for m in re.finditer(rb"PK\x03\x04", data):
        base = m.start()
        fields += [(base + 18, "<I", "local compressed size"), (base + 22, "<I", "local file size"),
                   (base + 26, "<H", "local name length"), (base + 8, "<H", "local method")]  # fmt: skip
    for m in re.finditer(rb"PK\x01\x02", data):
        base = m.start()
        fields += [(base + 20, "<I", "central compressed size"), (base + 24, "<I", "central file size"),
                   (base + 42, "<I", "central local offset"), (base + 10, "<H", "central method")]  # fmt: skip
    for m in re.finditer(rb"PK\x05\x06", data):
        base = m.start()
        fields += [(base + 10, "<H", "end entries"), (base + 12, "<I", "end directory size"),
                   (base + 16, "<I", "end directory offset")]  # fmt: skip
    fields = [f for f in fields if f[0] + struct.calcsize(f[1]) <= len(data)]
    if not fields:
        return data, "no zip field"
    offset, fmt, name = _pick(rng, fields)
    old = struct.unpack_from(fmt, data, offset)[0]
    top = (1 << (8 * struct.calcsize(fmt))) - 1
    new = _pick(rng, [0, 1, old - 1, old + 1, 2 * old, top, top // 2, 8, 12, 14])
    new = min(max(new, 0), top)
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, new)
    return bytes(out), f"{name}@{offset}: {old} -> {new}"


def _npz_bomb(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Replace one member by a well-formed, highly compressed array of zeros (up to 24 MB expanded)."""
    picked = _pick_member(data, rng)
    if picked is None:
        return data, "not a readable zip"
    named, i = picked
    shape = (_pick(rng, [10**5, 10**6]), _pick(rng, [1, 3]))  # up to 24 MB: within the time and RSS bounds
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    payload = header.getvalue() + bytes(8 * shape[0] * shape[1])
    named[i] = (named[i][0], payload)
    return _rezip(named, False), f"member {named[i][0]} -> zeros {shape} ({len(payload) >> 20} MB expanded)"


NPZ_MUTATIONS: list[Mutation] = [
    *byte_mutations(),
    _zip_field_edit,
    _zip_field_edit,
    _npz_member_edit,
    _npz_member_edit,
    _npz_member_edit,
    _npz_member_edit,
]

_XML_HEADER = re.compile(rb"^.*?(?=<AppendedData|\Z)", re.DOTALL)
_XML_NUMBER = re.compile(rb'="(\d+)"')


def _xml_head(data: bytes) -> tuple[int, int] | None:
    match = _XML_HEADER.match(data)
    return (0, match.end()) if match else None


def _xml_number_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Replace a numeric XML attribute (NumberOfPoints, offset, NumberOfComponents, ...)."""
    lo, hi = _span(data, _xml_head(data))
    found = list(_XML_NUMBER.finditer(data, lo, hi))
    if not found:
        return data, "no numeric attribute"
    match = _pick(rng, found)
    new = _hostile_number(rng, int(match.group(1)))
    start, end = match.span(1)
    return data[:start] + str(new).encode() + data[end:], f"attribute {data[start - 30 : end]!r} -> {new}"


def _xml_base64_edit(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Edit one 32-bit word of the first base64 chunk of an inline data block (its block header)."""
    import base64

    found = list(re.finditer(rb">\s*([A-Za-z0-9+/=]{16,})\s*<", data))
    if not found:
        return data, "no base64 block"
    match = _pick(rng, found)
    text = match.group(1)
    padded = re.match(rb"[A-Za-z0-9+/]*=*", text).end()  # the header chunk ends at its padding
    size = min(padded, 24) // 4 * 4
    raw = bytearray(base64.b64decode(text[:size]))
    if len(raw) < 4:
        return data, "base64 chunk too short"
    pos = int(rng.integers(0, len(raw) // 4)) * 4
    old = int.from_bytes(raw[pos : pos + 4], "little")
    value = _pick(rng, [0, 1, 2**31, 2**32 - 1, 10**6, old + 1, max(old - 1, 0)])
    raw[pos : pos + 4] = value.to_bytes(4, "little")
    start = match.start(1)
    new = base64.b64encode(bytes(raw))
    return data[:start] + new + data[
        start + size :
    ], f"base64 block@{start}: word {pos // 4} {old} -> {value}"


_XML_TYPES = (b"Float32", b"Float64", b"Int8", b"UInt8", b"Int32", b"UInt32", b"Int64", b"UInt64", b"String",
              b"ascii", b"binary", b"appended", b"UInt16", b"Bit")  # fmt: skip

XML_MUTATIONS: list[Mutation] = [
    *byte_mutations(_xml_head),
    _xml_number_edit,
    _xml_number_edit,
    _xml_number_edit,
    _xml_base64_edit,
    word_swap(_XML_TYPES, _xml_head),
    line_edit(_xml_head),
]

_PLY_HEADER = _text_header(b"end_header")
_PLY_WORDS = (b"char", b"uchar", b"short", b"ushort", b"int", b"uint", b"float", b"double", b"int8", b"list",
              b"binary_little_endian", b"binary_big_endian", b"ascii", b"vertex", b"face", b"edge",
              b"vertex_indices", b"x", b"z")  # fmt: skip
_PCD_HEADER = _text_header(b"DATA")
_PCD_WORDS = (b"F", b"U", b"I", b"ascii", b"binary", b"binary_compressed", b"x", b"y", b"z", b"_",
              b"FIELDS", b"POINTS", b"WIDTH", b"HEIGHT", b"SIZE", b"COUNT")  # fmt: skip
_VTK_WORDS = (b"float", b"double", b"int", b"unsigned_char", b"vtktypeint64", b"string", b"long", b"char",
              b"POINTS", b"POLYGONS", b"LINES", b"VERTICES", b"TRIANGLE_STRIPS", b"CELLS", b"CELL_TYPES",
              b"POINT_DATA", b"CELL_DATA", b"FIELD", b"SCALARS", b"VECTORS", b"NORMALS", b"LOOKUP_TABLE",
              b"OFFSETS", b"CONNECTIVITY", b"METADATA", b"NULL_ARRAY", b"ASCII", b"BINARY")  # fmt: skip
_TEXT_WORDS = (b"x", b"y", b"z", b"X", b"radius", b"normal_0", b"1", b"nan")


def _header_mutations(header, words, *, ascii_body: bool) -> list[Mutation]:
    """The mutations of a format with a text header (PLY, PCD)."""
    mutations = [
        *byte_mutations(header),
        number_edit(_one(header)),
        number_edit(_one(header)),
        number_edit(_one(header)),
        line_edit(header),
        line_edit(header),
        word_swap(words, header),
    ]
    if ascii_body:
        mutations += [token_edit(_after(header)), line_edit(_after(header))]
    return mutations


def _vtk_mutations(ascii_body: bool) -> list[Mutation]:
    mutations = [
        *byte_mutations(_vtk_header),
        number_edit(_vtk_keyword_lines),
        number_edit(_vtk_keyword_lines),
        number_edit(_vtk_keyword_lines),
        _vtk_line_edit,
        _vtk_line_edit,
        word_swap(_VTK_WORDS, None),
    ]
    if ascii_body:
        whole = lambda data: (0, len(data))  # noqa: E731
        mutations += [token_edit(whole), number_edit(lambda data: [(0, len(data))])]
    return mutations


def _text_mutations() -> list[Mutation]:
    whole = lambda data: (0, len(data))  # noqa: E731
    first = _text_header(b"")  # the first line

    def separators(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        old, new = _pick(rng, [b",", b" ", b";", b"\t"]), _pick(rng, [b",", b" ", b";", b"\t", b",,", b"#"])
        positions = [m.start() for m in re.finditer(re.escape(old), data)]
        if not positions:
            return data, "no separator"
        pos = _pick(rng, positions)
        return data[:pos] + new + data[pos + len(old) :], f"separator {old!r}@{pos} -> {new!r}"

    return [
        *byte_mutations(),
        token_edit(whole),
        token_edit(whole),
        line_edit(whole),
        line_edit(whole),
        separators,
        word_swap(_TEXT_WORDS, first),
    ]


@dataclass(frozen=True)
class Family:
    """One reader family: the extension(s) its mutants get, its seed files and its mutations."""

    name: str
    extensions: tuple[str, ...]
    seeds: Callable[[], list[bytes]]
    mutations: list[Mutation]
    imports: tuple[str, ...] = ()  # modules the worker imports up front (outside the time limit)


def _families() -> dict[str, Family]:
    vtk = ("vtkmodules.vtkIOCore",)  # LZ4 blocks are decompressed by VTK
    ply_mutations = _header_mutations(_PLY_HEADER, _PLY_WORDS, ascii_body=True)
    pcd_mutations = _header_mutations(_PCD_HEADER, _PCD_WORDS, ascii_body=True)
    families = [
        Family(
            "ply-ascii",
            (".ply",),
            lambda: [
                _written(".ply", _seed_cloud(12, 1), binary=False),
                _written(".ply", _seed_cloud(10, 2, faces=4), binary=False),
            ],
            ply_mutations,
        ),
        Family(
            "ply-binary",
            (".ply",),
            _ply_binary_seeds,
            _header_mutations(_PLY_HEADER, _PLY_WORDS, ascii_body=False),
        ),
        Family(
            "pcd-ascii",
            (".pcd",),
            lambda: [_written(".pcd", _seed_cloud(12, 1), binary=False)],
            pcd_mutations,
        ),
        Family(
            "pcd-binary",
            (".pcd",),
            lambda: [_written(".pcd", _seed_cloud(12, 1))],
            _header_mutations(_PCD_HEADER, _PCD_WORDS, ascii_body=False),
        ),
        Family(
            "pcd-compressed",
            (".pcd",),
            lambda: [_compressed_pcd(_written(".pcd", _seed_cloud(24, 1)))],
            _header_mutations(_PCD_HEADER, _PCD_WORDS, ascii_body=False),
        ),
        Family("vtk-ascii", (".vtk",), lambda: _legacy_vtk_seeds(False), _vtk_mutations(True)),
        Family("vtk-binary", (".vtk",), lambda: _legacy_vtk_seeds(True), _vtk_mutations(False)),
        Family("text", (".csv", ".xyz", ".txt"), _text_seeds, _text_mutations()),
        Family(
            "npy",
            (".npy",),
            lambda: [
                _written(".npy", _seed_cloud(12, 1)),
                _written(".npy", _seed_cloud(7, 2).with_points(np.ones((7, 2)))),
            ],
            NPY_MUTATIONS,
        ),
        Family("npz", (".npz",), _npz_seeds, NPZ_MUTATIONS),
        Family("vtp", (".vtp",), lambda: _xml_seeds(".vtp"), XML_MUTATIONS, vtk),
        Family("vtu", (".vtu",), lambda: _xml_seeds(".vtu"), XML_MUTATIONS, vtk),
    ]
    return {f.name: f for f in families}


def _ply_binary_seeds() -> list[bytes]:
    from register.io.ply_write import write_ply

    seeds = [_written(".ply", _seed_cloud(12, 1))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.ply"
        write_ply(path, _seed_cloud(10, 2, faces=4), byte_order=">")
        seeds.append(path.read_bytes())
    return seeds


def _text_seeds() -> list[bytes]:
    from register.core.pointcloud import PointCloud

    return [
        _written(".csv", _seed_cloud(10, 1)),
        _written(".xyz", PointCloud(np.random.default_rng(2).normal(size=(10, 3)))),
        _written(".txt", _seed_cloud(8, 3)),
    ]


FAMILIES = _families()


def make_mutant(family: Family, seeds: list[bytes], index: int, seed: int = SEED) -> tuple[bytes, str, str]:
    """Mutant ``index`` of ``family``: its bytes, extension and a description of its mutations."""
    rng = np.random.default_rng([seed, zlib.crc32(family.name.encode()), index])
    base = int(rng.integers(len(seeds)))
    ext = family.extensions[base % len(family.extensions)]
    data = seeds[base]
    steps = [f"seed file {base}"]
    mutations = list(family.mutations)
    if family.name == "npz" and index % 50 == 49:  # a few decompression bombs (slow to make)
        mutations = [_npz_bomb]
    for _ in range(int(rng.integers(1, 4))):
        data, what = _pick(rng, mutations)(data, rng)
        steps.append(what)
    return data, ext, "; ".join(steps)


# ----------------------------------------------------------------------------------------------
# the oracle (runs in the worker)


def check_read(path: Path) -> tuple[str, str]:
    """Read ``path`` and classify the outcome: ``(kind, detail)``; kinds are listed in the module doc."""
    from register.errors import InputError
    from register.io import read_points

    try:
        cloud = read_points(path)
    except InputError as exc:
        return _classify_error(exc, path)
    except MemoryError:
        return "memory", "MemoryError: " + traceback.format_exc(limit=-3)[-600:]
    except RecursionError:
        return "crash:RecursionError", traceback.format_exc(limit=-3)[-600:]
    except Exception as exc:
        return f"crash:{type(exc).__name__}", traceback.format_exc(limit=-4)[-900:]
    problems = cloud_problems(cloud, path)
    return ("bad_accept", "; ".join(problems)) if problems else ("accepted", f"{cloud.points.shape}")


def _classify_error(exc: BaseException, path: Path) -> tuple[str, str]:
    message = str(exc)
    chain, link = [], exc
    while link is not None:
        chain.append(type(link).__name__)
        link = link.__cause__ or link.__context__
    if "MemoryError" in chain:
        return "memory", f"MemoryError behind an InputError: {message[:300]}"
    if str(path) not in message:
        return "bad_message", f"the message does not name the file: {message[:300]}"
    if "\n" in message:
        return "bad_message", f"the message is not one line: {message[:300]!r}"
    cause = exc.__cause__
    if cause is not None and "could not be read as" in message:
        return "fallback", f"{type(cause).__name__} wrapped by read_points: {message[:200]}"
    return "rejected", message[len(str(path)) + 2 :][:120]


def cloud_problems(cloud, path: Path) -> list[str]:
    """What is wrong with an accepted cloud (an empty list if it is finite and consistent)."""
    problems = []
    points = cloud.points
    if not isinstance(points, np.ndarray) or points.dtype != np.float64 or points.ndim != 2:
        return [f"points are {type(points).__name__} {getattr(points, 'dtype', '')} {np.shape(points)}"]
    n = len(points)
    if n < 1 or points.shape[1] not in (2, 3):
        problems.append(f"points have shape {points.shape}")
    if not np.isfinite(points).all():
        problems.append("points are not finite")
    for name, arr in cloud.point_data.items():
        if not isinstance(arr, np.ndarray) or arr.ndim not in (1, 2) or len(arr) != n:
            problems.append(f"attribute {name!r} has shape {np.shape(arr)} for {n} points")
        elif arr.dtype.kind not in "biuf":
            problems.append(f"attribute {name!r} has dtype {arr.dtype}")
    for what in ("faces", "lines"):
        cells = getattr(cloud, what)
        if cells is None:
            continue
        if not isinstance(cells, np.ndarray) or cells.ndim != 2 or cells.dtype.kind not in "iu":
            problems.append(f"{what} are {getattr(cells, 'dtype', '')} {np.shape(cells)}")
        elif cells.size and (cells.min() < 0 or cells.max() >= n):
            problems.append(f"{what} indices {cells.min()}..{cells.max()} for {n} points")
        elif what == "lines" and cells.shape[1] != 2:
            problems.append(f"lines have shape {cells.shape}")
    if cloud.path != str(path):
        problems.append(f"cloud.path is {cloud.path!r}")
    return problems


# ----------------------------------------------------------------------------------------------
# the worker subprocess


def _status(field: str) -> int:
    """A size from ``/proc/self/status`` in bytes (Linux): ``VmSize`` (address space) or ``VmHWM``.

    ``VmHWM`` is the peak RSS of this process's own memory map; ``ru_maxrss`` is not used
    because a fork+exec child starts with its parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def worker_main(imports: list[str]) -> None:
    """Read one path per stdin line; answer one JSON line each (kind, detail, seconds)."""
    import importlib

    import register.io  # noqa: F401

    for name in imports:
        importlib.import_module(name)
    limit = _status("VmSize") + ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    baseline = _status("VmHWM")
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        path = Path(line.rstrip("\n"))
        start = time.perf_counter()
        kind, detail = check_read(path)
        seconds = time.perf_counter() - start
        grown = _status("VmHWM") - baseline
        if grown > RSS_GROWTH and kind != "memory":
            kind, detail = "memory", f"peak RSS grew by {grown >> 20} MB ({kind}: {detail[:200]})"
        out.write(json.dumps({"kind": kind, "detail": detail, "seconds": seconds}) + "\n")
        out.flush()
        if kind == "memory":
            return  # the parent starts a fresh worker (the RSS high-water mark cannot go down)


class Worker:
    """A worker subprocess of one family (started lazily, restarted after a hang, crash or blow-up)."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env["OMP_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "worker", *self.family.imports],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        ready = self._line(120.0)
        if ready != "ready":
            raise RuntimeError(f"fuzz worker of {self.family.name} did not start ({ready!r})")

    def _line(self, timeout: float) -> str | None:
        """The worker's next line, ``None`` after ``timeout`` seconds, ``""`` if it died."""
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().decode().strip()

    def read(self, path: Path, timeout: float) -> dict:
        """Outcome of reading ``path``: ``kind`` (``hang`` / ``died:<code>`` on failure), ``detail``."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{path}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.stop()
            return {"kind": "died:pipe", "detail": "the worker was gone", "seconds": 0.0}
        line = self._line(timeout)
        if line is None:
            self.stop()
            return {"kind": "hang", "detail": f"no answer within {timeout:.0f} s", "seconds": timeout}
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"kind": f"died:{code}", "detail": f"worker exit code {code}", "seconds": 0.0}
        result = json.loads(line)
        if result["kind"] == "memory":
            self.stop()
        return result

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()  # our own child, by its handle
            self.proc.wait()
            self.proc = None


# ----------------------------------------------------------------------------------------------
# campaigns

FAILURES = ("bad_accept", "bad_message", "fallback", "memory", "hang")


@dataclass
class Report:
    """Outcomes of one family's campaign."""

    family: str
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    fallbacks: Counter = field(default_factory=Counter)
    slowest: float = 0.0
    seconds: float = 0.0

    def failed(self, kind: str) -> bool:
        return kind in FAILURES or kind.startswith(("crash:", "died:"))


def run_family(name: str, mutants: int, seed: int = SEED, first: int = 0) -> Report:
    """Read ``mutants`` mutants of family ``name`` (indices ``first`` ...) in one worker."""
    family = FAMILIES[name]
    seeds = family.seeds()
    report = Report(name)
    worker = Worker(family)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
            for index in range(first, first + mutants):
                data, ext, steps = make_mutant(family, seeds, index, seed)
                path = Path(tmp) / f"mutant{index}{ext}"
                path.write_bytes(data)
                result = worker.read(path, READ_TIMEOUT)
                if result["kind"] == "hang":  # a loaded machine, or a real hang: once more, longer
                    result = worker.read(path, RETRY_TIMEOUT)
                path.unlink()
                kind = result["kind"]
                report.counts[kind] += 1
                report.slowest = max(report.slowest, result["seconds"])
                if kind == "fallback":
                    report.fallbacks[result["detail"].split()[0]] += 1
                if report.failed(kind):
                    report.failures.append(
                        f"{name} #{index} (seed {seed}): {kind}: {result['detail']}\n"
                        f"    mutations: {steps}\n"
                        f"    reproduce: python tests/test_io_fuzz.py replay {name} {index} --seed {seed}"
                    )
    finally:
        worker.stop()
    report.seconds = time.perf_counter() - start
    return report


def run_campaign(mutants: int, seed: int = SEED, names: list[str] | None = None) -> list[Report]:
    """All families (or ``names``), two at a time (one worker subprocess each)."""
    names = names or list(FAMILIES)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda n: run_family(n, mutants, seed), names))


def summary(reports: list[Report]) -> str:
    """A table of outcomes by family (counts of mutants), the slowest read and the run time."""
    kinds = sorted({k for r in reports for k in r.counts})
    widths = [max(len(k), 5) + 2 for k in kinds]
    head = "family".ljust(16) + "".join(k.rjust(w) for k, w in zip(kinds, widths, strict=True))
    lines = [head + "   slowest read   seconds"]
    for r in reports:
        cells = "".join(str(r.counts.get(k, 0)).rjust(w) for k, w in zip(kinds, widths, strict=True))
        lines.append(f"{r.family:<16}{cells}   {r.slowest:10.3f} s {r.seconds:9.1f}")
        if r.fallbacks:
            lines.append(f"{'':16}fallbacks by cause: {dict(r.fallbacks)}")
    return "\n".join(lines)


def _assert_clean(reports: list[Report]) -> None:
    failures = [f for r in reports for f in r.failures]
    print("\n" + summary(reports))
    assert not failures, f"{len(failures)} fuzz failures:\n" + "\n".join(failures[:40])


# ----------------------------------------------------------------------------------------------
# the tests


def test_fuzz_seeds_are_valid(tmp_path: Path) -> None:
    """Every seed file reads back (so the mutants start from valid files of each family)."""
    from register.io import read_points

    for family in FAMILIES.values():
        for i, data in enumerate(family.seeds()):
            path = tmp_path / f"{family.name}{i}{family.extensions[i % len(family.extensions)]}"
            path.write_bytes(data)
            cloud = read_points(path)
            assert not cloud_problems(cloud, path), family.name


def test_lzf_compressor_round_trips() -> None:
    from register.io.pcd import lzf_decompress

    raw = bytes(np.random.default_rng(0).integers(0, 3, 5000, dtype=np.uint8)) + bytes(3000) + b"abc" * 400
    packed = lzf_compress(raw)
    assert len(packed) < len(raw) // 3
    assert lzf_decompress(packed, len(raw)) == raw


def test_worker_detects_hangs_and_crashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a sleeping reader is a hang, a TypeError a crash, 2 GiB or 320 MiB a
    memory blow-up, an abort a dead worker; the worker is restarted after each."""
    code = (
        "import os, time, numpy as np, register.io as io\n"
        "from register.core.pointcloud import PointCloud\n"
        "def slow(path): time.sleep(30)\n"
        "def bad(path): raise TypeError('boom')\n"
        "def huge(path): return np.ones(1 << 28)\n"  # 2 GiB: over the address-space limit
        "KEEP = []\n"
        "def grow(path):\n"  # 320 MiB touched (and kept): over the RSS bound
        "    KEEP.append(np.ones(40 << 20))\n"
        "    return PointCloud(np.zeros((1, 3)))\n"
        "def die(path): os.abort()\n"
        "for name in ('slow', 'bad', 'huge', 'grow', 'die'):\n"
        "    io.register_format('.zz' + name, globals()[name], None)\n"
    )
    (tmp_path / "zzfuzzplugin.py").write_text(code)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    worker = Worker(Family("harness", (".zzslow",), list, [], ("zzfuzzplugin",)))
    expected = [("bad", "crash:TypeError"), ("slow", "hang"), ("bad", "crash:TypeError"), ("huge", "memory"),
                ("grow", "memory"), ("die", "died:-6"), ("bad", "crash:TypeError")]  # fmt: skip
    try:
        for name, kind in expected:
            path = tmp_path / f"a.zz{name}"
            path.write_bytes(b"x")
            assert worker.read(path, 0.5 if name == "slow" else 30.0)["kind"] == kind, name
    finally:
        worker.stop()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fuzz_family(name: str) -> None:
    """>= 300 mutants of one family: each read into a finite, consistent cloud or rejected cleanly."""
    _assert_clean([run_family(name, MUTANTS)])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_fuzz_family_large_campaign(name: str) -> None:
    """Ten times more mutants (other indices than the default run), behind the slow marker."""
    _assert_clean([run_family(name, MUTANTS * SLOW_FACTOR, first=MUTANTS)])


# ----------------------------------------------------------------------------------------------
# command line: worker, replay, campaign


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("imports", nargs="*")
    replay = sub.add_parser("replay", help="rebuild one mutant, save it and read it in this process")
    replay.add_argument("family", choices=list(FAMILIES))
    replay.add_argument("index", type=int)
    replay.add_argument("--seed", type=int, default=SEED)
    replay.add_argument("--keep", type=Path, help="folder to save the mutant in")
    campaign = sub.add_parser("campaign", help="print the outcome table of every family")
    campaign.add_argument("--mutants", type=int, default=MUTANTS)
    campaign.add_argument("--seed", type=int, default=SEED)
    campaign.add_argument("--family", action="append")
    campaign.add_argument("--failures", action="store_true", help="also print every failure")
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker_main(args.imports)
    elif args.command == "replay":
        family = FAMILIES[args.family]
        data, ext, steps = make_mutant(family, family.seeds(), args.index, args.seed)
        folder = args.keep or Path(tempfile.mkdtemp(prefix="fuzz-replay-"))
        path = folder / f"mutant{args.index}{ext}"
        path.write_bytes(data)
        print(f"{path}: {steps}")
        from register.io import read_points

        print(read_points(path))
    else:
        reports = run_campaign(args.mutants, args.seed, args.family)
        print(summary(reports))
        if args.failures:
            print("\n".join(f for r in reports for f in r.failures))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _main(sys.argv[1:])
