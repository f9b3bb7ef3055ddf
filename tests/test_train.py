"""Tests of training (``register.app.train``), the flow stage and ``register train``.

The networks are tiny (three levels of 8-32 channels, 512-point clouds) so that every test
runs in seconds on two cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from register.app.cli import app
from register.app.train import train
from register.app.train_data import PairSource, multiscale_loss
from register.app.train_settings import PRESETS, TrainSettings, learning_rate, state_path
from register.config import load_config, with_overrides
from register.core.transforms import Composite, KernelField, Transform
from register.errors import InputError
from register.metrics import folding_fraction
from register.models.checkpoint import FlowModel, read_checkpoint
from register.models.pointpwc import FlowNet, FlowNetConfig, init_parameters
from register.models.registry import load_model
from register.pipeline import register
from register.stages.flow import flow_predict
from register.synth import make_lung_pair, make_training_pair

TINY = FlowNetConfig(channels=(8, 16, 32), estimator=(8, 16, 32), k=8, k_cost=8, in_features=1)


def tiny_settings(**changes) -> TrainSettings:
    base = {
        "preset": "lung",
        "steps": 4,
        "batch_size": 2,
        "points": 512,
        "seed": 3,
        "net": TINY,
        "checkpoint_every": 2,
        "validation_pairs": 1,
        "shape_pool": 2,
    }
    return TrainSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple:
    """A tiny lung model trained for 30 steps; returns (path, TrainResult)."""
    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    result = train(tiny_settings(steps=30, checkpoint_every=15, lr=3e-3), out)
    return out, result


def test_loss_decreases_on_a_tiny_fixed_set():
    s = tiny_settings()
    net = FlowNet(TINY)
    init_parameters(net, 0)
    batch = PairSource(s).batch(0, "cpu")
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, levels = multiscale_loss(net, batch, s.weights())
        assert len(levels) == TINY.levels
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses


def test_learning_rate_schedule():
    s = tiny_settings(steps=10, lr=1e-3, lr_final=1e-4)
    assert learning_rate(s, 0) == pytest.approx(1e-3)
    assert learning_rate(s, 5) == pytest.approx(5.5e-4)
    assert learning_rate(s, 10) == pytest.approx(1e-4)


def test_training_pairs_are_deterministic_and_feature_drop_hides_radius():
    s = tiny_settings(feature_drop=1.0)
    a, b = PairSource(s).batch(1, "cpu"), PairSource(s).batch(1, "cpu")
    assert torch.equal(a.source, b.source) and torch.equal(a.flow, b.flow)
    assert not torch.equal(a.source, PairSource(s).batch(2, "cpu").source)
    assert float(a.features[0].abs().max()) == 0.0
    kept = PairSource(tiny_settings(feature_drop=0.0)).batch(1, "cpu")
    assert float(kept.features[0].min()) > 0.0
    # model units: each source has unit RMS radius about its centroid
    rms = kept.source.sub(kept.source.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).sqrt()
    torch.testing.assert_close(rms, torch.ones(2), atol=1e-5, rtol=0)


def test_short_training_learns(trained):
    out, result = trained
    first, last = result.validation[0], result.validation[-1]
    assert result.steps == 30 and len(result.validation) == 2
    assert last["epe"] < last["epe_zero"], result.validation  # better than predicting no motion
    meta = read_checkpoint(out)["metadata"]
    assert meta["steps"] == 30 and meta["preset"] == "lung" and meta["seed"] == 3
    assert meta["validation"] == last and first["step"] == 15
    assert "optimizer" not in str(read_checkpoint(out).keys())  # the final model is weights only
    card = out.with_suffix(".md").read_text()
    assert "| seed | 3 |" in card and "| steps | 30 (batch 2, 512 points per cloud) |" in card
    assert f"{last['epe']:.4g} against {last['epe_zero']:.4g}" in card and "pair_seed(3, 0, i)" in card


class Stop(Exception):
    pass


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Stop])
def test_resumed_training_equals_uninterrupted(tmp_path, interrupt):
    """Ctrl-C saves the state of the last step; a crash resumes from the last periodic checkpoint."""
    s = tiny_settings()
    whole = train(s, tmp_path / "whole.pt")

    def stop_at_3(progress):
        if progress.step == 3:
            raise interrupt

    with pytest.raises(interrupt):
        train(s, tmp_path / "cut.pt", on_progress=stop_at_3)
    assert not (tmp_path / "cut.pt").exists()
    state = read_checkpoint(state_path(tmp_path / "cut.pt"))
    assert state["training"]["step"] == (3 if interrupt is KeyboardInterrupt else 2)
    resumed = train(s, tmp_path / "cut.pt", resume=True)
    assert resumed.steps == whole.steps == 4
    a = read_checkpoint(tmp_path / "whole.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "cut.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.validation == whole.validation


def test_steps_changed_on_resume_are_in_the_card(tmp_path):
    """Growing --steps on --resume changes the learning-rate schedule: the metadata and the card
    record the schedules, and an unchanged resume records one."""
    out = tmp_path / "m.pt"

    def stop_at_2(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_settings(steps=4), out, on_progress=stop_at_2)
    train(tiny_settings(steps=6), out, resume=True)
    assert read_checkpoint(out)["metadata"]["schedule"] == [[0, 4], [2, 6]]
    card = out.with_suffix(".md").read_text()
    assert "--steps 4 from step 0; then --steps 6 from step 2" in card and "stop it at step 2" in card
    same = tmp_path / "same.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_settings(steps=4), same, on_progress=stop_at_2)
    train(tiny_settings(steps=4), same, resume=True)
    assert read_checkpoint(same)["metadata"]["schedule"] == [[0, 4]]
    assert "learning-rate schedule" not in same.with_suffix(".md").read_text()


def test_training_refuses_to_clobber_and_checks_resume(tmp_path):
    s = tiny_settings(steps=2)
    out = tmp_path / "m.pt"
    train(s, out)
    with pytest.raises(InputError, match="--out .*exists.*--overwrite"):
        train(s, out)
    out.unlink()
    with pytest.raises(InputError, match=r"m\.md exists"):  # the card too
        train(s, out)
    out.with_suffix(".md").unlink()
    with pytest.raises(InputError, match="--resume"):  # a state exists: resume or overwrite
        train(s, out)
    with pytest.raises(InputError, match="batch_size"):
        train(tiny_settings(steps=2, batch_size=1), out, resume=True)
    with pytest.raises(InputError, match="no training state"):
        train(s, tmp_path / "other.pt", resume=True)
    with pytest.raises(InputError, match="does not exist"):
        train(s, tmp_path / "missing" / "m.pt")
    train(s, out, overwrite=True)
    with pytest.raises(InputError, match="--preset"):
        tiny_settings(preset="lungs")
    with pytest.raises(InputError, match="--points"):
        tiny_settings(points=64)


# ------------------------------------------------------------------ the flow stage


class Oracle(FlowModel):
    """A model that predicts the ground truth: tests the projection (stage 2.b) alone."""

    def __init__(self, truth, points: int = 1000) -> None:
        net = FlowNet(TINY)
        super().__init__(net, PRESETS["lung"].normalisation, "", points, {}, "oracle")
        self.truth = truth

    def predict(self, source, target, source_feature=None, target_feature=None):
        return self.truth(source)


def grid_in(points: np.ndarray, n: int = 12) -> np.ndarray:
    lo, hi = points.min(0), points.max(0)
    axes = [np.linspace(lo[k], hi[k], n) for k in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def test_projected_field_is_smooth_and_evaluable_anywhere():
    pair = make_lung_pair(seed=2, n_points=3000)
    x, truth = pair["source"], pair["displacement"]  # breathing (10 mm) + smooth field
    cfg = load_config("lung").flow
    res = flow_predict(x, pair["target"], np.ones(len(x)), cfg, Oracle(truth), rng=np.random.default_rng(0))
    fld = res.field
    assert isinstance(fld, KernelField) and len(res.indices) == 1000
    assert res.residual < 0.15 * np.linalg.norm(res.flow, axis=1).mean()
    grid = grid_in(x)
    assert folding_fraction(fld, grid) == 0.0
    # anywhere: landmarks (bifurcations, not among the fed points) move as the ground truth says
    lm = pair["source_landmarks"]
    err = np.linalg.norm(fld.apply(lm) - (lm + truth(lm)), axis=1)
    assert err.mean() < 0.15 * np.linalg.norm(truth(lm), axis=1).mean()


def test_projection_downweights_flows_that_land_nowhere():
    pair = make_lung_pair(seed=2, n_points=3000)
    x, truth = pair["source"], pair["displacement"]
    cut = np.percentile(x[:, 0], 10)
    bad = x[:, 0] < cut  # 10 % of the points: flow sent 1 m away, far from every target point

    def wrong(points):
        d = truth(points)
        d[points[:, 0] < cut] += [0.0, 0.0, 1000.0]
        return d

    cfg = load_config("lung").flow
    res = flow_predict(x, pair["target"], np.ones(len(x)), cfg, Oracle(wrong), rng=np.random.default_rng(0))
    fed_bad = bad[res.indices]
    assert res.weights[fed_bad].max() < 1e-6 < res.weights[~fed_bad].mean()


def test_flow_stage_with_a_trained_checkpoint_runs_end_to_end(trained, tmp_path):
    out, _ = trained
    pair = make_lung_pair(seed=5, n_points=1500)
    cfg = with_overrides(
        load_config("lung"),
        [
            'pipeline.stages=["affine", "flow", "spline"]',
            'pipeline.fallback=""',  # the flow stage's run itself, whatever its reliability
            f'flow.model="{out}"',
            "affine.blurs=[30.0, 15.0]",
            "spline.sigmas=[20.0]",
            "spline.blurs=[4.0]",
            "spline.reach=[inf]",
            "spline.iterations=1",
        ],
    )
    result = register(pair["source"], pair["target"], cfg, seed=0)
    assert [s["name"] for s in result.stages] == ["affine", "flow", "spline"]
    flow = result.stages[1]
    assert flow["model"] == str(out) and flow["points"] == 512 and flow["network_seconds"] < 5.0
    kinds = [s.kind for s in result.transform.steps]
    assert kinds[:2] == ["affine", "kernel_field"] and len(kinds) == 3
    grid = grid_in(pair["source"], 8)
    assert folding_fraction(result.transform.steps[1], grid) == 0.0
    path = tmp_path / "t.npz"
    result.transform.save(path)
    np.testing.assert_allclose(Transform.load(path).apply(grid), result.transform.apply(grid))
    again = register(pair["source"], pair["target"], cfg, seed=0)
    np.testing.assert_array_equal(again.warped, result.warped)
    assert isinstance(result.transform, Composite)


def test_missing_model_fails_before_work_naming_the_option():
    pair = make_lung_pair(seed=5, n_points=600)
    cfg = with_overrides(load_config("lung"), ['pipeline.stages=["affine", "flow"]', 'flow.model="nosuch"'])
    with pytest.raises(
        InputError, match="pipeline.stages has 'flow': flow.model = 'nosuch': no such flow model"
    ) as info:
        register(pair["source"], pair["target"], cfg)
    assert "Shipped models" in str(info.value)


def test_flow_stage_refuses_2d_and_tiny_clouds(trained):
    out, _ = trained
    cfg = with_overrides(load_config("default"), ['pipeline.stages=["flow"]', f'flow.model="{out}"'])
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="3-D"):
        register(rng.random((600, 2)), rng.random((600, 2)), cfg)
    with pytest.raises(InputError, match="at least"):
        register(rng.random((40, 3)), rng.random((600, 3)), cfg)


def test_model_feature_is_read_from_the_clouds(trained):
    out, _ = trained
    model = load_model(str(out))
    assert model.feature == "radius" and model.points == 512
    pair = make_training_pair("lung", 11, 512)
    with_radius = model.predict(pair.source, pair.target, pair.source_feature, pair.target_feature)
    without = model.predict(pair.source, pair.target)
    assert not np.allclose(with_radius, without)


# ------------------------------------------------------------------ CLI


def test_cli_train_writes_a_model_and_refuses_to_overwrite(tmp_path, monkeypatch):
    import register.app.train as train_module

    # The default network needs 1024 points; keep the run to seconds with the tiny one.
    monkeypatch.setattr(train_module.TrainSettings, "network", lambda self: TINY)
    out = tmp_path / "cli.pt"
    args = ["train", "--preset", "lung", "--steps", "2", "--out", str(out), "--points", "512"]
    args += ["--batch-size", "1", "--checkpoint-every", "1", "--validation-pairs", "1", "--threads", "1"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert out.is_file() and state_path(out).is_file()
    meta = read_checkpoint(out)["metadata"]
    assert meta["command"].startswith("register train --preset lung --steps 2 --out cli.pt --seed 0")
    assert "--threads 1" in meta["command"]
    assert "`register train --preset lung --steps 2 --out cli.pt" in out.with_suffix(".md").read_text()
    assert "validation EPE" in result.stderr
    again = CliRunner().invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert again.exit_code == 2 and "--overwrite" in again.stderr and "train" not in again.stdout
    bad = CliRunner().invoke(app, ["train", "--preset", "heart", "--steps", "2", "--out", str(out)])
    assert bad.exit_code == 2 and "--preset heart" in bad.stderr


# ------------------------------------------------------------ OT fine-tuning on real pairs


def _write_real_pairs(root, shift=(6.0, -4.0, 3.0)):
    """Two real pairs (vessel-tree clouds, target = source moved by ``shift`` mm, resampled)."""
    from register.core.pointcloud import PointCloud
    from register.io import write_points

    for k in range(2):
        pair = make_lung_pair(seed=40 + k, n_points=700)
        folder = root / f"case{k}"
        folder.mkdir(parents=True)
        x = pair["source"]
        y = x[np.random.default_rng(k).permutation(len(x))] + np.array(shift)
        write_points(folder / "source.ply", PointCloud(x))
        write_points(folder / "target.ply", PointCloud(y))
    return root


def _ot_on_real(model_path, real_root) -> float:
    """Mean OT loss (3) of a saved model over the real pairs (model units)."""
    from register.app.finetune import RealPairs, ot_loss, real_pair_files

    model = load_model(str(model_path))
    pairs = RealPairs(real_pair_files(real_root), "radius")
    with torch.no_grad():
        return float(
            np.mean(
                [
                    float(
                        ot_loss(
                            model.net, *pairs.draw(0, i, 512, PRESETS["lung"], "cpu"), 0.02, math.inf
                        ).detach()
                    )
                    for i in range(4)
                ]
            )
        )


def test_ot_fine_tuning_lowers_the_ot_loss_on_real_pairs(tmp_path):
    """Training with the OT loss on real pairs (no ground truth) leaves a lower OT loss on them
    than the same run on synthetic pairs alone; the run is resumable like any other."""
    real = _write_real_pairs(tmp_path / "real")
    common = {"steps": 25, "checkpoint_every": 25, "lr": 3e-3}
    train(tiny_settings(**common), tmp_path / "plain.pt")
    train(tiny_settings(**common, real=str(real), ot_weight=100.0), tmp_path / "ot.pt")
    plain, tuned = _ot_on_real(tmp_path / "plain.pt", real), _ot_on_real(tmp_path / "ot.pt", real)
    assert tuned < 0.8 * plain, (tuned, plain)  # measured: 0.0037 against 0.0058
    assert "real pairs" in read_checkpoint(tmp_path / "ot.pt")["metadata"]["data"]


def test_real_pairs_from_a_manifest_or_a_folder_and_clear_errors(tmp_path):
    from register.app.finetune import real_pair_files

    real = _write_real_pairs(tmp_path / "real")
    by_folder = real_pair_files(real)
    assert [p.id for p in by_folder] == ["case0", "case1"]
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("id,source,target\n" + "".join(f"{p.id},{p.source},{p.target}\n" for p in by_folder))
    assert real_pair_files(manifest) == by_folder
    with pytest.raises(InputError, match="--real .*no such file"):
        real_pair_files(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no pair folders"):
        real_pair_files(tmp_path / "empty")
    (real / "case0" / "source.xyz").write_text("0 0 0\n1 1 1\n")
    with pytest.raises(InputError, match="case0: 2 'source"):
        real_pair_files(real)


def test_init_starts_from_a_model_and_old_states_still_resume(tmp_path, trained):
    """--init copies a model's weights (same architecture, else a clear error); a training state
    saved before the fine-tuning settings existed resumes (missing keys = their defaults)."""
    path, _ = trained
    s = tiny_settings(steps=1, init=str(path), lr=1e-12, lr_final=1e-12)
    train(s, tmp_path / "ft.pt")
    a, b = read_checkpoint(path)["state_dict"], read_checkpoint(tmp_path / "ft.pt")["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    other = FlowNetConfig(channels=(8, 16, 24), estimator=(8, 16, 32), k=8, k_cost=8, in_features=1)
    with pytest.raises(InputError, match="--init .*architecture"):
        train(tiny_settings(steps=1, init=str(path), net=other), tmp_path / "bad.pt")
    # A state written before the keys real / ot_* / init existed.
    old = tiny_settings(steps=2)
    train(old, tmp_path / "old.pt")
    state = read_checkpoint(state_path(tmp_path / "old.pt"))
    for key in ("real", "ot_weight", "ot_blur", "ot_reach", "init"):
        del state["training"]["settings"][key]
    torch.save(state, state_path(tmp_path / "old.pt"))
    (tmp_path / "old.pt").unlink()
    (tmp_path / "old.md").unlink()
    assert train(tiny_settings(steps=3), tmp_path / "old.pt", resume=True).steps == 3


def test_cli_fine_tunes_a_model_on_real_pairs(tmp_path, trained):
    """`register train --init MODEL --real DIR`: the network of MODEL, the OT loss on the pairs,
    both recorded in the new model's command and data description."""
    path, _ = trained
    real = _write_real_pairs(tmp_path / "real")
    out = tmp_path / "ft.pt"
    args = [
        "train",
        "--preset",
        "lung",
        "--steps",
        "2",
        "--out",
        str(out),
        "--seed",
        "3",
        "--batch-size",
        "1",
    ]
    args += ["--points", "512", "--init", str(path), "--real", str(real), "--validation-pairs", "1", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = read_checkpoint(out)["metadata"]
    assert f"--init {path}" in meta["command"] and f"--real {real}" in meta["command"]
    assert "2 real pairs" in meta["data"] and f"started from {path}" in meta["data"]
    bad_args = [str(tmp_path / "x.pt") if a == str(out) else a for a in args]
    bad_args[bad_args.index(str(real))] = str(tmp_path / "no")
    bad = CliRunner().invoke(app, bad_args)
    assert bad.exit_code == 2 and "--real" in bad.stderr
    assert not (tmp_path / "x.pt").exists() and not state_path(tmp_path / "x.pt").exists()


def test_keypoint_fraction_mixes_the_lung_pool_and_is_checked():
    from register.synth.shapes import KeypointShape, VesselShape

    with pytest.raises(InputError, match="--keypoint-fraction"):
        tiny_settings(keypoint_fraction=1.5)
    with pytest.raises(InputError, match="--keypoint-fraction"):
        TrainSettings(preset="shapes", keypoint_fraction=0.5)
    source = PairSource(tiny_settings(keypoint_fraction=0.5))
    kinds = [type(source.shape(slot)) for slot in range(8)]
    assert KeypointShape in kinds and VesselShape in kinds
    assert all(isinstance(PairSource(tiny_settings()).shape(slot), VesselShape) for slot in range(4))
