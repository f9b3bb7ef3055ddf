"""Known-answer tests of the whole pipeline (seeded)."""

import numpy as np
import pytest

from register.config import from_dict
from register.core.fitting import rotation_angle_deg
from register.errors import InputError
from register.pipeline import register
from register.synth.deform import random_affine, random_rotation, smooth_random_field
from register.synth.vessels import build_vessel_tree


def _tree_points(n: int, seed: int) -> np.ndarray:
    return build_vessel_tree(seed).sample(n, np.random.default_rng(seed + 1))[0]


def _cfg(**tables):
    return from_dict(tables)


def test_self_registration_is_identity(rng):
    """Up to the entropic bias of the finest blur (1 mm in the lung preset), on a ~360 mm tree."""
    x = _tree_points(800, 0)
    result = register(x, x[rng.permutation(len(x))], "lung")
    moved = np.linalg.norm(result.displacement, axis=1)
    assert moved.mean() < 0.1 and moved.max() < 0.5  # mm
    np.testing.assert_allclose(result.transform.steps[0].matrix, np.eye(3), atol=1e-3)


def test_known_affine_map_is_recovered():
    x = _tree_points(1000, 1)
    matrix, translation = random_affine(3, rotation_deg=10.0, scale=0.1, shear=0.05, translation=10.0)
    y = (x @ matrix.T + translation)[np.random.default_rng(4).permutation(len(x))]
    cfg = _cfg(
        pipeline={"stages": ["affine"]}, affine={"blurs": [0.05, 0.02, 0.005, 0.001], "iterations": 20}
    )
    fitted = register(x, y, cfg).transform.steps[0]
    assert np.abs(fitted.matrix - matrix).max() / np.abs(matrix).max() < 1e-3
    assert np.abs(fitted.translation - translation).max() / np.abs(translation).max() < 1e-3


def test_stage_max_iter_caps_only_that_stage_s_matchings(monkeypatch):
    """``affine.max_iter`` / ``spline.max_iter`` replace ``pipeline.max_iter`` in that stage's
    matchings only."""
    from register.reliability import MATCH_MAX_ITER
    from register.stages.common import MatchSettings

    seen: dict[str, set] = {"affine": set(), "spline": set()}
    original = MatchSettings.match
    stage = {"name": ""}

    def spy(self, *args, **kwargs):
        # the reliability report's own matching (after the stages) is not a stage's
        seen.setdefault(stage["name"], set()).add(self.max_iter)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MatchSettings, "match", spy)
    x = _tree_points(400, 5)
    cfg = _cfg(pipeline={"max_iter": 7}, affine={"max_iter": 3})
    register(x, x + 1.0, cfg, on_stage=lambda name, state: stage.update(name=name))
    assert seen.pop("reliability") == {MATCH_MAX_ITER} and seen == {"affine": {3}, "spline": {7}}
    seen = {"affine": set(), "spline": set()}
    cfg = _cfg(pipeline={"max_iter": 7}, spline={"max_iter": 5})
    register(x, x + 1.0, cfg, on_stage=lambda name, state: stage.update(name=name))
    assert seen.pop("reliability") == {MATCH_MAX_ITER} and seen == {"affine": {7}, "spline": {5}}


def test_spline_max_iter_per_level_caps_each_level_s_matchings(monkeypatch):
    """One ``spline.max_iter`` per level: each level's matchings get its own cap (0: the run's),
    the final confidence matching the last level's; the caps are recorded per level."""
    from register.stages.common import MatchSettings

    caps: list[int] = []
    original = MatchSettings.match
    stage = {"name": ""}

    def spy(self, *args, **kwargs):
        if stage["name"] == "spline":
            caps.append(self.max_iter)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MatchSettings, "match", spy)
    x = _tree_points(400, 5)
    cfg = _cfg(
        pipeline={"max_iter": 7},
        spline={
            "sigmas": [40.0, 20.0, 10.0],
            "blurs": [8.0, 4.0, 2.0],
            "iterations": 2,
            "max_iter": [0, 5, 2],
        },
    )
    result = register(x, x + 1.0, cfg, on_stage=lambda name, state: stage.update(name=name))
    assert caps == [7, 7, 5, 5, 2, 2, 2]
    (levels,) = [s["levels"] for s in result.stages if s["name"] == "spline"]
    assert [level["max_iter"] for level in levels] == [7, 5, 2]


def test_affine_move_tol_ends_a_level_once_a_round_moves_the_points_less(monkeypatch):
    """Rounds of a level stop at the first that moves no point by more than ``move_tol * blur``:
    a loose tolerance runs fewer rounds than a strict one."""
    import register.stages.affine as affine

    fits: list[np.ndarray] = []
    original = affine.fit_affine

    def spy(x, targets, weights, mode):
        fitted = original(x, targets, weights, mode)
        fits.append(fitted.apply(x))
        return fitted

    monkeypatch.setattr(affine, "fit_affine", spy)
    x = _tree_points(1000, 1)
    matrix, translation = random_affine(3, rotation_deg=10.0, scale=0.1, shear=0.05, translation=10.0)
    y = x @ matrix.T + translation
    rounds = {}
    for tol in (0.001, 0.2):
        fits.clear()
        cfg = _cfg(
            pipeline={"stages": ["affine"]}, affine={"blurs": [0.05, 0.02], "iterations": 20, "move_tol": tol}
        )
        register(x, y, cfg)
        rounds[tol] = len(fits)
    assert rounds[0.2] < rounds[0.001] <= 2 * 20


def test_smooth_deformation_is_recovered():
    """5k points on a vessel tree; target = smoothly deformed copy, rows shuffled."""
    x = _tree_points(5000, 2)
    truth = smooth_random_field(x, 7, n_controls=20, sigma=80.0, magnitude=6.0)
    y = (x + truth)[np.random.default_rng(5).permutation(len(x))]
    result = register(x, y, "lung")
    error = np.linalg.norm(result.displacement - truth, axis=1).mean()
    magnitude = np.linalg.norm(truth, axis=1).mean()
    assert error < 0.10 * magnitude, f"mean error {error:.3f} mm vs mean displacement {magnitude:.3f} mm"


def test_clustered_matchings_recover_the_deformation_as_the_point_matchings_do(monkeypatch):
    """``cluster``: both stages match voxel clusters of side ``cluster * blur``; on a smooth
    deformation the result is as accurate as matching the points, on smaller problems."""
    import register.pipeline.once as once
    from register.config import load_config
    from register.stages.common import MatchSettings

    sizes, in_report = [], []
    original, report = MatchSettings.match, once.reliability

    def spy(self, x, y, *args, **kwargs):
        if not in_report:  # the stages' matchings, not the reliability report's
            sizes.append(len(x))
        return original(self, x, y, *args, **kwargs)

    def reliability(*args, **kwargs):
        in_report.append(True)
        try:
            return report(*args, **kwargs)
        finally:
            in_report.clear()

    monkeypatch.setattr(MatchSettings, "match", spy)
    monkeypatch.setattr(once, "reliability", reliability)
    x = _tree_points(5000, 2)
    truth = smooth_random_field(x, 7, n_controls=20, sigma=80.0, magnitude=6.0)
    y = (x + truth)[np.random.default_rng(5).permutation(len(x))]
    errors = {}
    for ratio in (0.0, 1.0):
        sizes.clear()
        cfg = from_dict(
            {"pipeline": {"fallback": ""}, "affine": {"cluster": ratio}, "spline": {"cluster": ratio}},
            base=load_config("lung"),
        )
        result = register(x, y, cfg)
        errors[ratio] = np.linalg.norm(result.displacement - truth, axis=1).mean()
        largest = max(sizes[:-1])  # the last matching (final confidences) runs on the points
        assert largest == len(x) if ratio == 0 else largest < len(x)
    assert errors[1.0] < 1.1 * errors[0.0] + 0.02, errors


def test_point_order_does_not_change_the_result(rng):
    x = _tree_points(800, 3)
    y = x + smooth_random_field(x, 8, magnitude=4.0)
    y = y[rng.permutation(len(y))]
    px, py = rng.permutation(len(x)), rng.permutation(len(y))
    r1 = register(x, y, "lung")
    r2 = register(x[px], y[py], "lung")
    np.testing.assert_allclose(r1.warped[px], r2.warped, atol=1e-3)  # mm


def test_dimension_mismatch_is_an_error(rng):
    with pytest.raises(InputError, match="same dimension"):
        register(rng.random((50, 3)), rng.random((50, 2)))


def test_too_few_points_is_an_error(rng):
    with pytest.raises(InputError, match="at least"):
        register(rng.random((3, 3)), rng.random((50, 3)))


def test_rigid_bunny_with_outliers_and_large_rotation(shared_data):
    """Stanford bunny, source and target sampled independently, 30 % outliers, rotation <= 90 deg."""
    from register.io import read_points

    bunny = read_points(shared_data / "shapes/stanford/bunny_30k.ply").points
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(bunny))
    src, tgt = bunny[idx[:1500]], bunny[idx[1500:3000]]
    diameter = np.linalg.norm(bunny.max(0) - bunny.min(0))
    rotation = random_rotation(rng, 90.0)
    assert rotation_angle_deg(rotation) > 75  # a large rotation, within the stated range
    tgt = tgt @ rotation.T + rng.normal(size=3) * 0.2 * diameter
    lo, hi = tgt.min(0), tgt.max(0)
    tgt = np.vstack([tgt, lo + rng.random((int(0.3 * len(tgt)), 3)) * (hi - lo)])
    cfg = _cfg(
        pipeline={"stages": ["affine"], "mass": "point"},
        affine={
            "mode": "rigid",
            "multistart": True,
            "blurs": [0.1, 0.05, 0.02, 0.01, 0.005],
            "reach": [0.3, 0.1, 0.05, 0.03, 0.02],
            "iterations": 10,
        },
    )
    fitted = register(src, tgt, cfg).transform.steps[0].matrix
    assert rotation_angle_deg(fitted @ rotation.T) < 1.0


def test_flow_axes_candidates_keep_the_best_fitting_run_and_record_every_score():
    """With several ``flow.axes`` frames the flow and spline stages run once per frame from the
    same state; the kept result is exactly the single-frame run of the frame kept by the rule."""
    from register.config import load_config, with_overrides
    from register.pipeline import keep_frame

    assert keep_frame([1.0, 0.995]) == 0 and keep_frame([1.0, 0.98]) == 1  # 1 % margin
    assert keep_frame([0.5, 0.6, 0.3]) == 2
    from register.synth.pairs import HELD_OUT_STREAM, make_training_pair, pair_seed

    pair = make_training_pair("sceneflow", pair_seed(0, HELD_OUT_STREAM, 3200), 2048)
    base = with_overrides(
        load_config("sceneflow"), ["spline.sigmas=[2.0]", "spline.blurs=[0.4]", "spline.reach=[2.0]"]
    )
    both = with_overrides(base, ['flow.axes=["z,-x,-y", "x,y,z"]'])
    result = register(pair.source, pair.target, both, device="cpu")
    (flow,) = [s for s in result.stages if s["name"] == "flow"]
    scores = {c["axes"]: c["score"] for c in flow["frame_candidates"]}
    assert set(scores) == {"z,-x,-y", "x,y,z"} and scores["z,-x,-y"] != scores["x,y,z"]
    kept = ["z,-x,-y", "x,y,z"][keep_frame([scores["z,-x,-y"], scores["x,y,z"]])]
    assert flow["axes"] == kept
    (spline,) = [s for s in result.stages if s["name"] == "spline"]
    assert spline["cost"] == scores[kept]
    alone = register(pair.source, pair.target, with_overrides(base, [f'flow.axes="{kept}"']), device="cpu")
    np.testing.assert_array_equal(result.warped, alone.warped)
    assert "frame_candidates" not in [s for s in alone.stages if s["name"] == "flow"][0]


def test_the_fallback_runs_the_stages_asked_for():
    """``--stages affine`` with the lung preset: a fallback run (the bundled sample triggers it)
    has no spline stage either."""
    from pathlib import Path

    from register.app.run import build_config
    from register.io import read_points

    root = Path(__file__).resolve().parents[1] / "data_samples"
    src, tgt = read_points(root / "lung_source.ply"), read_points(root / "lung_target.ply")
    result = register(src, tgt, build_config("lung", stages="affine"), seed=0)
    assert result.metrics["fallback"]["triggered_by"]  # the sample triggers the fallback ...
    assert [s["name"] for s in result.stages] == ["affine"]  # ... which keeps to the affine stage


def test_on_stage_reports_each_stage_level_as_it_passes():
    """``on_stage`` sees start, ``level 0/n`` ... ``level n/n`` and done for the affine and
    spline stages (the progress display's counter and time left)."""
    events = []
    x = _tree_points(300, 3)
    cfg = _cfg(
        pipeline={"length_unit": "relative"},
        affine={"blurs": [0.1, 0.05]},
        spline={"sigmas": [0.2, 0.1, 0.05], "blurs": [0.05, 0.02, 0.01]},
    )
    register(x, x + 1.0, cfg, on_stage=lambda name, state: events.append((name, state)))
    for stage, n in (("affine", 2), ("spline", 3)):
        mine = [state for name, state in events if name == stage]
        assert mine == ["start", *(f"level {k}/{n}" for k in range(n + 1)), "done"], mine
