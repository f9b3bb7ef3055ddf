"""Meshes (OBJ / STL / OFF), LiDAR (LAS / LAZ / KITTI .bin), ``archive.npz:KEY`` and ``drop_nan``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from register.app.cli import app
from register.core.pointcloud import PointCloud
from register.errors import InputError
from register.io import read_points, write_points
from register.io.lidar import las_scale

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


def grid_mesh(n: int = 6) -> PointCloud:
    """An ``n x n`` vertex sheet with ``(n-1)^2`` quads and unit normals."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 2, n), indexing="ij")
    pts = np.column_stack([u.ravel(), v.ravel(), 0.1 * np.sin(3 * u.ravel())])
    idx = np.arange(n * n).reshape(n, n)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    normals = np.tile([0.0, 0.0, 1.0], (n * n, 1))
    return PointCloud(pts, {"normals": normals}, quads, None)


def triangles_as_coordinates(cloud: PointCloud) -> set:
    return {tuple(np.round(cloud.points[f], 6).ravel()) for f in cloud.faces}


def test_obj_round_trip_keeps_vertices_faces_normals(tmp_path: Path) -> None:
    mesh = grid_mesh()
    write_points(tmp_path / "m.obj", mesh)
    back = read_points(tmp_path / "m.obj")
    np.testing.assert_allclose(back.points, mesh.points, atol=1e-12)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_allclose(back.point_data["normals"], mesh.point_data["normals"])


def test_obj_mixed_polygons_are_fanned_into_triangles(tmp_path: Path) -> None:
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 2 0 0\nf 1 2 3 4\nf 2 5 3\n"
    (tmp_path / "mixed.obj").write_text(text)
    cloud = read_points(tmp_path / "mixed.obj")
    assert cloud.faces.shape == (3, 3)  # the quad as 2 triangles, plus the triangle
    assert {tuple(f) for f in cloud.faces} == {(0, 1, 2), (0, 2, 3), (1, 4, 2)}


@pytest.mark.parametrize("binary", [True, False])
def test_stl_round_trip_merges_corners(tmp_path: Path, binary: bool) -> None:
    mesh = grid_mesh()
    write_points(tmp_path / "m.stl", mesh, binary=binary)
    back = read_points(tmp_path / "m.stl")
    assert len(back) == len(mesh)  # shared corners merged: one vertex each
    assert back.faces.shape == (2 * len(mesh.faces), 3)  # quads written as 2 triangles each
    q = mesh.faces
    fanned = PointCloud(mesh.points, {}, np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]))
    assert triangles_as_coordinates(back) == triangles_as_coordinates(fanned)


def test_stl_refuses_a_cloud_without_faces(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no faces"):
        write_points(tmp_path / "p.stl", PointCloud(np.random.default_rng(0).normal(size=(10, 3))))
    assert not list(tmp_path.iterdir())


def test_off_quads_comments_and_modelnet_header(tmp_path: Path) -> None:
    body = "# a comment\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n4 0 1 2 3\n3 0 1 4 255 0 0\n"
    for head in ("OFF\n5 2 0\n", "OFF5 2 0\n"):
        (tmp_path / "q.off").write_text(head + body)
        cloud = read_points(tmp_path / "q.off")
        assert len(cloud) == 5
        assert {tuple(f) for f in cloud.faces} == {(0, 1, 2), (0, 2, 3), (0, 1, 4)}


def test_off_round_trip_and_truncation(tmp_path: Path) -> None:
    mesh = grid_mesh()
    write_points(tmp_path / "m.off", mesh)
    back = read_points(tmp_path / "m.off")
    np.testing.assert_array_equal(back.points, mesh.points)  # 17 significant digits: exact
    np.testing.assert_array_equal(back.faces, mesh.faces)
    lines = (tmp_path / "m.off").read_text().splitlines()
    (tmp_path / "cut.off").write_text("\n".join(lines[:-3]))
    with pytest.raises(InputError, match="cut.off"):
        read_points(tmp_path / "cut.off")


@pytest.mark.parametrize("ext", [".las", ".laz"])
def test_las_round_trip_with_attributes(tmp_path: Path, ext: str) -> None:
    pytest.importorskip("laspy")
    if ext == ".laz":
        pytest.importorskip("lazrs")
    rng = np.random.default_rng(0)
    pts = rng.uniform([500_000, 4_000_000, 50], [500_300, 4_000_200, 80], (500, 3))  # UTM-like metres
    data = {
        "intensity": rng.integers(0, 4000, 500).astype(float),
        "confidence": rng.uniform(0, 1, 500),
        "displacement": rng.normal(size=(500, 3)),
    }
    write_points(tmp_path / f"scan{ext}", PointCloud(pts, data))
    back = read_points(tmp_path / f"scan{ext}")
    scale = las_scale(300.0)
    assert scale <= 1e-6
    np.testing.assert_allclose(back.points, pts, atol=scale)
    np.testing.assert_array_equal(back.point_data["intensity"], data["intensity"])
    np.testing.assert_array_equal(back.point_data["confidence"], data["confidence"])
    for j in range(3):
        np.testing.assert_array_equal(back.point_data[f"displacement_{j}"], data["displacement"][:, j])


def test_las_scale_fits_int32() -> None:
    for extent in (0.5, 80.0, 5_000.0, 3.0e6):
        scale = las_scale(extent)
        assert extent / scale < 2**31 - 1
        assert extent / (scale / 10) >= 2e9 or scale == 1e-9  # the smallest that fits


def test_corrupt_las_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("laspy")
    (tmp_path / "bad.las").write_bytes(b"LASF" + b"\0" * 50)
    with pytest.raises(InputError, match="bad.las"):
        read_points(tmp_path / "bad.las")


def test_kitti_bin_round_trip_and_bad_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.uniform(-40, 40, (1000, 3)), rng.uniform(0, 1, 1000)]).astype("<f4")
    rows.tofile(tmp_path / "000000.bin")
    cloud = read_points(tmp_path / "000000.bin")
    np.testing.assert_array_equal(cloud.points, rows[:, :3].astype(np.float64))
    np.testing.assert_array_equal(cloud.point_data["reflectance"], rows[:, 3].astype(np.float64))
    write_points(tmp_path / "copy.bin", cloud)
    assert (tmp_path / "copy.bin").read_bytes() == (tmp_path / "000000.bin").read_bytes()
    (tmp_path / "odd.bin").write_bytes(rows.tobytes()[:-4])
    with pytest.raises(InputError, match="multiple of 16"):
        read_points(tmp_path / "odd.bin")


def scene_flow_pair(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    pc1 = rng.uniform(-5, 5, (400, 3))
    flow = np.array([0.3, 0.0, 0.1]) + 0.01 * rng.normal(size=(400, 3))
    arrays = {"pc1": pc1, "pc2": pc1 + flow + 0.001 * rng.normal(size=(400, 3)), "flow": flow}
    np.savez(path, **arrays)
    return arrays


def test_npz_member_selects_the_points(tmp_path: Path) -> None:
    arrays = scene_flow_pair(tmp_path / "pair.npz")
    for key in ("pc1", "pc2"):
        cloud = read_points(f"{tmp_path / 'pair.npz'}:{key}")
        np.testing.assert_array_equal(cloud.points, arrays[key])
        assert cloud.label.endswith(f"pair.npz:{key}")
    np.testing.assert_array_equal(
        read_points(f"{tmp_path / 'pair.npz'}:pc1").point_data["flow"], arrays["flow"]
    )
    with pytest.raises(InputError, match=r"no array 'pc3' \(arrays: flow, pc1, pc2\)"):
        read_points(f"{tmp_path / 'pair.npz'}:pc3")
    with pytest.raises(InputError, match="no 'points' array"):
        read_points(tmp_path / "pair.npz")


def test_drop_nan_removes_points_and_renumbers_faces(tmp_path: Path) -> None:
    mesh = grid_mesh(4)
    pts = mesh.points.copy()
    pts[[5, 9]] = [np.nan, 0, 0], [0, np.inf, 0]
    write_points(tmp_path / "holes.npz", PointCloud(pts, mesh.point_data, mesh.faces))
    with pytest.raises(InputError, match="drop_nan=True"):
        read_points(tmp_path / "holes.npz")
    cloud = read_points(tmp_path / "holes.npz", drop_nan=True)
    assert len(cloud) == 14 and cloud.dropped == 2
    keep = np.setdiff1d(np.arange(16), [5, 9])
    np.testing.assert_array_equal(cloud.points, pts[keep])
    kept_faces = [f for f in mesh.faces if not set(f) & {5, 9}]
    assert len(cloud.faces) == len(kept_faces)
    np.testing.assert_array_equal(cloud.points[cloud.faces], pts[np.array(kept_faces)])


def test_cli_npz_members_and_drop_nan(tmp_path: Path) -> None:
    arrays = scene_flow_pair(tmp_path / "pair.npz")
    pc2 = arrays["pc2"].copy()
    pc2[::50] = np.nan  # 8 LiDAR-style invalid returns
    np.savez(tmp_path / "holes.npz", pc1=arrays["pc1"], pc2=pc2)
    args = [f"{tmp_path / 'pair.npz'}:pc1", f"{tmp_path / 'holes.npz'}:pc2", "--stages", "affine"]
    refused = CliRunner().invoke(app, ["run", *args, "-o", str(tmp_path / "a")], env=ENV)
    assert refused.exit_code == 2 and "--drop-nan" in refused.stderr
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    result = CliRunner().invoke(app, ["run", *args, "--drop-nan", "--json", "-o", str(out)], env=ENV)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dropped_points"] == {"source": 0, "target": 8}
    assert summary["target_points"] == 392
    assert (out / "warped.npz").is_file()  # the archive's own format
    moved = read_points(out / "warped.npz").points
    assert np.abs(moved - (arrays["pc1"] + arrays["flow"])).mean() < 0.05


def test_files_written_here_read_by_the_other_libraries(tmp_path: Path) -> None:
    """Each writer checked by an independent reader: VTK's (pyvista) for OBJ and STL, meshio for
    OFF (triangles: its reader takes no other polygon), laspy for LAS."""
    pv = pytest.importorskip("pyvista")
    meshio = pytest.importorskip("meshio")
    mesh = grid_mesh()
    q = mesh.faces
    tri = PointCloud(mesh.points, {}, np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]]))
    write_points(tmp_path / "m.obj", mesh)
    obj = pv.read(tmp_path / "m.obj")
    np.testing.assert_allclose(obj.points, mesh.points, atol=1e-6)  # VTK reads float32
    assert obj.n_cells == len(mesh.faces)
    write_points(tmp_path / "m.stl", tri)
    stl = pv.read(tmp_path / "m.stl")
    assert stl.n_cells == len(tri.faces)
    faces = stl.faces.reshape(-1, 4)[:, 1:]
    dist, index = cKDTree(tri.points).query(stl.points)  # VTK's vertex order is its own
    assert dist.max() < 1e-6
    assert {tuple(index[f]) for f in faces} == {tuple(f) for f in tri.faces}
    write_points(tmp_path / "m.off", tri)
    off = meshio.read(tmp_path / "m.off")
    np.testing.assert_allclose(off.points, tri.points)
    np.testing.assert_array_equal(off.cells_dict["triangle"], tri.faces)
    laspy = pytest.importorskip("laspy")
    pts = np.random.default_rng(6).uniform(0, 50, (200, 3))
    write_points(tmp_path / "p.las", PointCloud(pts, {"classification": np.full(200, 2.0)}))
    las = laspy.read(tmp_path / "p.las")
    np.testing.assert_allclose(np.column_stack([las.x, las.y, las.z]), pts, atol=las_scale(50.0))
    assert (np.asarray(las.classification) == 2).all()


def test_organised_pcd_with_nan_points(tmp_path: Path) -> None:
    """A PCL organised cloud (WIDTH x HEIGHT, NaN where the sensor saw nothing)."""
    header = (
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        "WIDTH 3\nHEIGHT 2\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 6\nDATA ascii\n"
    )
    rows = "0 0 0\nnan nan nan\n1 0 0\n0 1 1\nnan nan nan\n2 2 2\n"
    (tmp_path / "organised.pcd").write_text(header + rows)
    with pytest.raises(InputError, match="2 of 6 points have NaN"):
        read_points(tmp_path / "organised.pcd")
    cloud = read_points(tmp_path / "organised.pcd", drop_nan=True)
    assert cloud.dropped == 2
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [0, 1, 1], [2, 2, 2]])
