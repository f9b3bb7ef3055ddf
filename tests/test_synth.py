"""Tests of the synthetic-data module ``register.synth``."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from register.synth import (
    breathing,
    build_vessel_tree,
    make_lung_pair,
    make_smooth_random_field,
    random_affine,
    random_rotation,
    smooth_random_field,
    vessel_tree,
)
from register.synth.vessels import MIN_RADIUS_MM, TRUNK_RADIUS_MM, lung_envelopes


@pytest.fixture(scope="module")
def tree():
    return build_vessel_tree(0)


@pytest.fixture(scope="module")
def cloud():
    return vessel_tree(1500, 5)


@pytest.fixture(scope="module")
def pair():
    return make_lung_pair(seed=3, n_points=2000)


def test_vessel_tree_deterministic_per_seed():
    p1, r1 = vessel_tree(1500, 7)
    p2, r2 = vessel_tree(1500, 7)
    p3, _ = vessel_tree(1500, 8)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(p1, p3)


def test_vessel_tree_shapes_radius_and_box():
    size = (300.0, 220.0, 280.0)
    pts, rad = vessel_tree(3000, 1, size_mm=size)
    assert pts.shape == (3000, 3) and rad.shape == (3000,)
    assert pts.dtype == np.float64 and rad.dtype == np.float64
    assert rad.min() >= MIN_RADIUS_MM and rad.max() <= TRUNK_RADIUS_MM
    assert np.all(pts >= 0.0) and np.all(pts <= np.array(size))
    # both lungs are populated and the cloud spans most of the box
    assert (pts[:, 0] < size[0] / 2).mean() > 0.3 and (pts[:, 0] > size[0] / 2).mean() > 0.3
    assert np.all(np.ptp(pts, axis=0) > 0.6 * np.array(size))


def test_vessel_tree_custom_size_scales():
    pts, _ = vessel_tree(1000, 2, size_mm=(150.0, 110.0, 140.0))
    assert np.all(pts >= 0.0) and np.all(pts <= [150.0, 110.0, 140.0])


def test_tree_structure(tree):
    s = len(tree)
    assert tree.segments.shape == (s, 2, 3) and tree.radii.shape == (s,)
    roots = np.flatnonzero(tree.parent < 0)
    assert len(roots) == 2 and np.all(tree.radii[roots] == TRUNK_RADIUS_MM)
    child = tree.parent >= 0
    # children start where their parent ends, are thinner, one generation deeper
    np.testing.assert_allclose(tree.segments[child, 0], tree.segments[tree.parent[child], 1])
    assert np.all(tree.radii[child] < tree.radii[tree.parent[child]])
    assert np.all(tree.generation[child] == tree.generation[tree.parent[child]] + 1)
    assert 8 <= tree.generation.max() <= 12
    # segment ends stay inside their lung envelope
    for lung_id, env in enumerate(lung_envelopes()):
        assert env.contains(tree.segments[tree.lung == lung_id, 1]).all()


def test_tree_sample_density_follows_length(tree):
    pts, rad = tree.sample(4000, 0, jitter=0.0)
    # with no jitter every point lies on its segment: distance to the nearest centre line is 0
    a, b = tree.segments[:, 0], tree.segments[:, 1]
    sub = pts[:200]
    ab = b - a
    t = np.clip(((sub[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    dist = np.linalg.norm(sub[:, None] - (a + t[..., None] * ab), axis=-1).min(axis=1)
    assert dist.max() < 1e-9
    assert set(np.unique(rad)) <= set(tree.radii)
    # the share of points per generation matches the share of centre-line length
    lengths = tree.lengths
    order = np.argsort(tree.radii)  # radii are random floats: they identify the segment
    seg = order[np.searchsorted(tree.radii[order], rad)]
    gen_of_point = tree.generation[seg]
    for g in range(tree.generation.max() + 1):
        want = lengths[tree.generation == g].sum() / lengths.sum()
        assert abs((gen_of_point == g).mean() - want) < 0.03


def test_breathing_bounded_and_smooth(cloud):
    pts, _ = cloud
    amp = 12.0
    d = breathing(pts, amp)
    assert d.shape == pts.shape
    mag = np.linalg.norm(d, axis=1)
    assert mag.max() <= 1.1 * amp and mag.max() >= 0.8 * amp
    # strongest at the base (low z), upward, nearly zero at the apex
    low, high = pts[:, 2] < np.percentile(pts[:, 2], 5), pts[:, 2] > np.percentile(pts[:, 2], 95)
    assert d[low, 2].mean() > 0.8 * amp and d[high, 2].mean() < 0.2 * amp
    assert np.all(d[:, 2] >= -0.06 * amp)
    # lateral expansion: points right of centre move right, left move left
    cx = 0.5 * (pts[:, 0].min() + pts[:, 0].max())
    assert np.all(d[pts[:, 0] > cx, 0] >= 0) and np.all(d[pts[:, 0] < cx, 0] <= 0)
    # smooth: finite-difference Jacobian bounded by a few amplitude / extent
    center, extent = pts.mean(axis=0), 0.5 * np.ptp(pts, axis=0)
    h = 1e-3
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = h
        dd = breathing(pts + step, amp, center=center, extent=extent) - breathing(
            pts, amp, center=center, extent=extent
        )
        assert np.abs(dd / h).max() < 3.0 * amp / extent.min()


def test_breathing_same_field_on_subsets(cloud):
    pts, _ = cloud
    c, e = np.array([150.0, 110.0, 140.0]), np.array([120.0, 90.0, 110.0])
    full = breathing(pts, 10.0, center=c, extent=e)
    np.testing.assert_allclose(breathing(pts[:10], 10.0, center=c, extent=e), full[:10])


@pytest.mark.parametrize("magnitude", [None, 2.0, 7.5])
def test_smooth_random_field_mean_magnitude(cloud, magnitude):
    pts, _ = cloud
    d = smooth_random_field(pts, 11, magnitude=magnitude)
    diag = np.linalg.norm(np.ptp(pts, axis=0))
    want = 0.05 * diag if magnitude is None else magnitude
    assert d.shape == pts.shape
    assert np.linalg.norm(d, axis=1).mean() == pytest.approx(want, rel=1e-9)
    np.testing.assert_array_equal(d, smooth_random_field(pts, 11, magnitude=magnitude))
    assert not np.allclose(d, smooth_random_field(pts, 12, magnitude=magnitude))


def test_smooth_random_field_is_smooth(cloud):
    pts, _ = cloud
    field = make_smooth_random_field(pts, 3, magnitude=2.0)
    step = np.array([0.5, -0.5, 0.5])
    change = np.linalg.norm(field(pts + step) - field(pts), axis=1)
    assert change.max() < 0.1  # 0.9 mm move, sigma ~ 90 mm: tiny change


def test_random_rotation_proper_and_bounded():
    for seed in range(50):
        r = random_rotation(seed, 15.0)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
        assert angle <= 15.0 + 1e-9
    np.testing.assert_array_equal(random_rotation(4, 30.0), random_rotation(4, 30.0))


def test_random_affine_bounds():
    a, t = random_affine(0, rotation_deg=10.0, scale=0.1, shear=0.05, translation=5.0)
    assert a.shape == (3, 3) and t.shape == (3,)
    assert np.all(np.abs(t) <= 5.0)
    sv = np.linalg.svd(a, compute_uv=False)
    assert sv.min() > 0.8 and sv.max() < 1.25 and np.linalg.det(a) > 0
    a2, t2 = random_affine(0, rotation_deg=10.0, scale=0.1, shear=0.05, translation=5.0)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(t, t2)
    ident, zero = random_affine(1, rotation_deg=0.0, scale=0.0, shear=0.0, translation=0.0)
    np.testing.assert_allclose(ident, np.eye(3))
    np.testing.assert_allclose(zero, 0.0)


def test_lung_pair(pair):
    src, tgt = pair["source"], pair["target"]
    assert src.shape == tgt.shape == (2000, 3)
    assert pair["source_radius"].shape == pair["target_radius"].shape == (2000,)
    # no shared points, not even approximately
    shared = {tuple(p) for p in src} & {tuple(p) for p in tgt}
    assert not shared
    assert pair["source_landmarks"].shape == pair["target_landmarks"].shape == (50, 3)
    # the ground truth maps the undeformed target sampling and the landmarks exactly
    disp = pair["displacement"]
    np.testing.assert_allclose(pair["target_undeformed"] + disp(pair["target_undeformed"]), tgt)
    np.testing.assert_allclose(
        pair["source_landmarks"] + disp(pair["source_landmarks"]), pair["target_landmarks"]
    )
    mag = np.linalg.norm(disp(src), axis=1)
    assert 2.0 < mag.mean() < 10.0 and mag.max() < 16.0
    # landmarks are bifurcations of the tree
    bp = pair["tree"].branch_points()
    assert all(np.any(np.all(bp == lm, axis=1)) for lm in pair["source_landmarks"])


def test_lung_pair_deterministic(pair):
    again = make_lung_pair(seed=3, n_points=2000)
    for key in ("source", "target", "source_landmarks", "target_landmarks"):
        np.testing.assert_array_equal(pair[key], again[key])
    other = make_lung_pair(seed=4, n_points=2000)
    assert not np.allclose(pair["source"], other["source"])


def _stand_in_io() -> types.ModuleType:
    """A minimal ``register.io`` for when the real one is not there yet."""

    def write_points(path, cloud):
        names = list(cloud.point_data)
        cols = [cloud.points] + [np.asarray(cloud.point_data[n]).reshape(len(cloud), -1) for n in names]
        header = ["ply", "format ascii 1.0", f"element vertex {len(cloud)}"]
        header += [f"property double {c}" for c in ("x", "y", "z", *names)] + ["end_header"]
        np.savetxt(path, np.hstack(cols), header="\n".join(header), comments="")

    mod = types.ModuleType("register.io")
    mod.write_points = write_points
    return mod


def test_main_writes_files(tmp_path, monkeypatch):
    try:
        from register.io import read_points
    except ImportError:
        read_points = None
        monkeypatch.setitem(sys.modules, "register.io", _stand_in_io())
    from register.synth.__main__ import main

    out = tmp_path / "lung"
    assert main([str(out), "--seed", "1", "--n-points", "300"]) == 0
    for name in ("lung_source.ply", "lung_target.ply", "README.md"):
        assert (out / name).is_file()
    for name in ("source", "target"):
        text = (out / f"lung_{name}.ply").read_text(errors="replace")
        assert "radius" in text.split("end_header")[0]
        csv = out / f"lung_{name}_landmarks.csv"
        assert csv.read_text().splitlines()[0] == "x,y,z"
        lm = np.loadtxt(csv, delimiter=",", skiprows=1)
        np.testing.assert_allclose(lm, make_lung_pair(seed=1, n_points=300)[f"{name}_landmarks"], atol=1e-5)
    if read_points is not None:  # the real reader: round trip of points and radius
        pair = make_lung_pair(seed=1, n_points=300)
        back = read_points(out / "lung_target.ply")
        np.testing.assert_allclose(back.points, pair["target"])
        np.testing.assert_allclose(back.point_data["radius"], pair["target_radius"])
    readme = (out / "README.md").read_text()
    assert "--seed 1" in readme and "mm" in readme
