"""Tests of the synthetic-data module ``register.synth``."""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import numpy as np
import pytest

from register.metrics import nearest_distances
from register.synth import (
    HELD_OUT_STREAM,
    KINDS,
    RECIPES,
    TRAIN_STREAM,
    BlobShape,
    CloudShape,
    Motion,
    SceneShape,
    breathing,
    build_vessel_tree,
    make_lung_pair,
    make_shape,
    make_smooth_random_field,
    make_training_pair,
    pair_seed,
    random_affine,
    random_rotation,
    smooth_random_field,
    vessel_tree,
)
from register.synth.acquisition import Acquisition, observe
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


# ------------------------------------------------------------------ training pairs


@pytest.mark.parametrize("kind", KINDS)
def test_training_pair_deterministic_per_seed_and_shaped(kind):
    a = make_training_pair(kind, 5, 1500, target_points=1200)
    b = make_training_pair(kind, 5, 1500, target_points=1200)
    c = make_training_pair(kind, 6, 1500, target_points=1200)
    assert a.source.shape == a.flow.shape == (1500, 3) and a.target.shape == (1200, 3)
    assert a.valid.shape == (1500,) and a.valid.dtype == bool
    for key in ("source", "target", "flow", "valid"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.allclose(a.source, c.source)
    assert np.all(a.flow[~a.valid] == 0)
    assert (a.source_feature is None) == (kind != "lung") == (a.target_feature is None)
    # independent resampling: no shared points
    assert not {tuple(p) for p in a.source} & {tuple(p) for p in a.target}


@pytest.mark.parametrize("kind", KINDS)
def test_ground_truth_flow_moves_the_source_onto_the_target(kind):
    """Without noise and outliers, ``x + flow`` sits on the deformed shape exactly as ``x`` sits on
    the shape: its distance to a dense deformed sampling equals that of ``x`` to the same sampling
    undeformed (a wrong flow would add its error to it)."""
    shape = make_shape(kind, 3)
    clean = replace(RECIPES[kind], acquisition=Acquisition())
    pair = make_training_pair(kind, 3, 3000, shape=shape, recipe=clean)
    assert pair.valid.all()
    ref = shape.sample(20000, np.random.default_rng(9))
    deformed = pair.motion(ref.points, ref.part)
    intrinsic = nearest_distances(pair.source, ref.points).mean()
    moved = nearest_distances(pair.source + pair.flow, deformed).mean()
    before = nearest_distances(pair.source, deformed).mean()
    assert abs(moved - intrinsic) < 0.1 * intrinsic, (moved, intrinsic)
    if kind != "shapes":  # a blob's motion is mostly tangential: the distance to its surface barely changes
        assert before > 1.5 * moved, (before, moved)


def test_lung_pair_magnitudes_feature_and_outliers():
    pair = make_training_pair("lung", 0, 4000)
    mag = np.linalg.norm(pair.flow[pair.valid], axis=1)
    assert 1.0 < mag.mean() < 40.0 and mag.max() < 80.0  # mm
    assert (
        pair.source_feature.min() >= MIN_RADIUS_MM * 0.89
        and pair.source_feature.max() <= TRUNK_RADIUS_MM * 1.11
    )
    heavy = replace(RECIPES["lung"], acquisition=Acquisition(outliers=0.5))
    outl = make_training_pair("lung", 0, 4000, recipe=heavy)
    assert 0.0 < (~outl.valid).mean() <= 0.5


def test_motion_components_compose_as_documented():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, (50, 3))
    a, t = random_affine(1)
    origin = x.mean(0)
    shift = np.array([1.0, 2.0, 3.0])
    motion = Motion((lambda p: np.broadcast_to(shift, p.shape),), matrix=a, translation=t, origin=origin)
    np.testing.assert_allclose(motion(x), (x + shift - origin) @ a.T + origin + t)


def test_scene_parts_move_rigidly():
    only_parts = replace(
        RECIPES["sceneflow"], affine_probability=0.0, global_probability=0.0, acquisition=Acquisition()
    )
    shape = SceneShape.random(4)
    pair = make_training_pair("sceneflow", 4, 3000, shape=shape, recipe=only_parts)
    assert pair.params["moving_parts"] > 0
    sampling = shape.sample(400, np.random.default_rng(1))
    moved = pair.motion(sampling.points, sampling.part)
    for p in np.unique(sampling.part):
        pts, mov = sampling.points[sampling.part == p], moved[sampling.part == p]
        d0 = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        d1 = np.linalg.norm(mov[:, None] - mov[None], axis=-1)
        np.testing.assert_allclose(d1, d0, atol=1e-9)
    with pytest.raises(ValueError, match="part label"):
        pair.motion(sampling.points)


def test_user_cloud_shape_is_resampled_with_jitter():
    pts, rad = vessel_tree(2000, 1)
    shape = CloudShape(pts, rad)
    a, b = shape.sample(500, np.random.default_rng(0)), shape.sample(500, np.random.default_rng(1))
    assert shape.jitter > 0 and not {tuple(p) for p in a.points} & {tuple(p) for p in b.points}
    assert set(a.feature) <= set(rad)  # features follow their points
    assert nearest_distances(a.points, pts).max() < 6 * shape.jitter
    pair = make_training_pair("lung", 3, 1000, shape=shape)
    assert pair.source_feature is not None and pair.source.shape == (1000, 3)
    with pytest.raises(ValueError, match="K >= 2"):
        CloudShape(np.zeros((1, 3)))


def test_crop_and_density_change_the_sampling():
    shape = BlobShape.random(0)
    ref = shape.sample(20000, np.random.default_rng(9)).points
    lo, hi = ref.min(0), ref.max(0)

    def coverage(p: np.ndarray, radius: float) -> float:
        """Fraction of the shape (dense sampling) within ``radius`` of the cloud ``p``."""
        return float((nearest_distances(ref, p) < radius).mean())

    def count_spread(p: np.ndarray) -> float:
        """Coefficient of variation of the point counts in the occupied cells of a 5^3 grid."""
        cells = np.floor((p - lo) / (hi - lo + 1e-9) * 5).astype(int)
        counts = np.unique(cells, axis=0, return_counts=True)[1]
        return counts.std() / counts.mean()

    full = [observe(shape, 4000, Acquisition(), np.random.default_rng(s)).points for s in range(4)]
    radius = 3 * np.median(nearest_distances(full[0][:2000], full[0][2000:]))
    assert min(coverage(p, radius) for p in full) > 0.99
    crop = Acquisition(crop_probability=1.0, crop=0.5)
    cropped = [
        coverage(observe(shape, 4000, crop, np.random.default_rng(s)).points, radius) for s in range(4)
    ]
    assert min(cropped) > 0.45 and min(cropped) < 0.8, cropped  # up to half of the shape cut off
    dense = [
        observe(shape, 4000, Acquisition(density=3.0, density_sigma=0.3), np.random.default_rng(s))
        for s in range(4)
    ]
    assert np.mean([count_spread(d.points) for d in dense]) > 1.3 * np.mean([count_spread(p) for p in full])


def test_pair_seeds_separate_training_and_held_out_streams():
    train_seeds = {pair_seed(0, TRAIN_STREAM, i) for i in range(2000)}
    held_out = {pair_seed(0, HELD_OUT_STREAM, i) for i in range(2000)}
    assert len(train_seeds) == 2000 and not train_seeds & held_out
    assert pair_seed(1, TRAIN_STREAM, 0) != pair_seed(0, TRAIN_STREAM, 0)


def test_one_8k_pair_takes_well_under_a_second_of_cpu():
    import time

    shape = make_shape("lung", 0)  # built once per shape (~0.35 s), as in training
    start = time.process_time()
    make_training_pair("lung", 1, 8192, shape=shape)
    make_training_pair("sceneflow", 1, 8192)
    make_training_pair("shapes", 1, 8192)
    assert (time.process_time() - start) / 3 < 0.5


def test_keypoint_shape_spreads_through_the_lungs_without_feature():
    """Keypoint-like clouds: deterministic per seed, no feature, inside the lung envelopes (up to
    the jitter of the near-vessel share), and filling them (unlike the tree's centre lines)."""
    from scipy.spatial import cKDTree

    from register.synth.shapes import KeypointShape, VesselShape

    vessels = VesselShape.random(0)
    shape = KeypointShape(vessels, near_vessels=0.5, jitter_mm=3.0)
    a = shape.sample(4000, np.random.default_rng(1))
    b = shape.sample(4000, np.random.default_rng(1))
    assert a.points.shape == (4000, 3) and a.feature is None and np.array_equal(a.points, b.points)
    envelopes = lung_envelopes(vessels.size_mm)
    inside = np.any([e.contains(a.points) for e in envelopes], axis=0)
    assert inside.mean() > 0.95
    # Volume samples reach far from any vessel: the median distance to the nearest tree sample
    # is several times that of a tree sampling.
    tree_pts = vessels.sample(20000, np.random.default_rng(2)).points
    d_kp = cKDTree(tree_pts).query(a.points)[0]
    d_tree = cKDTree(tree_pts).query(vessels.sample(4000, np.random.default_rng(3)).points)[0]
    assert np.median(d_kp) > 3 * np.median(d_tree)
