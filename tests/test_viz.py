"""QA pictures (``register.app.viz``): the camera from the data, the distance colours shared by
both panels, the pixels of a good and a bad registration, and ``register show`` without a
display. Tests that render skip when off-screen rendering is not possible here."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from test_cli import CHEAP, assert_input_error, invoke, stderr_of, subprocess_env, write_pair

from register.app import viz
from register.app.viz import (
    colour_limits,
    display_problem,
    nearest_target_distances,
    render,
    view_axes,
)
from register.errors import InputError

Image = pytest.importorskip("PIL.Image")
SMALL = (600, 300)
NO_DISPLAY = "--screenshot FILE.png"


def disc(rng, n=2000, radius=10.0, thickness=0.05) -> np.ndarray:
    """A flat disc in the x-y plane (z: thin noise)."""
    r = radius * np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([r * np.cos(a), r * np.sin(a), rng.normal(0, thickness, n)])


def blob(rng, n=1500) -> np.ndarray:
    """A flattened box of points: 20 x 12 x 2."""
    return rng.uniform([-10, -6, -1], [10, 6, 1], size=(n, 3))


@pytest.fixture(scope="module")
def can_render(tmp_path_factory) -> bool:
    """Skip the test when a tiny picture cannot be rendered off-screen here."""
    rng = np.random.default_rng(0)
    points = blob(rng, 50)
    try:
        render(
            points, points, points, screenshot=tmp_path_factory.mktemp("probe") / "p.png", window_size=SMALL
        )
    except InputError as exc:
        pytest.skip(f"off-screen rendering is not possible here: {exc}")
    return True


def pixels(path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        return np.asarray(image.convert("RGB"), dtype=float)


def far_pixels(rgb: np.ndarray) -> int:
    """Pixels in the top (orange to dark red) colours of the distance map."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r > 120) & (r - b > 80) & (g < 0.75 * r)).sum())


def panel_middle(rgb: np.ndarray, col: int) -> np.ndarray:
    """The points' band of panel ``col`` (0 before, 1 after): no text, no colour bar."""
    h, w = rgb.shape[:2]
    return rgb[int(0.22 * h) : int(0.78 * h), col * w // 2 + 5 : (col + 1) * w // 2 - 5]


# ------------------------------------------------------------------------------- camera


def test_a_flat_horizontal_disc_is_seen_from_above(rng):
    right, up, normal = view_axes(disc(rng))
    np.testing.assert_allclose(normal, [0, 0, 1], atol=0.02)  # camera above, looking down
    assert abs(up[2]) < 0.02 and abs(right[2]) < 0.02
    np.testing.assert_allclose(np.cross(right, up), normal, atol=1e-9)  # not a mirror image


def test_a_thin_vertical_wall_is_seen_face_on(rng):
    n = 2000
    wall = np.column_stack([rng.uniform(-10, 10, n), rng.normal(0, 0.05, n), rng.uniform(0, 6, n)])
    right, up, normal = view_axes(wall + [100.0, -50.0, 20.0])
    assert abs(normal[1]) > 0.999  # looking across the wall's thickness
    np.testing.assert_allclose(right, [1, 0, 0], atol=0.02)  # its length across the picture
    np.testing.assert_allclose(up, [0, 0, 1], atol=0.02)  # its height up
    np.testing.assert_allclose(np.cross(right, up), normal, atol=1e-9)


def test_a_ground_plane_in_a_y_down_camera_frame_is_seen_from_above(rng):
    """KITTI / FlyingThings3D (HPLFlowNet): x right, y down, z forward; the scene's ground is the
    x-z plane: the camera sits at -y (above the ground), forward (z) up the picture."""
    ground = disc(rng)[:, [0, 2, 1]] * [1.0, 1.0, 0.6]  # x-z plane, a little longer across
    right, up, normal = view_axes(ground)
    np.testing.assert_allclose(normal, [0, -1, 0], atol=0.02)
    np.testing.assert_allclose(np.cross(right, up), normal, atol=1e-9)


def test_the_same_rule_for_a_rotated_cloud(rng):
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [30, -20, 50], degrees=True).as_matrix()
    flat = disc(rng) * [1.0, 0.5, 1.0]
    _, _, normal = view_axes(flat @ rotation.T)
    assert abs(normal @ rotation[:, 2]) > 0.999  # along the disc's (rotated) normal


def test_the_picture_camera_follows_the_axes(rng, can_render):
    target = disc(rng)
    plotter = viz._qa_plotter(target + [0.5, 0, 0], target, target, off_screen=True, window_size=SMALL)
    try:
        right, up, normal = view_axes(target)
        for renderer in plotter.renderers:
            camera = renderer.camera
            np.testing.assert_allclose(camera.direction, -normal, atol=1e-6)
            np.testing.assert_allclose(camera.up, up, atol=1e-6)
            assert camera.parallel_projection
    finally:
        plotter.close()


# ---------------------------------------------------------------------------- distances


def test_distances_to_the_nearest_target_point(rng):
    moving, target = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    np.testing.assert_allclose(nearest_target_distances(moving, target), cdist(moving, target).min(axis=1))
    flat = nearest_target_distances(moving[:, :2], target[:, :2])  # 2-D clouds: z = 0
    np.testing.assert_allclose(flat, cdist(moving[:, :2], target[:, :2]).min(axis=1))


def test_the_colour_scale_is_the_before_distances_95th_percentile(rng):
    before, after = rng.uniform(0, 10, 1000), rng.uniform(0, 1, 1000)
    assert colour_limits(before, after) == (0.0, pytest.approx(np.percentile(before, 95)))
    # The source already on the target: the after distances set it; all zero: a tiny range.
    assert colour_limits(np.zeros(10), after)[1] == pytest.approx(np.percentile(after, 95))
    low, high = colour_limits(np.zeros(10), np.zeros(10))
    assert low == 0.0 and high > 0.0


def test_both_panels_share_one_colour_scale(rng, can_render):
    target = blob(rng)
    source, warped = target + [2.0, 0.0, 0.0], target + [0.3, 0.0, 0.0]
    plotter = viz._qa_plotter(source, target, warped, off_screen=True, window_size=SMALL, units="mm")
    try:
        ranges, values = [], []
        for renderer in plotter.renderers:
            coloured = [a for a in renderer.actors.values() if getattr(a, "mapper", None) is not None]
            coloured = [a for a in coloured if a.mapper.scalar_visibility]
            assert len(coloured) == 1
            ranges.append(tuple(coloured[0].mapper.scalar_range))
            values.append(np.asarray(coloured[0].mapper.dataset["distance"]))
        before = nearest_target_distances(source, target)
        assert ranges[0] == ranges[1] == pytest.approx((0.0, np.percentile(before, 95)))
        np.testing.assert_allclose(values[0], before)
        np.testing.assert_allclose(values[1], nearest_target_distances(warped, target))
        assert len(plotter.scalar_bars) == 2  # one bar per panel, the same range
    finally:
        plotter.close()


def test_the_figures_printed_on_the_picture(rng):
    before, after = viz._panel_texts("pair", 1500, 1400, (2.5, 0.25), (3.0, 1.0), "mm", "ok")
    text = "\n".join(line for line, _ in before + after)
    assert "1,500 points" in text and "1,400 points" in text
    assert "chamfer 2.5 -> 0.25 mm" in text and "TRE 3 -> 1 mm" in text
    assert ("reliability: ok", "darkgreen") in after
    _, after = viz._panel_texts("", 10, 10, (1.0, 2.0), None, "data units", "suspect: " + "x" * 300, 60)
    assert all(len(line) <= 60 for line, _ in after) and after[-1][1] == "firebrick"
    assert viz.unit_label("millimetres") == "mm" and viz.unit_label("metres") == "m"
    assert viz.unit_label(None) == viz.unit_label("") == "data units"


# ------------------------------------------------------------------------------- pixels


def test_a_perfect_registration_leaves_no_far_colours_a_shifted_one_does(rng, tmp_path, can_render):
    target = blob(rng)
    source = target + [3.0, 1.0, 0.0]
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    render(source, target, target.copy(), screenshot=good, window_size=SMALL, units="mm")
    render(source, target, source.copy(), screenshot=bad, window_size=SMALL, units="mm")
    good_rgb, bad_rgb = pixels(good), pixels(bad)
    area = panel_middle(good_rgb, 1).shape[0] * panel_middle(good_rgb, 1).shape[1]
    assert far_pixels(panel_middle(good_rgb, 0)) > 0.01 * area  # the before panels: far
    assert far_pixels(panel_middle(bad_rgb, 0)) > 0.01 * area
    assert far_pixels(panel_middle(good_rgb, 1)) < 0.0005 * area, "far colours after a perfect registration"
    assert far_pixels(panel_middle(bad_rgb, 1)) > 0.01 * area, "no far colours after a bad registration"


def test_render_computes_the_chamfer_itself(rng, tmp_path, monkeypatch, can_render):
    """Callers that pass only the clouds (register run, register batch) get the figures too."""
    seen = {}
    panel_texts = viz._panel_texts

    def spy(*args, **kwargs):
        seen["chamfer"] = args[3]
        return panel_texts(*args, **kwargs)

    monkeypatch.setattr(viz, "_panel_texts", spy)
    from register.metrics import chamfer

    target = blob(rng)
    source = target + [1.0, 0.0, 0.0]
    render(source, target, target, screenshot=tmp_path / "qa.png", window_size=SMALL)
    assert seen["chamfer"] == pytest.approx((chamfer(source, target), 0.0))


# --------------------------------------------------------------------------- register show


def segment_distances(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P, S)`` distance of each point to each segment ``a_s -> b_s``."""
    ab = b - a
    t = np.einsum("psd,sd->ps", points[:, None, :] - a[None], ab) / np.einsum("sd,sd->s", ab, ab)
    closest = a[None] + np.clip(t, 0, 1)[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - closest, axis=2)


def test_landmark_tubes_are_scaled_to_the_data(rng, can_render):
    import pyvista as pv

    from register.app.viz_show import TUBE_FRACTION, ResultView, add_result_layers

    target = blob(rng) * 10.0  # a few hundred units across: millimetre errors
    lm = target[:20]
    moved = lm + rng.normal(0, 1.0, lm.shape)
    view = ResultView(target + 1.0, target, target, (moved, lm), units="mm")
    plotter = pv.Plotter(off_screen=True, window_size=list(SMALL))
    try:
        actors = add_result_layers(plotter, view)
        radius = TUBE_FRACTION * np.linalg.norm(np.ptp(target, axis=0))
        tubes = actors["landmarks"].actors[1].mapper.dataset
        # Every tube point lies one radius from its segment's axis (the caps: at most).
        assert tubes.n_points > 0
        axis = segment_distances(np.asarray(tubes.points), moved, lm).min(axis=1)
        assert axis.max() <= radius * 1.01 and np.median(axis) >= radius * 0.9
        errors = np.asarray(tubes["landmark error"])
        assert errors.min() >= 0 and errors.max() == pytest.approx(np.linalg.norm(moved - lm, axis=1).max())
        # The legend's colours are the drawn ones.
        from register.app.viz_show import _LAYER_COLOURS

        for name in ("target", "source", "warped"):
            prop = actors[name].prop
            assert not actors[name].mapper.scalar_visibility
            expected = pv.Color(_LAYER_COLOURS[name]).float_rgb
            np.testing.assert_allclose(prop.color.float_rgb, expected, atol=1e-6)
    finally:
        plotter.close()


@pytest.fixture(scope="module")
def result_folder(tmp_path_factory):
    """One tiny result folder of ``register run`` (cheap settings)."""
    root = tmp_path_factory.mktemp("viz_run")
    src, tgt = write_pair(root)
    outdir = root / "out"
    result = invoke(["run", src, tgt, "-o", outdir, "-q", *CHEAP])
    assert result.exit_code == 0, stderr_of(result)
    return outdir


def test_show_without_a_display_says_to_use_screenshot(result_folder, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    err = assert_input_error(invoke(["show", result_folder]), NO_DISPLAY, "no display")
    assert len(err.strip().splitlines()) == 1, err


def test_show_with_a_display_that_does_not_open(result_folder, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":97531")
    monkeypatch.setattr(sys, "platform", "linux")
    assert_input_error(invoke(["show", result_folder]), NO_DISPLAY, "DISPLAY=:97531")


def test_show_without_a_display_in_a_subprocess(result_folder):
    env = {k: v for k, v in subprocess_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-m", "register.app.cli", "show", str(result_folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    if sys.platform.startswith("linux"):
        assert proc.returncode == 2, proc.stderr
        assert NO_DISPLAY in proc.stderr and "WARN" not in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_display_problem(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert display_problem() is None
    monkeypatch.delenv("WAYLAND_DISPLAY")
    assert "DISPLAY" in display_problem()
    monkeypatch.setattr(sys, "platform", "darwin")
    assert display_problem() is None
