import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from register.core.transforms import Affine, Composite, InverseKernelField, KernelField, Transform
from register.errors import InputError
from register.exports import (
    affine_matrix,
    affine_part,
    export_transform,
    nonlinear,
    write_itk_tfm,
    write_matrix_txt,
)


def _affine(rng: np.random.Generator) -> Affine:
    """A random rotation times an anisotropic scale (not symmetric), plus a translation (mm)."""
    rotation = Rotation.random(random_state=rng).as_matrix()
    matrix = rotation @ np.diag(rng.uniform(0.5, 2.0, 3))
    assert not np.allclose(matrix, matrix.T)  # a transposed matrix would be caught
    return Affine(matrix, rng.normal(scale=50.0, size=3))


def _points(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-200.0, 200.0, (n, 3))


def _field(rng: np.random.Generator) -> KernelField:
    return KernelField(rng.uniform(-50, 50, (5, 3)), rng.normal(size=(5, 3)), (20.0,))


def test_affine_matrix_agrees_with_apply(rng):
    tf = _affine(rng)
    m = affine_matrix(tf)
    assert m.shape == (4, 4)
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])
    pts = _points(rng, 100)
    homogeneous = np.column_stack([pts, np.ones(len(pts))]) @ m.T
    np.testing.assert_allclose(homogeneous[:, :3], tf.apply(pts), rtol=0, atol=1e-12)
    np.testing.assert_allclose(homogeneous[:, 3], 1.0)


@pytest.mark.parametrize("ext", [".tfm", ".h5"])
def test_itk_file_maps_points_as_apply(tmp_path, rng, ext):
    tf = _affine(rng)
    path = tmp_path / f"affine{ext}"
    write_itk_tfm(path, tf)
    itk = sitk.ReadTransform(str(path))
    pts = _points(rng, 20)
    mapped = np.array([itk.TransformPoint(p.tolist()) for p in pts])
    np.testing.assert_allclose(mapped, tf.apply(pts), rtol=0, atol=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_itk_upper_case_extension(tmp_path, rng):
    tf = _affine(rng)
    path = tmp_path / "AFFINE.TFM"
    assert export_transform(path, tf) == "itk"
    copy = tmp_path / "copy.tfm"  # SimpleITK reads by lower-case extension only
    copy.write_bytes(path.read_bytes())
    pts = _points(rng, 5)
    mapped = np.array([sitk.ReadTransform(str(copy)).TransformPoint(p.tolist()) for p in pts])
    np.testing.assert_allclose(mapped, tf.apply(pts), rtol=0, atol=1e-9)


def test_txt_round_trip_is_exact(tmp_path, rng):
    tf = _affine(rng)
    path = tmp_path / "affine.txt"
    assert export_transform(path, tf) == "matrix"
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(len(line.split()) == 4 for line in lines)
    np.testing.assert_array_equal(np.loadtxt(path), affine_matrix(tf))


def test_composite_of_affines_is_their_product(tmp_path, rng):
    first, second = _affine(rng), _affine(rng)
    tf = Composite([first, second])
    part = affine_part(tf)
    assert part is not None and not nonlinear(tf)
    pts = _points(rng, 50)
    np.testing.assert_allclose(part.apply(pts), tf.apply(pts), rtol=0, atol=1e-9)
    # the order matters: second o first, not first o second
    assert not np.allclose(affine_matrix(tf), affine_matrix(first.compose(second)))
    write_matrix_txt(tmp_path / "m.txt", tf)
    m = np.loadtxt(tmp_path / "m.txt")
    np.testing.assert_allclose(pts @ m[:3, :3].T + m[:3, 3], tf.apply(pts), rtol=0, atol=1e-9)
    write_itk_tfm(tmp_path / "c.tfm", tf)
    itk = sitk.ReadTransform(str(tmp_path / "c.tfm"))
    mapped = np.array([itk.TransformPoint(p.tolist()) for p in pts])
    np.testing.assert_allclose(mapped, tf.apply(pts), rtol=0, atol=1e-9)


def test_nested_composite_and_saved_transform(tmp_path, rng):
    tf = Composite([_affine(rng), Composite([_affine(rng), _affine(rng)])])
    tf.save(tmp_path / "transform.npz")
    loaded = Transform.load(tmp_path / "transform.npz")
    pts = _points(rng, 20)
    np.testing.assert_allclose(affine_part(loaded).apply(pts), tf.apply(pts), rtol=0, atol=1e-9)


@pytest.mark.parametrize("ext", [".txt", ".tfm", ".h5"])
@pytest.mark.parametrize("make", ["composite", "field", "inverse"])
def test_nonlinear_transform_is_refused(tmp_path, rng, ext, make):
    field = _field(rng)
    tf = {
        "composite": Composite([_affine(rng), field]),
        "field": field,
        "inverse": InverseKernelField(field),
    }[make]
    assert affine_part(tf) is None and nonlinear(tf)
    path = tmp_path / f"out{ext}"
    with pytest.raises(InputError, match="`register field`") as err:
        export_transform(path, tf)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="non-linear part"):
        affine_matrix(tf)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["out.json", "out.npz", "out.mat", "out"])
def test_unknown_extension_is_refused(tmp_path, rng, name):
    with pytest.raises(InputError, match=r"\.txt.*\.tfm.*\.h5") as err:
        export_transform(tmp_path / name, _affine(rng))
    assert str(tmp_path / name) in str(err.value)
    assert not list(tmp_path.iterdir())


def test_missing_folder_and_empty_composite(tmp_path, rng):
    with pytest.raises(InputError, match="does not exist"):
        export_transform(tmp_path / "missing" / "a.tfm", _affine(rng))
    with pytest.raises(InputError, match="empty composite"):
        affine_matrix(Composite([]))
    assert affine_part(Composite([])) is None and not nonlinear(Composite([]))


# ------------------------------------------------------------------------- register export


def _cli_pair(folder: Path) -> tuple[Path, Path]:
    from register.core.pointcloud import PointCloud
    from register.io import write_points

    rng = np.random.default_rng(3)
    src = rng.normal(size=(300, 3)) * [1.0, 0.7, 0.4]
    rot = Rotation.from_euler("xyz", [12, -7, 20], degrees=True).as_matrix()
    tgt = src[rng.permutation(300)] @ rot.T + [0.3, -0.2, 0.1]
    write_points(folder / "src.npy", PointCloud(src))
    write_points(folder / "tgt.npy", PointCloud(tgt))
    return folder / "src.npy", folder / "tgt.npy"


def _invoke(*args) -> object:
    from typer.testing import CliRunner

    from register.app.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})


def test_cli_export_itk_matches_the_run(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    src, tgt = _cli_pair(tmp_path)
    run = _invoke("run", src, tgt, "--stages", "affine", "-o", tmp_path / "aff", "-q")
    assert run.exit_code == 0, run.stderr
    tf = Transform.load(tmp_path / "aff" / "transform.npz")
    out = tmp_path / "aff.tfm"
    result = _invoke("export", tmp_path / "aff" / "transform.npz", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "status": "ok",
        "output": str(out),
        "kind": "itk",
        "affine_only": False,
    }
    itk = sitk.ReadTransform(str(out))
    pts = np.random.default_rng(4).normal(size=(20, 3))
    moved = np.array([itk.TransformPoint(tuple(p)) for p in pts])
    np.testing.assert_allclose(moved, tf.apply(pts), atol=1e-9)
    again = _invoke("export", tmp_path / "aff" / "transform.npz", "-o", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_cli_export_refuses_a_field_unless_affine_only(tmp_path: Path) -> None:
    src, tgt = _cli_pair(tmp_path)
    cheap = [
        "--set",
        "affine.blurs=[0.2,0.1]",
        "--set",
        "spline.blurs=[0.05]",
        "--set",
        "spline.sigmas=[0.3]",
    ]
    run = _invoke("run", src, tgt, "--stages", "affine,spline", *cheap, "-o", tmp_path / "full", "-q")
    assert run.exit_code == 0, run.stderr
    transform = tmp_path / "full" / "transform.npz"
    refused = _invoke("export", transform, "-o", tmp_path / "m.txt")
    assert refused.exit_code == 2 and "register field" in refused.stderr
    assert not (tmp_path / "m.txt").exists()
    result = _invoke("export", transform, "-o", tmp_path / "m.txt", "--affine-only", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["affine_only"] is True
    first = Transform.load(transform).steps[0]
    assert isinstance(first, Affine)
    pts = np.random.default_rng(5).normal(size=(50, 3))
    m = np.loadtxt(tmp_path / "m.txt")
    np.testing.assert_allclose(pts @ m[:3, :3].T + m[:3, 3], first.apply(pts), atol=1e-12)
    bad = _invoke("export", transform, "-o", tmp_path / "m.mat")
    assert bad.exit_code == 2 and "unknown export format" in bad.stderr
