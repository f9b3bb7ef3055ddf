"""Tests of the I/O layer ``register.io``: round trips, real files, and every bad-input case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from register.core.pointcloud import PointCloud
from register.errors import InputError
from register.io import (
    SUPPORTED_EXTENSIONS,
    read_points,
    read_weights,
    register_format,
    supported_extensions,
    unregister_format,
    write_points,
)
from register.io.pcd import lzf_decompress
from register.io.ply_write import write_ply

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BINARY_FORMATS = (".ply", ".pcd", ".npz", ".vtk", ".vtp", ".vtu")
TEXT_FORMATS = (".xyz", ".txt", ".csv")


def shared_file(relative: str) -> Path:
    """A file of the shared real-data folder; skips the test when the folder is absent."""
    path = SHARED_DATA / relative
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data folder {SHARED_DATA} not found: real-file tests need ../shared/data")
    if not path.is_file():
        pytest.skip(f"real-data file {path} not found")
    return path


def make_cloud(n: int = 50, dim: int = 3, seed: int = 0, faces: int = 0, lines: bool = False) -> PointCloud:
    """A seeded cloud with typical attributes; ``faces`` = polygon size (0: none)."""
    rng = np.random.default_rng(seed)
    data = {
        "radius": rng.random(n) * 5,
        "label": rng.integers(0, 200, n).astype(np.uint8),
        "normal": rng.normal(size=(n, 3)),
        "intensity": rng.random(n).astype(np.float32),
        "index": np.arange(n, dtype=np.int32),
    }
    face_array = rng.integers(0, n, size=(n // 2, faces)).astype(np.int64) if faces else None
    line_array = np.column_stack([np.arange(n - 1), np.arange(1, n)]).astype(np.int64) if lines else None
    return PointCloud(rng.normal(size=(n, dim)) * 100, data, face_array, line_array)


def assert_same_cloud(
    got: PointCloud, want: PointCloud, *, exact: bool = True, faces: bool = True, lines: bool = False
) -> None:
    """Coordinates, every attribute (values), and optionally faces/lines must match."""
    if exact:
        np.testing.assert_array_equal(got.points, want.points)
    else:
        np.testing.assert_allclose(got.points, want.points, rtol=1e-9, atol=0)
    assert set(got.point_data) == set(want.point_data)
    for name, arr in want.point_data.items():
        # float32 attributes in text: VTK's ASCII writer keeps 6 significant digits of them
        rtol = 0 if exact else (1e-5 if arr.dtype == np.float32 else 1e-9)
        np.testing.assert_allclose(got.point_data[name], arr, rtol=rtol, atol=0, err_msg=name)
        assert got.point_data[name].shape == arr.shape, name
    if faces:
        np.testing.assert_array_equal(got.faces, want.faces)
    if lines:
        np.testing.assert_array_equal(got.lines, want.lines)


def expect_error(path: Path, *words: str, min_points: int = 1) -> str:
    """Reading ``path`` raises InputError naming the file and containing ``words``."""
    with pytest.raises(InputError) as info:
        read_points(path, min_points=min_points)
    message = str(info.value)
    assert path.name in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# ----------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("ext", BINARY_FORMATS)
def test_binary_round_trip_with_attributes_and_faces(tmp_path: Path, ext: str) -> None:
    cloud = make_cloud(faces=3)
    path = tmp_path / f"cloud{ext}"
    write_points(path, cloud)
    got = read_points(path)
    assert got.path == str(path)
    assert_same_cloud(got, cloud, faces=ext != ".pcd")
    if ext == ".pcd":
        assert got.faces is None
    assert got.point_data["label"].dtype == np.uint8
    assert got.point_data["intensity"].dtype == np.float32


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".vtk", ".vtp", ".vtu"])
def test_ascii_round_trip(tmp_path: Path, ext: str) -> None:
    cloud = make_cloud(faces=3)
    path = tmp_path / f"cloud{ext}"
    write_points(path, cloud, binary=False)
    assert b"ascii" in path.read_bytes()[:400].lower()
    got = read_points(path)
    # PLY/PCD text is exact (shortest repr); VTK's ASCII writer keeps ~11 significant digits
    assert_same_cloud(got, cloud, exact=ext in (".ply", ".pcd"), faces=ext != ".pcd")


def test_ply_big_endian_round_trip_with_quads_and_edges(tmp_path: Path) -> None:
    cloud = make_cloud(faces=4, lines=True)
    path = tmp_path / "big.ply"
    write_ply(path, cloud, byte_order=">")
    assert b"binary_big_endian" in path.read_bytes()[:200]
    assert_same_cloud(read_points(path), cloud, lines=True)


@pytest.mark.parametrize("ext", [".ply", ".vtk", ".vtp", ".vtu", ".npz"])
def test_lines_round_trip(tmp_path: Path, ext: str) -> None:
    cloud = make_cloud(lines=True)
    path = tmp_path / f"lines{ext}"
    write_points(path, cloud)
    got = read_points(path)
    assert_same_cloud(got, cloud, faces=False, lines=True)
    assert got.faces is None


@pytest.mark.parametrize("ext", [".vtk", ".vtp", ".vtu"])
def test_vtk_quads_round_trip(tmp_path: Path, ext: str) -> None:
    cloud = make_cloud(faces=4)
    path = tmp_path / f"quads{ext}"
    write_points(path, cloud)
    assert_same_cloud(read_points(path), cloud)


@pytest.mark.parametrize("ext", TEXT_FORMATS)
def test_text_round_trip(tmp_path: Path, ext: str) -> None:
    cloud = make_cloud()
    path = tmp_path / f"cloud{ext}"
    write_points(path, cloud)
    got = read_points(path)
    assert_same_cloud(got, cloud, exact=False, faces=False)
    assert got.point_data["normal"].shape == (50, 3)  # normal_0..normal_2 reassembled


@pytest.mark.parametrize("ext", [".xyz", ".csv", ".ply", ".pcd", ".npy", ".npz"])
def test_plain_and_2d_round_trip(tmp_path: Path, ext: str) -> None:
    for dim in (3, 2):
        cloud = PointCloud(np.random.default_rng(dim).normal(size=(20, dim)))
        path = tmp_path / f"plain{dim}{ext}"
        write_points(path, cloud)
        got = read_points(path)
        assert got.points.shape == (20, dim)
        np.testing.assert_allclose(got.points, cloud.points, rtol=1e-15)
        assert got.point_data == {}


def test_plain_xyz_has_no_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.xyz"
    write_points(path, PointCloud(np.array([[0.1, 2.0, -3.5]])))
    assert path.read_text() == "0.1 2.0 -3.5\n"


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".csv", ".npz", ".vtk"])
def test_n_by_1_attribute_comes_back_as_n(tmp_path: Path, ext: str) -> None:
    cloud = PointCloud(np.arange(12.0).reshape(4, 3), {"w": np.full((4, 1), 2.5)})
    path = tmp_path / f"w{ext}"
    write_points(path, cloud)
    assert read_points(path).point_data["w"].reshape(-1).tolist() == [2.5] * 4


def test_write_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "cloud.ply"
    write_points(path, make_cloud(seed=1))
    write_points(path, make_cloud(seed=2))
    assert_same_cloud(read_points(path), make_cloud(seed=2), faces=False)
    assert sorted(os.listdir(tmp_path)) == ["cloud.ply"]


def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "cloud.npy"
    write_points(path, make_cloud())
    reference = tmp_path / "reference.bin"
    reference.write_bytes(b"")  # made the ordinary way: 0666 minus the umask
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "CLOUD.PLY"
    write_points(path, make_cloud())
    assert len(read_points(path)) == 50


# ----------------------------------------------------------------------------------------------
# format details


def test_ply_ascii_written_by_hand_with_face_and_list_types(tmp_path: Path) -> None:
    path = tmp_path / "hand.ply"
    path.write_text(
        "ply\nformat ascii 1.0\ncomment hi\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nproperty uchar red\nproperty float w_0\nproperty float w_1\n"
        "element face 2\nproperty list uchar int vertex_index\nend_header\n"
        "0 0 0 255 1 2\n1 0 0 0 3 4\n0 1 0 7 5 6\n\n1 1 1 9 7 8\n3 0 1 2\n3 1 2 3\n"
    )
    got = read_points(path)
    np.testing.assert_array_equal(got.points[3], [1, 1, 1])
    assert got.point_data["red"].dtype == np.uint8
    assert got.point_data["red"].tolist() == [255, 0, 7, 9]
    np.testing.assert_array_equal(got.point_data["w"], [[1, 2], [3, 4], [5, 6], [7, 8]])
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [1, 2, 3]])


@pytest.mark.parametrize("binary", [True, False])
def test_ply_mixed_face_sizes_are_refused(tmp_path: Path, binary: bool) -> None:
    path = tmp_path / "mixed.ply"
    cloud = make_cloud(n=6)
    write_ply(path, PointCloud(cloud.points, faces=np.array([[0, 1, 2, 3]])), binary=binary)
    data = path.read_bytes().replace(b"element face 1", b"element face 2")
    if binary:
        data += np.array([3], "u1").tobytes() + np.array([1, 2, 3], "<i4").tobytes()
    else:
        data += b"3 1 2 3\n"
    path.write_bytes(data)
    expect_error(path, "mixed sizes", "uniform", "3 to 4")


def test_ply_face_element_with_zero_faces(tmp_path: Path) -> None:
    path = tmp_path / "noface.ply"
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
        "property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
    )
    path.write_bytes(header.encode() + np.arange(6, dtype="<f4").tobytes())
    got = read_points(path)
    assert got.faces is None
    np.testing.assert_array_equal(got.points, [[0, 1, 2], [3, 4, 5]])


def test_pcd_with_count_padding_and_ascii(tmp_path: Path) -> None:
    path = tmp_path / "hand.pcd"
    path.write_text(
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb _ feat\nSIZE 4 4 4 4 1 2\nTYPE F F F U U I\n"
        "COUNT 1 1 1 1 1 2\nWIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n"
        "1 2 3 4278190080 0 -5 6\n4 5 6 16777215 0 7 -8\n"
    )
    got = read_points(path)
    np.testing.assert_array_equal(got.points, [[1, 2, 3], [4, 5, 6]])
    assert set(got.point_data) == {"rgb", "feat"}
    assert got.point_data["rgb"].dtype == np.uint32
    np.testing.assert_array_equal(got.point_data["feat"], [[-5, 6], [7, -8]])


def _lzf_literals(raw: bytes) -> bytes:
    """LZF stream made of literal runs only (valid input for any LZF decoder)."""
    out = bytearray()
    for start in range(0, len(raw), 32):
        chunk = raw[start : start + 32]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out)


def test_lzf_decompress_literals_and_back_references() -> None:
    assert lzf_decompress(_lzf_literals(b"hello world" * 5), 55) == b"hello world" * 5
    # literal "abc", then a back reference: length 7 + 2 = 9 copied from 3 bytes back (overlapping)
    stream = bytes([2]) + b"abc" + bytes([(7 << 5) | 0, 0, 2])
    assert lzf_decompress(stream, 3 + 9 + 0) == b"abc" + b"abcabcabc"
    with pytest.raises(InputError):
        lzf_decompress(bytes([(1 << 5) | 0, 9]), 3)  # reference before the start


def test_pcd_binary_compressed(tmp_path: Path) -> None:
    cloud = make_cloud(n=40)
    points = cloud.points.astype(np.float32)
    radius = cloud.point_data["radius"].astype(np.float32)
    raw = b"".join(a.tobytes() for a in (points[:, 0], points[:, 1], points[:, 2], radius))
    body = _lzf_literals(raw)
    header = (
        "VERSION 0.7\nFIELDS x y z radius\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 40\n"
        "HEIGHT 1\nPOINTS 40\nDATA binary_compressed\n"
    )
    path = tmp_path / "compressed.pcd"
    path.write_bytes(header.encode() + np.array([len(body), len(raw)], "<u4").tobytes() + body)
    got = read_points(path)
    np.testing.assert_array_equal(got.points, points)
    np.testing.assert_array_equal(got.point_data["radius"], radius)
    path.write_bytes(path.read_bytes()[:-20])
    expect_error(path, "truncated")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("x,y,z,radius\n1,2,3,4\n5,6,7,8\n", {"radius"}),
        ("# comment\nX;Y;Z;t\n1;2;3;4\n\n5;6;7;8 # inline\n", {"t"}),
        ("id x y z\n4 1 2 3\n8 5 6 7\n", {"id"}),
        ("1\t2\t3\t4\n5\t6\t7\t8\n", {"col3"}),
        ('"x","y","z","radius"\n1, 2, 3, 4\n5, 6, 7, 8\n', {"radius"}),
        ("x,y,z,w,\n1,2,3,4,\n5,6,7,8,\n", {"w"}),
    ],
)
def test_text_headers_separators_and_comments(tmp_path: Path, text: str, names: set[str]) -> None:
    path = tmp_path / "points.csv"
    path.write_text(text)
    got = read_points(path)
    np.testing.assert_array_equal(got.points, [[1, 2, 3], [5, 6, 7]])
    assert set(got.point_data) == names
    np.testing.assert_array_equal(next(iter(got.point_data.values())), [4, 8])


def test_text_six_columns_without_header_are_not_paired(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1 2 3 4 5 6\n7 8 9 10 11 12\n")
    got = read_points(path)
    np.testing.assert_array_equal(got.points, [[1, 2, 3], [7, 8, 9]])
    assert list(got.point_data) == ["col3", "col4", "col5"]


def test_text_two_columns_are_planar(tmp_path: Path) -> None:
    path = tmp_path / "fish.txt"
    path.write_text("0.5 1.5\n2 3\n")
    assert read_points(path).points.shape == (2, 2)


def test_npz_only_array_and_extra_arrays(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    np.savez(path, xyz=np.ones((5, 3)))
    assert read_points(path).points.shape == (5, 3)
    path = tmp_path / "extra.npz"
    np.savez(path, points=np.ones((5, 3)), w=np.arange(5.0), matrix=np.eye(4))
    assert set(read_points(path).point_data) == {"w"}


def _vtk_writer(kind: str, version: int, binary: bool):
    legacy = pytest.importorskip("vtkmodules.vtkIOLegacy")
    writer = legacy.vtkPolyDataWriter() if kind == "poly" else legacy.vtkUnstructuredGridWriter()
    writer.SetFileVersion(version)
    writer.SetFileTypeToBinary() if binary else writer.SetFileTypeToASCII()
    return writer


@pytest.mark.parametrize("version", [42, 51])
@pytest.mark.parametrize("binary", [True, False])
def test_legacy_vtk_written_by_vtk(tmp_path: Path, version: int, binary: bool) -> None:
    """Polylines -> segments, strips -> triangles, string arrays skipped, %20 in names decoded."""
    pv = pytest.importorskip("pyvista")
    points = np.random.default_rng(3).normal(size=(6, 3))
    mesh = pv.PolyData(points, strips=np.array([4, 0, 1, 2, 3]), lines=np.array([3, 3, 4, 5]))
    mesh.point_data["big ids"] = np.arange(6, dtype=np.int64) * 10**12
    mesh.point_data["vec"] = points * 2
    mesh.point_data["names"] = np.array(["a", "bb", "c", "d", "e", "f"])
    mesh.field_data["note"] = ["hello world"]
    path = tmp_path / f"vtk{version}.vtk"
    writer = _vtk_writer("poly", version, binary)
    writer.SetInputData(mesh)
    writer.SetFileName(str(path))
    writer.Write()
    got = read_points(path)
    np.testing.assert_allclose(got.points, points, rtol=1e-9)
    assert set(got.point_data) == {"big ids", "vec"}
    np.testing.assert_array_equal(got.point_data["big ids"], np.arange(6) * 10**12)
    np.testing.assert_allclose(got.point_data["vec"], points * 2, rtol=1e-9)
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [2, 1, 3]])
    np.testing.assert_array_equal(got.lines, [[3, 4], [4, 5]])


@pytest.mark.parametrize("ext", [".vtk", ".vtu"])
def test_unstructured_grid_cells_by_type(tmp_path: Path, ext: str) -> None:
    """Triangles become faces, lines segments; vertices and tetrahedra are ignored."""
    pv = pytest.importorskip("pyvista")
    cells = np.array([3, 0, 1, 2, 3, 1, 2, 3, 4, 0, 1, 2, 3, 2, 3, 4, 1, 4])
    types = np.array([pv.CellType.TRIANGLE, pv.CellType.TRIANGLE, pv.CellType.TETRA, pv.CellType.LINE,
                      pv.CellType.VERTEX], np.uint8)  # fmt: skip
    grid = pv.UnstructuredGrid(cells, types, np.random.default_rng(4).normal(size=(5, 3)))
    path = tmp_path / f"grid{ext}"
    if ext == ".vtk":
        writer = _vtk_writer("grid", 42, True)
        writer.SetInputData(grid)
        writer.SetFileName(str(path))
        writer.Write()
    else:
        grid.save(path)
    got = read_points(path)
    np.testing.assert_array_equal(got.faces, [[0, 1, 2], [1, 2, 3]])
    np.testing.assert_array_equal(got.lines, [[3, 4]])


@pytest.mark.parametrize("ext", [".vtk", ".vtp"])
def test_vtk_mixed_polygons_are_refused(tmp_path: Path, ext: str) -> None:
    pv = pytest.importorskip("pyvista")
    mesh = pv.PolyData(
        np.random.default_rng(5).normal(size=(5, 3)), faces=np.array([3, 0, 1, 2, 4, 1, 2, 3, 4])
    )
    path = tmp_path / f"mixed{ext}"
    mesh.save(path)
    expect_error(path, "mixed sizes", "uniform", "3 to 4")


def _vtk_xml_mesh(kind: str):
    """A mesh with every cell kind the XML reader handles, point data, field data and strings."""
    pv = pytest.importorskip("pyvista")
    rng = np.random.default_rng(6)
    points = rng.normal(size=(300, 3))
    if kind == "poly":
        mesh = pv.PolyData(
            points,
            faces=np.column_stack([np.full(100, 3), rng.integers(0, 300, (100, 3))]).ravel(),
            strips=np.array([4, 0, 1, 2, 3]),
            lines=np.array([3, 3, 4, 5]),
        )
    else:
        cells = [3, 0, 1, 2, 3, 1, 2, 3, 4, 0, 1, 2, 3, 2, 3, 4, 1, 4, 4, 4, 5, 6, 7]
        types = [pv.CellType.TRIANGLE, pv.CellType.TRIANGLE, pv.CellType.TETRA, pv.CellType.LINE,
                 pv.CellType.VERTEX, pv.CellType.POLY_LINE]  # fmt: skip
        mesh = pv.UnstructuredGrid(cells, np.array(types, np.uint8), points)
    mesh.point_data["w"] = rng.random(300)
    mesh.point_data["ids"] = np.arange(300, dtype=np.int64) * 10**12
    mesh.point_data["vec"] = points * 2
    mesh.point_data["names"] = np.array(["a"] * 300)
    mesh.field_data["per point"] = np.arange(300.0)
    mesh.field_data["note"] = ["hello"]
    return mesh


@pytest.mark.parametrize("kind", ["poly", "grid"])
@pytest.mark.parametrize(
    ("mode", "compressor", "header", "encode"),
    [
        ("Ascii", "None", 32, True),
        ("Binary", "None", 64, True),
        ("Binary", "ZLib", 32, True),
        ("Binary", "LZMA", 64, True),
        ("Appended", "None", 32, False),
        ("Appended", "ZLib", 64, False),
        ("Appended", "LZ4", 32, True),
        ("Appended", "LZMA", 32, False),
    ],
)
def test_vtk_xml_variants_match_vtk(
    tmp_path: Path, kind: str, mode: str, compressor: str, header: int, encode: bool
) -> None:
    """register's XML reader gives what VTK's reader gives, for every data mode, compressor and
    header type (several compressed blocks per array: block size 512 bytes)."""
    pv = pytest.importorskip("pyvista")
    xml = pytest.importorskip("vtkmodules.vtkIOXML")
    mesh = _vtk_xml_mesh(kind)
    writer = xml.vtkXMLPolyDataWriter() if kind == "poly" else xml.vtkXMLUnstructuredGridWriter()
    path = tmp_path / f"variant{'.vtp' if kind == 'poly' else '.vtu'}"
    writer.SetInputData(mesh)
    writer.SetFileName(str(path))
    getattr(writer, f"SetDataModeTo{mode}")()
    getattr(writer, f"SetCompressorTypeTo{compressor}")()
    getattr(writer, f"SetHeaderTypeToUInt{header}")()
    writer.SetEncodeAppendedData(encode)
    writer.SetBlockSize(512)
    assert writer.Write() == 1
    got, reference = read_points(path), pv.read(path)
    np.testing.assert_array_equal(got.points, reference.points)
    assert set(got.point_data) == {"w", "ids", "vec", "per point"}
    for name in ("w", "ids", "vec"):
        np.testing.assert_array_equal(got.point_data[name], reference.point_data[name])
    np.testing.assert_array_equal(got.point_data["per point"], np.arange(300.0))
    if kind == "poly":
        np.testing.assert_array_equal(got.faces[:100], reference.faces.reshape(-1, 4)[:, 1:])
        np.testing.assert_array_equal(got.faces[100:], [[0, 1, 2], [2, 1, 3]])  # the strip 0 1 2 3
        np.testing.assert_array_equal(got.lines, [[3, 4], [4, 5]])
    else:
        np.testing.assert_array_equal(got.faces, [[0, 1, 2], [1, 2, 3]])
        np.testing.assert_array_equal(got.lines, [[3, 4], [4, 5], [5, 6], [6, 7]])


def test_vtk_xml_pieces_are_joined(tmp_path: Path) -> None:
    pv = pytest.importorskip("pyvista")
    xml = pytest.importorskip("vtkmodules.vtkIOXML")
    writer = xml.vtkXMLPolyDataWriter()
    writer.SetInputData(_vtk_xml_mesh("poly"))
    writer.SetNumberOfPieces(3)
    path = tmp_path / "pieces.vtp"
    writer.SetFileName(str(path))
    writer.Write()
    assert path.read_bytes().count(b"<Piece") == 3
    got, reference = read_points(path), pv.read(path)
    np.testing.assert_array_equal(got.points, reference.points)
    np.testing.assert_array_equal(got.point_data["w"], reference.point_data["w"])
    assert got.faces.shape == (3 * 102, 3)
    polygons = {tuple(face) for face in reference.faces.reshape(-1, 4)[:, 1:].tolist()}
    assert polygons <= {tuple(face) for face in got.faces.tolist()}  # piece k's faces shifted by 300 k
    assert got.faces.max() >= 600


# ----------------------------------------------------------------------------------------------
# real files


def test_real_bunny_binary_ply_with_zero_faces() -> None:
    got = read_points(shared_file("shapes/stanford/bunny_30k.ply"))
    assert got.points.shape == (30000, 3)
    assert got.faces is None
    assert np.isfinite(got.points).all()


def test_real_small_gicp_ply_with_intensity() -> None:
    got = read_points(shared_file("rigid/small_gicp/source.ply"))
    assert got.points.shape[1] == 3 and 60000 < len(got) < 80000
    assert got.point_data["scalar_intensity"].shape == (len(got),)
    assert got.point_data["scalar_intensity"].dtype == np.float32


def test_real_teaser_ascii_ply() -> None:
    got = read_points(shared_file("rigid/teaser/benchmark_1/src.ply"))
    assert got.points.shape == (10, 3)
    np.testing.assert_allclose(got.points[0], [0.0, 0.340289771402993, 0.125195115981903], rtol=1e-7)


def test_real_copd_legacy_vtk_matches_vtk_reader() -> None:
    path = shared_file("lung/vessels/copd1_source.vtk")
    got = read_points(path)
    assert got.points.shape == (60000, 3)
    assert got.point_data["weights"].shape == (60000,)
    assert got.point_data["pointfea"].shape == (60000, 3)
    pv = pytest.importorskip("pyvista")
    mesh = pv.read(path)
    np.testing.assert_array_equal(got.points, mesh.points)
    np.testing.assert_array_equal(got.point_data["pointfea"], mesh.point_data["pointfea"])
    weights = read_weights(got, "weights")
    assert weights.dtype == np.float64 and weights.sum() > 0


# ----------------------------------------------------------------------------------------------
# bad inputs


def test_unknown_extension_lists_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "cloud.e57"
    path.write_bytes(b"whatever")
    message = expect_error(path, "unknown", ".ply", ".vtk")
    assert all(ext in message for ext in SUPPORTED_EXTENSIONS)
    with pytest.raises(InputError, match="cloud.e57"):
        write_points(path, make_cloud())


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nowhere.ply", "not found")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.csv", b"x,y,z\n"),
        ("blank.xyz", b""),
        (
            "empty.ply",
            b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nend_header\n",
        ),
        ("empty.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 0\nPOINTS 0\nDATA binary\n"),
        ("empty.vtk", b"# vtk DataFile Version 4.2\nt\nASCII\nDATASET POLYDATA\nPOINTS 0 float\n"),
    ],
)
def test_empty_cloud(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    expect_error(path, "no points")


def test_empty_npy(tmp_path: Path) -> None:
    path = tmp_path / "empty.npy"
    np.save(path, np.empty((0, 3)))
    expect_error(path, "no points")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("ext", [".csv", ".ply", ".npy", ".vtk"])
def test_non_finite_coordinates(tmp_path: Path, ext: str, bad: str) -> None:
    cloud = make_cloud(n=10)
    cloud.points[7, 1] = float(bad)
    cloud.points[9, 0] = float(bad)
    path = tmp_path / f"bad{ext}"
    write_points(path, cloud)
    expect_error(
        path, "NaN or Inf", "2 of 10 points", "row 7", "2 with NaN" if bad == "nan" else "2 with Inf"
    )


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("rows.csv", "1,2,3\n4,5,6\n7,8\n", ("line 3", "2 values", "has 3")),
        ("header.csv", "x,y,z,w\n1,2,3\n", ("line 2", "header")),
        ("one.xyz", "1\n2\n", ("wrong number of columns",)),
        ("word.xyz", "1 2 3\n4 five 6\n", ("line 2", "column 2", "five")),
        ("empty_value.csv", "1,2,3\n4, ,6\n", ("line 2", "column 2", "empty value")),
    ],
)
def test_bad_text_rows(tmp_path: Path, name: str, content: str, words: tuple[str, ...]) -> None:
    path = tmp_path / name
    path.write_text(content)
    expect_error(path, *words)


def test_npy_wrong_columns_and_pickles(tmp_path: Path) -> None:
    path = tmp_path / "four.npy"
    np.save(path, np.ones((5, 4)))
    expect_error(path, "wrong number of columns", "(5, 4)")
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    expect_error(path, "python objects")


def test_too_few_points(tmp_path: Path) -> None:
    path = tmp_path / "small.ply"
    write_points(path, make_cloud(n=5))
    expect_error(path, "needs at least 10 points", "has 5 points", min_points=10)
    assert len(read_points(path, min_points=5)) == 5


def test_faces_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "faces.npz"
    np.savez(path, points=np.zeros((3, 3)), faces=np.array([[0, 1, 5]]))
    expect_error(path, "faces", "0..5")


def _cuts(size: int) -> list[int]:
    """Cut points that remove data (the very last byte may be a harmless newline)."""
    return [size - 2, size - 7, size // 2, size // 3, 200]


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".npy", ".npz", ".vtk", ".vtp", ".vtu"])
def test_truncated_binary_files(tmp_path: Path, ext: str) -> None:
    cloud = make_cloud(n=200, faces=3 if ext != ".pcd" else 0)
    full = tmp_path / f"full{ext}"
    write_points(full, cloud)
    data = full.read_bytes()
    for cut in _cuts(len(data)):
        path = tmp_path / f"cut{cut}{ext}"
        path.write_bytes(data[:cut])
        expect_error(path)


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".vtk"])
def test_truncated_ascii_files(tmp_path: Path, ext: str) -> None:
    full = tmp_path / f"full{ext}"
    write_points(full, make_cloud(n=200), binary=False)
    data = full.read_bytes()
    for cut in (len(data) // 2, len(data) - len(data) // 10):
        path = tmp_path / f"cut{cut}{ext}"
        path.write_bytes(data[: data.rfind(b"\n", 0, cut) + 1])
        expect_error(path)


def test_truncated_legacy_vtk_says_truncated(tmp_path: Path) -> None:
    full = tmp_path / "full.vtk"
    write_points(full, make_cloud(n=100))
    path = tmp_path / "cut.vtk"
    path.write_bytes(full.read_bytes()[:400])
    expect_error(path, "truncated", "POINTS")


def test_not_the_format_the_extension_says(tmp_path: Path) -> None:
    for ext in (".ply", ".pcd", ".vtk", ".vtp", ".npy", ".npz"):
        path = tmp_path / f"text{ext}"
        path.write_text("1 2 3\n4 5 6\n")
        expect_error(path)


# ----------------------------------------------------------------------------------------------
# writing failures


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    cloud = PointCloud(np.zeros((3, 3)), {"bad": np.array([1 + 1j, 2, 3])})
    for ext in (".ply", ".pcd", ".csv", ".vtk", ".vtp", ".npz"):
        path = tmp_path / f"out{ext}"
        with pytest.raises(InputError, match=f"out\\{ext}"):
            write_points(path, cloud)
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.ply"
    write_points(path, make_cloud())
    before = path.read_bytes()
    with pytest.raises(InputError):
        write_points(path, PointCloud(np.zeros((3, 3)), {"name with space": np.zeros(3)}))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.ply"]


def test_write_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_points(tmp_path / "missing" / "a.ply", make_cloud())
    with pytest.raises(InputError, match="empty"):
        write_points(tmp_path / "a.ply", PointCloud(np.empty((0, 3))))
    with pytest.raises(InputError, match="binary"):
        write_points(tmp_path / "a.csv", make_cloud(), binary=True)
    with pytest.raises(InputError, match="reserved"):
        write_points(tmp_path / "a.npz", PointCloud(np.zeros((2, 3)), {"faces": np.zeros(2)}))
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# weights, registry, imports


def test_read_weights() -> None:
    cloud = PointCloud(
        np.zeros((4, 3)), {"radius": np.array([1, 2, 0, 3], np.float32), "col": np.ones((4, 1))}
    )
    weights = read_weights(cloud, "radius")
    assert weights.dtype == np.float64 and weights.tolist() == [1, 2, 0, 3]
    assert read_weights(cloud, "col").shape == (4,)
    with pytest.raises(InputError, match="available: col, radius"):
        read_weights(cloud, "mass")
    for values, word in [([1, -1, 2, 3], "negative"), ([1, np.nan, 2, 3], "NaN"), ([0, 0, 0, 0], "sum")]:
        with pytest.raises(InputError, match=word):
            read_weights(PointCloud(np.zeros((4, 3)), {"w": np.array(values, float)}, path="w.ply"), "w")


def test_register_format(tmp_path: Path) -> None:
    def reader(path: Path) -> PointCloud:
        return PointCloud(np.loadtxt(path, ndmin=2), path=str(path))

    def writer(path: Path, cloud: PointCloud) -> None:
        np.savetxt(path, cloud.points)

    register_format("ZZTEST", reader, writer)
    try:
        assert ".zztest" in supported_extensions()
        assert ".zztest" not in SUPPORTED_EXTENSIONS
        path = tmp_path / "a.zztest"
        write_points(path, make_cloud(n=4))
        assert read_points(path).points.shape == (4, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_format(".zztest", reader, writer)
        register_format(".zztest", reader, None, replace=True)
        with pytest.raises(InputError, match="read but not written"):
            write_points(tmp_path / "b.zztest", make_cloud(n=4))
    finally:
        unregister_format(".zztest")
    assert ".zztest" not in supported_extensions()


def test_supported_extensions_sorted() -> None:
    assert tuple(sorted(SUPPORTED_EXTENSIONS)) == SUPPORTED_EXTENSIONS
    assert set(SUPPORTED_EXTENSIONS) == {
        ".ply",
        ".pcd",
        ".xyz",
        ".txt",
        ".csv",
        ".npy",
        ".npz",
        ".vtk",
        ".vtp",
        ".vtu",
        # segmentation masks, read as voxel centres (register.io.images)
        ".nii",
        ".nii.gz",
        ".nrrd",
        ".nhdr",
        ".mha",
        ".mhd",
        # meshes (register.io.meshes) and LiDAR (register.io.lidar)
        ".obj",
        ".stl",
        ".off",
        ".las",
        ".laz",
        ".bin",
    }


def test_import_does_not_load_heavy_modules() -> None:
    heavy = "('pyvista', 'vtk', 'vtkmodules', 'torch', 'meshio', 'laspy')"
    code = f"import sys, register.io; print(sorted(m for m in {heavy} if m in sys.modules))"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, check=True
    )
    assert out.stdout.strip() == "[]"
