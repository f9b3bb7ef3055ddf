"""Hostile reader inputs of issue 19: headers that lie about the data that follows.

Each case is a small hand-made file whose header contradicts its data (rows 1, 10 and 13 of the
issue, and the other header lies the fuzz campaign found). Every one must be refused with an
:class:`InputError` naming the file and saying what is wrong, within a time limit (a SIGALRM
interval timer) and without memory growth (tracemalloc peak: numpy reports its allocations to
it, so a 7 TiB ``np.zeros`` or a 2 GiB preallocation shows up even when the OS overcommits).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from register.errors import InputError
from register.io import read_points

TIME_LIMIT = 2.0  # seconds per read
PEAK_LIMIT = 64 << 20  # bytes of traced allocations per read (every file here is < 2 MB)


class ReadTimeout(Exception):
    """Raised by the interval timer when a read takes longer than :data:`TIME_LIMIT`."""


def read_bounded(path: Path) -> tuple[BaseException | None, float, int]:
    """Read ``path``; return the exception raised (or ``None``), the seconds taken, the peak bytes."""

    def alarm(signum, frame):
        raise ReadTimeout(f"reading {path.name} took more than {TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    tracemalloc.start()
    start = time.perf_counter()
    error = None
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        read_points(path)
    except BaseException as exc:  # noqa: BLE001 - every outcome is reported to the test
        error = exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, previous)
    return error, seconds, peak


# ----------------------------------------------------------------------------------------------
# the files

VTK_HEAD = "# vtk DataFile Version 4.2\nhostile\nASCII\nDATASET POLYDATA\n"
VTK_POINTS = "POINTS 3 float\n0 0 0 1 0 0 0 1 0\n"


def _ply(body: str, header: str, fmt: str = "ascii") -> bytes:
    return f"ply\nformat {fmt} 1.0\n{header}end_header\n".encode() + body.encode()


def _ply_binary_vertices(declared: int, written: int) -> bytes:
    header = f"element vertex {declared}\nproperty float x\nproperty float y\nproperty float z\n"
    points = np.arange(3 * written, dtype="<f4").tobytes()
    return _ply("", header, "binary_little_endian") + points


def _pcd(header_lines: str, rows: int, kind: str = "ascii", fields: str = "x y z") -> bytes:
    n = len(fields.split())
    header = (
        f"VERSION 0.7\nFIELDS {fields}\nSIZE {' '.join(['4'] * n)}\nTYPE {' '.join(['F'] * n)}\n"
        f"COUNT {' '.join(['1'] * n)}\n{header_lines}DATA {kind}\n"
    )
    values = np.arange(rows * n, dtype="<f4").reshape(rows, n)
    if kind == "binary":
        return header.encode() + values.tobytes()
    return header.encode() + "".join(" ".join(map(str, row)) + "\n" for row in values.tolist()).encode()


def _lzf_run_bomb(expanded: int) -> bytes:
    """An LZF stream of one literal zero byte, then back references to it (264 bytes per 3)."""
    refs = expanded // 264
    return bytes([0, 0]) + bytes([0xE0, 255, 0]) * refs  # ctrl 7<<5 | offset 0, extra length 255


def _pcd_compressed_bomb() -> bytes:
    """Declares 1000 points (12000 bytes) but its LZF stream would expand to 100 MB."""
    body = _lzf_run_bomb(100 << 20)
    header = (
        "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1000\nHEIGHT 1\n"
        "POINTS 1000\nDATA binary_compressed\n"
    )
    return header.encode() + struct.pack("<II", len(body), 12000) + body


def _npy(shape: tuple[int, ...], data: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _npy_of(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr)
    return buffer.getvalue()


def _ply_many_properties() -> bytes:
    """20,000 property lines (parsed in quadratic time before: 16 s) and no vertex data at all."""
    header = "element vertex 1\nproperty float x\nproperty float y\n"
    header += "".join(f"property float p{i}\n" for i in range(20_000))
    return _ply("", header, "binary_little_endian")


@dataclass(frozen=True)
class Case:
    """A hostile file: its name, its bytes (made lazily), and words its error message must hold."""

    name: str
    content: Callable[[], bytes]
    words: tuple[str, ...]


CASES = [
    # row 1: an ASCII string array declaring 10^12 strings (the reader looped past the end of file)
    Case(
        "row1_field_strings.vtk",
        lambda: (VTK_HEAD + "FIELD FieldData 1\nnames 1 1000000000000 string\na\n" + VTK_POINTS).encode(),
        ("names", "1000000000000 strings"),
    ),
    Case(
        "row1_point_data_strings.vtk",
        lambda: (
            VTK_HEAD + "POINT_DATA 1000000000000\nSCALARS names string\nLOOKUP_TABLE default\na\n"
        ).encode(),
        ("SCALARS", "1000000000000 strings"),
    ),
    # row 10: cell counts of 10^12 (np.zeros of 7.3 TiB)
    Case(
        "row10_polygons.vtk",
        lambda: (VTK_HEAD + VTK_POINTS + "POLYGONS 1000000000000 4\n3 0 1 2\n").encode(),
        ("POLYGONS", "1000000000000 cells"),
    ),
    Case(
        "row10_cells.vtk",
        lambda: (
            VTK_HEAD.replace("POLYDATA", "UNSTRUCTURED_GRID")
            + VTK_POINTS
            + "CELLS 1000000000000 4\n3 0 1 2\nCELL_TYPES 1\n5\n"
        ).encode(),
        ("CELLS", "1000000000000 cells"),
    ),
    # other legacy VTK lies
    Case(
        "two_points_sections.vtk",
        lambda: (VTK_HEAD + VTK_POINTS + "POINTS 1 float\n5 5 5\n").encode(),
        ("two POINTS sections",),
    ),
    Case(
        "zero_components.vtk",
        lambda: (VTK_HEAD + VTK_POINTS + "POINT_DATA 3\nSCALARS w float 0\nLOOKUP_TABLE default\n").encode(),
        ("0 components",),
    ),
    # row 13: PCD headers contradicting the data
    Case(
        "row13_points_negative.pcd",
        lambda: _pcd("WIDTH 200\nHEIGHT 1\nPOINTS -50\n", 200),
        ("POINTS", "'-50'"),
    ),
    Case(
        "row13_points_fewer_than_rows.pcd",
        lambda: _pcd("POINTS 150\n", 200),
        ("declares 150 points", "200 data lines"),
    ),
    Case("row13_fields_repeated.pcd", lambda: _pcd("POINTS 20\n", 20, fields="x y y"), ("FIELDS", "'y'")),
    Case(
        "points_not_width_height.pcd",
        lambda: _pcd("WIDTH 200\nHEIGHT 1\nPOINTS 150\n", 150),
        ("POINTS 150", "WIDTH 200"),
    ),
    Case("two_points_lines.pcd", lambda: _pcd("POINTS 20\nPOINTS 10\n", 10), ("two POINTS lines",)),
    Case(
        "binary_more_records.pcd",
        lambda: _pcd("WIDTH 150\nHEIGHT 1\nPOINTS 150\n", 200, kind="binary"),
        ("600 more bytes", "counts are too small"),
    ),
    Case(
        "compressed_run_bomb.pcd",
        _pcd_compressed_bomb,
        ("LZF", "instead of 12000"),
    ),
    # PLY
    Case(
        "ascii_more_vertices.ply",
        lambda: _ply(
            "0 0 0\n1 0 0\n0 1 0\n0 0 1\n1 1 1\n",
            "element vertex 3\nproperty float x\nproperty float y\nproperty float z\n",
        ),
        ("2 more lines", "line"),
    ),
    Case("binary_more_vertices.ply", lambda: _ply_binary_vertices(3, 5), ("24 more bytes",)),
    Case(
        "two_vertex_elements.ply",
        lambda: _ply(
            "0 0 0\n1 0 0\n5 5 5\n",
            "element vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
            "element vertex 1\nproperty float x\nproperty float y\nproperty float z\n",
        ),
        ("element 'vertex' twice",),
    ),
    Case(
        "float_face_indices.ply",
        lambda: _ply(
            "0 0 0\n1 0 0\n0 1 0\n3 0 1 1.7\n",
            "element vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
            "element face 1\nproperty list uchar float vertex_indices\n",
        ),
        ("vertex_indices", "not an integer type"),
    ),
    Case("many_properties_no_data.ply", _ply_many_properties, ("truncated", "vertex")),
    # NPY / NPZ: headers claiming more rows than the data hold (preallocated before)
    Case(
        "npy_rows_lie.npy",
        lambda: _npy((100_000_000, 3), bytes(72)),
        ("(100000000, 3)", "72 bytes follow"),
    ),
    Case(
        "npz_rows_lie.npz",
        lambda: _npz({"points.npy": _npy((100_000_000, 3), bytes(72))}),
        ("points.npy", "(100000000, 3)"),
    ),
    Case(
        "npz_member_magic.npz",
        lambda: _npz({"points.npy": _npy_of(np.ones((4, 3))), "w.npy": b"\x94" + _npy_of(np.ones(4))[1:]}),
        ("w.npy", "bad NPY header"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_reader_input(tmp_path: Path, case: Case) -> None:
    """InputError naming the file and the lie, within the time limit and without memory growth."""
    path = tmp_path / case.name
    path.write_bytes(case.content())
    error, seconds, peak = read_bounded(path)
    assert isinstance(error, InputError), f"{case.name}: {type(error).__name__}: {str(error)[:300]}"
    message = str(error)
    assert str(path) in message and "\n" not in message, message
    for word in case.words:
        assert word.lower() in message.lower(), message
    assert seconds < TIME_LIMIT, f"{case.name}: {seconds:.2f} s"
    assert peak < PEAK_LIMIT, f"{case.name}: {peak >> 20} MB traced"


def test_hostile_cases_are_minimal_lies(tmp_path: Path) -> None:
    """Sanity of the table: the same files with honest headers read fine."""
    honest = {
        "ok.vtk": (VTK_HEAD + VTK_POINTS + "POLYGONS 1 4\n3 0 1 2\n").encode(),
        "ok.pcd": _pcd("WIDTH 200\nHEIGHT 1\nPOINTS 200\n", 200),
        "okbin.pcd": _pcd("WIDTH 200\nHEIGHT 1\nPOINTS 200\n", 200, kind="binary"),
        "ok.ply": _ply_binary_vertices(5, 5),
        "ok.npy": _npy((3, 3), bytes(72)),
    }
    for name, content in honest.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert len(read_points(path)) in (1, 3, 5, 200), name


_BOMB_CHILD = """
import resource, sys
from pathlib import Path
with open("/proc/self/status") as f:
    vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:")][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
from register.errors import InputError
from register.io import read_points
try:
    read_points(Path(sys.argv[1]))
except InputError as exc:
    print("InputError:", exc)
except MemoryError as exc:
    print("MemoryError:", exc)
else:
    print("accepted")
"""


def test_npz_decompression_bomb_under_memory_limit(tmp_path: Path) -> None:
    """An honest 512 MiB member (0.5 MB compressed) under a 256 MB address-space limit: a clean refusal."""
    path = tmp_path / "bomb.npz"
    buffer = io.BytesIO()
    rows = (512 << 20) // 24
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (rows, 3)})
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("points.npy", "w") as member,
    ):
        member.write(buffer.getvalue())
        zeros = bytes(1 << 24)
        for _ in range(rows * 24 // len(zeros)):
            member.write(zeros)
        member.write(bytes(rows * 24 % len(zeros)))
    assert path.stat().st_size < 4 << 20
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.stdout.startswith("InputError:"), out.stdout + out.stderr[-2000:]
    assert "bomb.npz" in out.stdout and "memory available" in out.stdout, out.stdout


# ----------------------------------------------------------------------------------------------
# VTK XML: read in a child process (VTK's own XML reader crashed the process on these)


def _vtp(edit: Callable[[bytes], bytes]) -> Callable[[], bytes]:
    """register's binary .vtp of a small cloud (zlib-compressed base64 blocks), edited."""

    def make() -> bytes:
        from register.core.pointcloud import PointCloud
        from register.io import write_points

        rng = np.random.default_rng(0)
        cloud = PointCloud(rng.normal(size=(12, 3)), {"normal": rng.normal(size=(12, 3))})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "seed.vtp"
            write_points(path, cloud)
            return edit(path.read_bytes())

    return make


def _points_block_header(word: int, value: int) -> Callable[[bytes], bytes]:
    """Set one UInt32 of the Points array's compression header (n_blocks, block_size, last, size_0)."""

    def edit(data: bytes) -> bytes:
        match = re.search(rb'Name="Points"[^>]*>\s*([A-Za-z0-9+/]{22}==)', data)
        header = bytearray(base64.b64decode(match.group(1)))
        header[4 * word : 4 * word + 4] = struct.pack("<I", value)
        return data[: match.start(1)] + base64.b64encode(bytes(header)) + data[match.end(1) :]

    return edit


XML_CASES = [
    Case(
        "points_4294967296.vtp",
        _vtp(lambda d: d.replace(b'NumberOfPoints="12"', b'NumberOfPoints="4294967296"')),
        ("Points array", "compression header"),
    ),
    Case("zero_blocks.vtp", _vtp(_points_block_header(0, 0)), ("Points array", "0 blocks")),
    Case("zero_block_size.vtp", _vtp(_points_block_header(1, 0)), ("Points array", "blocks of 0 bytes")),
    Case(
        "components_10e12.vtp",
        _vtp(
            lambda d: d.replace(
                b'Name="normal" NumberOfComponents="3"', b'Name="normal" NumberOfComponents="1000000000000"'
            )
        ),
        ("normal", "compression header"),
    ),
    Case(
        "components_negative.vtp",
        _vtp(
            lambda d: d.replace(
                b'Name="normal" NumberOfComponents="3"', b'Name="normal" NumberOfComponents="-1"'
            )
        ),
        ("NumberOfComponents", "'-1'"),
    ),
]

_CHILD = """
import json, sys, time
from pathlib import Path
from register.errors import InputError
from register.io import read_points
start = time.perf_counter()
try:
    read_points(Path(sys.argv[1]))
    kind, message = "accepted", ""
except InputError as exc:
    kind, message = "InputError", str(exc)
except Exception as exc:
    kind, message = type(exc).__name__, str(exc)[:300]
print(json.dumps({"kind": kind, "message": message, "seconds": time.perf_counter() - start}))
"""


def read_in_child(path: Path, timeout: float = 30.0) -> dict:
    """Read ``path`` in a child process: its outcome, or ``killed by signal N`` / ``timeout``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"kind": "timeout", "message": "", "seconds": timeout}
    if out.returncode != 0:
        return {"kind": f"killed by signal {-out.returncode}", "message": out.stderr[-300:], "seconds": 0.0}
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", XML_CASES, ids=[c.name for c in XML_CASES])
def test_hostile_vtk_xml_input(tmp_path: Path, case: Case) -> None:
    """VTK XML headers that lie: an InputError naming the file, quickly (VTK aborted or crashed)."""
    path = tmp_path / case.name
    path.write_bytes(case.content())
    result = read_in_child(path)
    assert result["kind"] == "InputError", result
    message = result["message"]
    assert str(path) in message and "\n" not in message, message
    for word in case.words:
        assert word.lower() in message.lower(), message
    assert result["seconds"] < TIME_LIMIT, result
