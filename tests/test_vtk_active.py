"""VTK writers mark ``displacement`` as the active vectors and ``normals`` as the active normals.

So that ParaView / pyvista ``warp_by_vector()`` (no argument) and glyphs use the displacement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from register.core.pointcloud import PointCloud
from register.io import read_points, write_points

pv = pytest.importorskip("pyvista")

CASES = [(".vtk", False), (".vtk", True), (".vtp", None), (".vtu", None)]
IDS = ["vtk-ascii", "vtk-binary", "vtp", "vtu"]


def _cloud(rng: np.random.Generator) -> PointCloud:
    points = rng.random((50, 3))
    normals = rng.normal(size=(50, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    data = {"displacement": rng.normal(size=(50, 3)), "normals": normals, "confidence": rng.random(50)}
    return PointCloud(points, data, None, None, None)


@pytest.mark.parametrize(("ext", "binary"), CASES, ids=IDS)
def test_displacement_and_normals_are_active(
    tmp_path: Path, rng: np.random.Generator, ext: str, binary: bool | None
) -> None:
    cloud = _cloud(rng)
    path = tmp_path / f"cloud{ext}"
    write_points(path, cloud, binary=binary)

    mesh = pv.read(path)
    assert mesh.point_data.active_vectors_name == "displacement"
    assert mesh.point_data.active_normals is not None
    assert mesh.point_data.active_normals_name == "normals"
    np.testing.assert_allclose(mesh.point_data.active_normals, cloud.point_data["normals"], atol=1e-9)
    np.testing.assert_allclose(mesh.point_data["confidence"], cloud.point_data["confidence"], atol=1e-9)
    warped = mesh.warp_by_vector()
    np.testing.assert_allclose(
        np.asarray(warped.points) - np.asarray(mesh.points), cloud.point_data["displacement"], atol=1e-9
    )

    back = read_points(path)
    assert set(back.point_data) == {"displacement", "normals", "confidence"}
    for name, arr in cloud.point_data.items():
        assert back.point_data[name].shape == arr.shape, name
        np.testing.assert_allclose(back.point_data[name], arr, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(back.points, cloud.points, atol=1e-9)


@pytest.mark.parametrize(("ext", "binary"), CASES, ids=IDS)
def test_other_shapes_are_not_marked(
    tmp_path: Path, rng: np.random.Generator, ext: str, binary: bool | None
) -> None:
    """A ``displacement`` that is not ``(N, 3)`` stays an ordinary array (and round-trips)."""
    data = {"displacement": rng.random(20), "normals": rng.random((20, 2))}
    cloud = PointCloud(rng.random((20, 3)), data, None, None, None)
    path = tmp_path / f"cloud{ext}"
    write_points(path, cloud, binary=binary)
    mesh = pv.read(path)
    assert mesh.point_data.active_vectors_name is None
    assert mesh.point_data.active_normals_name is None
    back = read_points(path)
    for name, arr in data.items():
        np.testing.assert_allclose(back.point_data[name], arr, atol=1e-9, err_msg=name)


def test_legacy_ascii_has_vectors_and_normals_lines(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "cloud.vtk"
    write_points(path, _cloud(rng), binary=False)
    text = path.read_text()
    assert "VECTORS displacement double" in text
    assert "NORMALS normals double" in text
    assert text.count("displacement") == 1 and text.count("normals") == 1  # written once each
