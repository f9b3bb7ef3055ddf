"""The lung-CT workflow: masks in (NIfTI, flipped axis, anisotropic voxels), dense fields out
(ITK and Learn2Reg conventions), images warped; the README's commands run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from register.app.cli import COMMANDS, app
from register.core.transforms import Affine, Composite, KernelField, load_transform
from register.errors import InputError
from register.fields import displacement_on_grid, field_image
from register.io import read_points
from register.io.images import Grid, grid_of, read_image, read_mask, read_sitk, to_sitk, write_sitk

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")

import lung_masks  # noqa: E402  (pytest puts tests/ on sys.path: it has no __init__.py)

README = Path(__file__).resolve().parents[1] / "README.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_cli(args, cwd: Path):
    import os

    args = [str(a) for a in args]
    if args[0] not in COMMANDS:  # `register SRC TGT` is `register run SRC TGT` (as main() does)
        args.insert(0, "run")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, ANSI.sub("", result.stderr)


def readme_commands() -> list[list[str]]:
    """The ``register`` command lines of the README's lung CT workflow block, in order."""
    text = README.read_text()
    section = text[text.index("## Lung CT workflow") :]
    block = section[section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)]
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("register ")]


# ---------------------------------------------------------------- conventions


def test_grid_matches_simpleitk_and_nibabel(tmp_path):
    grid = lung_masks.grid()
    path = tmp_path / "g.nii.gz"
    write_sitk(path, to_sitk(np.zeros(grid.shape, np.uint8), grid))
    image = read_sitk(path)
    index = np.array([[0, 0, 0], [3, 7, 11], [71, 55, 39]])
    ours = grid.world(index)
    theirs = np.array([image.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)) for i in index])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # nibabel: the same voxel index in RAS (x and y negated), i.e. the file's affine.
    ras = nib.load(path).affine @ np.c_[index, np.ones(len(index))].T
    np.testing.assert_allclose(ras[:3].T * [-1, -1, 1], ours, atol=1e-4)
    np.testing.assert_allclose(grid.index(ours), index, atol=1e-9)


def test_read_image_is_in_index_order(tmp_path):
    grid = lung_masks.grid()
    values = np.arange(np.prod(grid.shape), dtype=np.int32).reshape(grid.shape)
    write_sitk(tmp_path / "v.mha", to_sitk(values, grid))
    back, g = read_image(tmp_path / "v.mha")
    assert back.shape == grid.shape and np.array_equal(back, values)
    assert np.array_equal(nib.load(_nifti(tmp_path, values, grid)).get_fdata(), values)
    np.testing.assert_allclose(g.direction, grid.direction)


def _nifti(folder: Path, values, grid) -> Path:
    path = folder / "v.nii.gz"
    write_sitk(path, to_sitk(values, grid))
    return path


def test_mask_points_are_voxel_centres_with_radius_and_label(tmp_path):
    fixed, _ = lung_masks.write_pair(tmp_path)
    values, grid = read_image(fixed)
    cloud = read_points(fixed)  # the format registry reads masks as clouds
    assert len(cloud) == int((values > 0).sum())
    assert set(cloud.point_data) == {"radius", "label"}
    assert set(np.unique(cloud.point_data["label"])) == {1, 2}
    # every point is the world position of a non-zero voxel centre
    index = np.round(grid.index(cloud.points)).astype(int)
    np.testing.assert_allclose(grid.world(index), cloud.points, atol=1e-6)
    assert (values[tuple(index.T)] > 0).all()
    # radius: mm to the nearest background voxel, at most a lobe's half-thickness
    assert cloud.point_data["radius"].min() >= 0.5 * grid.spacing.min()
    assert cloud.point_data["radius"].max() < 50
    left = read_mask(fixed, labels=(1,))
    assert 0 < len(left) < len(cloud) and "label" not in left.point_data
    with pytest.raises(InputError, match="no voxel with a label 7 value"):
        read_mask(fixed, labels=(7,))


def test_skeleton_keeps_centre_lines(tmp_path):
    pytest.importorskip("skimage")
    grid = Grid((40, 20, 20), np.zeros(3), np.ones(3), np.eye(3))
    i, j, k = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    tube = (((j - 10) ** 2 + (k - 10) ** 2 <= 9) & (i > 3) & (i < 36)).astype(np.uint8)  # a vessel along x
    write_sitk(tmp_path / "bar.nrrd", to_sitk(tube, grid))
    skeleton = read_mask(tmp_path / "bar.nrrd", skeleton=True)
    assert 0 < len(skeleton) < 0.1 * tube.sum()
    assert np.ptp(skeleton.points[:, 1]) <= 1.0 and np.ptp(skeleton.points[:, 2]) <= 1.0
    assert skeleton.point_data["radius"].max() >= 2.5  # the vessel's radius (3 voxels), not a voxel


def test_fractional_image_is_not_a_mask(tmp_path):
    grid = Grid((5, 5, 5), np.zeros(3), np.ones(3), np.eye(3))
    write_sitk(tmp_path / "ct.nii.gz", to_sitk(np.full(grid.shape, 0.5, np.float32), grid))
    with pytest.raises(InputError, match="fractional values"):
        read_mask(tmp_path / "ct.nii.gz")


# ---------------------------------------------------------------- dense fields


def _bumpy_transform() -> Composite:
    rng = np.random.default_rng(1)
    grid = lung_masks.grid()
    controls = grid.world(rng.uniform(5, 35, (400, 3)) * [1.8, 1.4, 1.0])
    return Composite(
        [
            Affine(np.diag([1.02, 0.97, 1.05]), np.array([1.0, -2.0, 3.0])),
            KernelField(controls, rng.normal(size=(400, 3)) * 0.5, (30.0,)),
            KernelField(controls, rng.normal(size=(400, 3)) * 0.2, (10.0,)),
        ]
    )


@pytest.mark.parametrize("tolerance", [None, 0.002])
def test_grid_field_matches_exact_evaluation(tolerance):
    grid = lung_masks.grid()
    transform = _bumpy_transform()
    field = displacement_on_grid(transform, grid, tolerance=tolerance)
    limit = grid.spacing.min() / 20 if tolerance is None else tolerance
    assert field.displacement.shape == (*grid.shape, 3) and field.displacement.dtype == np.float32
    assert field.max_error <= limit
    rng = np.random.default_rng(7)  # voxels the check did not choose
    index = rng.integers(0, grid.shape, (3000, 3))
    exact = transform.apply(grid.world(index)) - grid.world(index)
    error = np.linalg.norm(field.displacement[tuple(index.T)] - exact, axis=1)
    assert error.max() <= 2 * limit  # float32 storage and unsampled voxels: same order as the bound
    assert np.abs(exact).max() > 50 * limit  # the field is not trivially small


def test_tight_tolerance_refines_the_stride():
    grid = lung_masks.grid()
    loose = displacement_on_grid(_bumpy_transform(), grid, tolerance=1.0)
    tight = displacement_on_grid(_bumpy_transform(), grid, tolerance=1e-4)
    assert tight.stride < loose.stride and tight.max_error <= 1e-4


def test_affine_field_is_exact_at_the_coarsest_stride():
    grid = lung_masks.grid()
    affine = Affine(np.array([[1.1, 0.05, 0], [0, 0.9, 0.02], [0.01, 0, 1.0]]), np.array([3.0, 1.0, -2.0]))
    field = displacement_on_grid(affine, grid)
    assert field.stride == 16 and field.max_error < 1e-3
    x = grid.world(np.array([[70, 1, 38]]))
    np.testing.assert_allclose(field.displacement[70, 1, 38], (affine.apply(x) - x)[0], atol=1e-3)


def test_learn2reg_units_are_voxel_steps_of_the_fixed_grid():
    grid = lung_masks.grid()
    shift = Affine(np.eye(3), np.array([3.2, 5.2, -9.0]))  # +1 voxel in i, -2 in j (flipped), -2 in k
    field = displacement_on_grid(shift, grid)
    u = field.voxel_units()
    np.testing.assert_allclose(u[10, 10, 10], [1.0, -2.0, -2.0], atol=1e-5)
    image = field_image(field, "learn2reg")
    assert image.GetSize() == (*grid.shape, 3)


# ---------------------------------------------------------------- the workflow, as the README writes it


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """Run the README's lung CT commands on the synthetic mask pair; the folder."""
    folder = tmp_path_factory.mktemp("lung_ct")
    lung_masks.write_pair(folder)
    fixed_lm, moving_lm = lung_masks.landmarks()
    np.savetxt(folder / "fixed_landmarks.csv", fixed_lm, delimiter=",")
    np.savetxt(folder / "moving_landmarks.csv", moving_lm, delimiter=",")
    for args in readme_commands():
        code, out, err = run_cli(args, folder)
        assert code == 0, f"register {' '.join(args)} -> exit {code}: {err}{out}"
    return folder


def test_readme_block_is_the_workflow():
    names = [args[0] if not args[0].endswith(".nii.gz") else "run" for args in readme_commands()]
    assert names == ["mask-points", "run", "field", "field", "warp-image", "warp"]


def test_itk_field_moves_landmarks_like_register_warp(workflow):
    fixed_lm = np.loadtxt(workflow / "fixed_landmarks.csv", delimiter=",")
    warped = read_points(workflow / "fixed_landmarks_in_moving.csv").points
    field = sitk.ReadImage(str(workflow / "disp.nii.gz"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    by_itk = np.array([transform.TransformPoint(tuple(p)) for p in fixed_lm])
    assert np.abs(by_itk - warped).max() < 0.1
    assert np.linalg.norm(warped - fixed_lm, axis=1).mean() > 2.0  # the landmarks did move


def test_learn2reg_field_scores_like_register_warp(workflow):
    """Read as the Learn2Reg evaluation reads a submission: nibabel, channels last, linear
    interpolation at the fixed landmarks' voxel indices, TRE in mm through the spacing."""
    from scipy.ndimage import map_coordinates

    fixed_lm = np.loadtxt(workflow / "fixed_landmarks.csv", delimiter=",")
    moving_lm = np.loadtxt(workflow / "moving_landmarks.csv", delimiter=",")
    warped = read_points(workflow / "fixed_landmarks_in_moving.csv").points
    disp = nib.load(workflow / "disp_l2r.nii.gz").get_fdata()
    fixed = nib.load(workflow / "fixed.nii.gz")
    assert disp.shape == (*fixed.shape, 3)
    to_voxel = np.linalg.inv(fixed.affine)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    fix_vox = (to_voxel @ np.c_[fixed_lm * lps_to_ras, np.ones(len(fixed_lm))].T)[:3].T
    mov_vox = (to_voxel @ np.c_[moving_lm * lps_to_ras, np.ones(len(moving_lm))].T)[:3].T
    d = np.stack([map_coordinates(disp[..., c], fix_vox.T, order=1) for c in range(3)], 1)
    spacing = np.array(fixed.header.get_zooms()[:3])
    tre_l2r = np.linalg.norm((fix_vox + d - mov_vox) * spacing, axis=1)
    tre_register = np.linalg.norm(warped - moving_lm, axis=1)
    np.testing.assert_allclose(tre_l2r.mean(), tre_register.mean(), atol=0.05)
    assert np.abs(tre_l2r - tre_register).max() < 0.2
    before = np.linalg.norm(fixed_lm - moving_lm, axis=1).mean()
    assert tre_register.mean() < 0.6 * before  # the registration itself helps


def test_warped_moving_mask_overlaps_the_fixed_mask(workflow):
    fixed = read_image(workflow / "fixed.nii.gz")[0] > 0
    moving = read_image(workflow / "moving.nii.gz")[0] > 0
    warped, grid = read_image(workflow / "moving_on_fixed.nii.gz")
    assert grid.matches(grid_of(read_sitk(workflow / "fixed.nii.gz")))
    assert set(np.unique(warped)) <= {0, 1, 2}  # nearest neighbour: labels stay labels

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(fixed, warped > 0) > dice(fixed, moving) + 0.03


def test_warp_image_matches_simpleitk_resampling_of_the_itk_field(workflow, tmp_path):
    field = sitk.Cast(sitk.ReadImage(str(workflow / "disp.nii.gz")), sitk.sitkVectorFloat64)
    moving = sitk.ReadImage(str(workflow / "moving.nii.gz"))
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))
    theirs = sitk.Resample(moving, field, transform, sitk.sitkNearestNeighbor, 0, moving.GetPixelID())
    ours = sitk.ReadImage(str(workflow / "moving_on_fixed.nii.gz"))
    agree = sitk.GetArrayFromImage(theirs) == sitk.GetArrayFromImage(ours)
    assert agree.mean() > 0.999  # ties of nearest neighbour at float32 storage


def test_mask_points_output(workflow):
    cloud = read_points(workflow / "fixed_points.vtk")
    assert len(cloud) == int((read_image(workflow / "fixed.nii.gz")[0] > 0).sum())
    assert "radius" in cloud.point_data


# ---------------------------------------------------------------- errors a user can fix


def test_field_errors_are_one_line_exit_2(workflow, tmp_path):
    transform = workflow / "fixed_to_moving" / "transform.npz"
    reference = workflow / "fixed.nii.gz"
    cases = [
        (
            ["field", transform, "--reference", reference, "-o", tmp_path / "d.nii.gz", "--format", "x"],
            "--format x",
        ),
        (["field", transform, "--reference", reference, "-o", tmp_path / "d.vtk"], "a field is an image"),
        (
            ["field", transform, "--reference", tmp_path / "no.nii.gz", "-o", tmp_path / "d.nii.gz"],
            "file not found",
        ),
        (["field", transform, "--reference", reference, "-o", workflow / "disp.nii.gz"], "file exists"),
        (
            [
                "warp-image",
                transform,
                reference,
                "--reference",
                reference,
                "-o",
                tmp_path / "w.nii.gz",
                "--interpolation",
                "cubic",
            ],
            "--interpolation cubic",
        ),
        (["mask-points", reference, "-o", tmp_path / "p.vtk", "--labels", "a,b"], "--labels a,b"),
    ]
    for args, message in cases:
        code, out, err = run_cli(args, tmp_path)
        assert code == 2, (args, code, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d.nii.gz").exists() and not (tmp_path / "w.nii.gz").exists()


def test_transform_of_the_workflow_loads(workflow):
    assert load_transform(workflow / "fixed_to_moving" / "transform.npz").dim == 3


# ---------------------------------------------------------------- inverse


def test_warp_inverse_round_trips_the_landmarks(workflow, tmp_path):
    transform = workflow / "fixed_to_moving" / "transform.npz"
    fixed_lm = workflow / "fixed_landmarks.csv"
    moved = workflow / "fixed_landmarks_in_moving.csv"
    code, out, err = run_cli(["warp", transform, moved, "-o", tmp_path / "back.csv", "--inverse"], tmp_path)
    assert code == 0, err
    back = read_points(tmp_path / "back.csv").points
    start = np.loadtxt(fixed_lm, delimiter=",")
    magnitude = np.linalg.norm(read_points(moved).points - start, axis=1).max()
    assert np.linalg.norm(back - start, axis=1).max() < 1e-3 * magnitude


def test_inverse_field_is_the_pull_back_of_the_reverse_direction(workflow, tmp_path):
    """``field --inverse`` of fixed -> moving, evaluated on the moving grid, sends each moving
    voxel where the fixed -> moving map came from: composing with the forward field is ~identity."""
    transform = workflow / "fixed_to_moving" / "transform.npz"
    out = tmp_path / "inv.nii.gz"
    code, _, err = run_cli(
        ["field", transform, "--reference", workflow / "moving.nii.gz", "-o", out, "--inverse"], tmp_path
    )
    assert code == 0, err
    inv = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(out)), sitk.sitkVectorFloat64))
    tf = load_transform(transform)
    moving_lm = np.loadtxt(workflow / "moving_landmarks.csv", delimiter=",")
    pulled = np.array([inv.TransformPoint(tuple(p)) for p in moving_lm])
    assert np.abs(tf.apply(pulled) - moving_lm).max() < 0.1


def test_inverse_round_trip_on_a_real_lung_registration(shared_data):
    """DIR-LAB 4DCT case 1 (1,783 expert landmark pairs, EI -> EE shuffled, ``-p lung``): the
    inverse undoes the registration within 1e-3 of its largest displacement, at the landmarks
    and on a lattice covering the lungs and a margin."""
    from register.pipeline import register

    path = shared_data / "lung/dirlab4dct/case1_dense_EI_EE_mm.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    table = np.loadtxt(path, delimiter=",", comments="#", ndmin=2)
    ei, ee = table[:, :3], table[:, 3:6]
    tf = register(ei, ee[np.random.default_rng(0).permutation(len(ee))], "lung").transform
    axes = [np.linspace(lo - 10, hi + 10, 25) for lo, hi in zip(ei.min(0), ei.max(0), strict=True)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inv = tf.inverse()
    for x in (ei, lattice):
        y = tf.apply(x)
        magnitude = np.linalg.norm(y - x, axis=1).max()
        assert magnitude > 1.0
        assert np.linalg.norm(inv.apply(y) - x, axis=1).max() < 1e-3 * magnitude
        assert np.linalg.norm(tf.apply(inv.apply(x)) - x, axis=1).max() < 1e-3 * magnitude
