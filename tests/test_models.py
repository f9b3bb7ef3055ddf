"""Tests of the flow network (``register.models``): building blocks, network, checkpoints, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from register.errors import InputError
from register.models.checkpoint import (
    FORMAT_VERSION,
    FlowModel,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from register.models.knn import gather, knn
from register.models.normalise import Normalisation
from register.models.pointpwc import FlowNet, FlowNetConfig, count_parameters, init_parameters
from register.models.registry import available_models, load_model
from register.models.sampling import grid_subsample

TINY = FlowNetConfig(channels=(8, 16, 32), estimator=(8, 16, 32), k=8, k_cost=8, in_features=1)


def clouds(n: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, n, 3, generator=g)
    return x, torch.rand(2, m, 3, generator=g) + 0.05


def tiny_net(seed: int = 0, cfg: FlowNetConfig = TINY, trained: bool = True) -> FlowNet:
    """A tiny network; ``trained``: its flow heads and soft-match gains get non-zero values
    (they start at 0)."""
    net = FlowNet(cfg)
    init_parameters(net, seed)
    if trained:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for head in net.head:
                head[-1].weight.copy_(0.1 * torch.randn(head[-1].weight.shape, generator=g))
            net.gain.fill_(0.01)
    return net.eval()


# ------------------------------------------------------------------ building blocks


def test_knn_tree_and_torch_agree_nearest_first():
    x, y = clouds(300, 500)
    a, b = knn(x, y, 7, method="tree"), knn(x, y, 7, method="torch")
    assert a.shape == b.shape == (2, 300, 7) and a.dtype == torch.int64
    da = (gather(y, a) - x[:, :, None]).norm(dim=-1)
    db = (gather(y, b) - x[:, :, None]).norm(dim=-1)
    torch.testing.assert_close(da, db)
    assert (da[..., 1:] >= da[..., :-1]).all()  # sorted, nearest first
    # brute force on one point
    d = (y[1] - x[1, 17]).norm(dim=-1)
    torch.testing.assert_close(da[1, 17], d.sort().values[:7])
    with pytest.raises(ValueError, match="neighbours"):
        knn(x, y[:, :5], 7)


def test_gather_batches():
    values = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    index = torch.tensor([[[3, 0]], [[1, 1]]])
    out = gather(values, index)
    assert out.shape == (2, 1, 2, 3)
    torch.testing.assert_close(out[0, 0, 0], values[0, 3])
    torch.testing.assert_close(out[1, 0, 1], values[1, 1])


def test_grid_subsample_exact_count_even_spread_and_order_free():
    # A regular 8 x 8 x 8 grid of spacing 1, reduced to 64 points.
    g = torch.stack(torch.meshgrid(*[torch.arange(8.0)] * 3, indexing="ij"), -1).view(1, -1, 3)
    g = g + 1e-3 * torch.rand(g.shape, generator=torch.Generator().manual_seed(0))  # break exact ties
    idx = grid_subsample(g, 64)
    assert idx.shape == (1, 64) and len(set(idx[0].tolist())) == 64
    kept = g[0, idx[0]]
    gap = torch.cdist(g[0], kept).min(1).values.max()
    assert gap < 2.0  # every point within 2 spacings of a kept one (random picks leave ~3-4)
    perm = torch.randperm(512, generator=torch.Generator().manual_seed(1))
    again = perm[grid_subsample(g[:, perm], 64)[0]]
    assert set(again.tolist()) == set(idx[0].tolist())
    assert grid_subsample(g, 512).shape == (1, 512)
    with pytest.raises(ValueError):
        grid_subsample(g, 513)


def test_cost_volume_soft_match_offset():
    """The offset is a convex combination of the neighbours' offsets: with one neighbour and a
    target that is the source shifted by less than half the spacing, it is the shift exactly."""
    from register.models.layers import CostVolume

    g = torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), -1).view(1, -1, 3)
    shift = torch.tensor([0.2, -0.1, 0.3])
    cv = CostVolume(4)
    init_parameters(cv, 0)
    f = torch.rand(1, 125, 4, generator=torch.Generator().manual_seed(0))
    target = g + shift
    with torch.no_grad():
        cost, offset = cv(g, f, target, f, knn(g, target, 1), 1.0)
        assert cost.shape == (1, 125, 4)
        torch.testing.assert_close(offset, shift.expand(1, 125, 3))
        _, offset8 = cv(g, f, target, f, knn(g, target, 8), 1.0)
    d = gather(target, knn(g, target, 8)) - g[:, :, None]  # (1, 125, 8, 3) candidate offsets
    assert (offset8 >= d.amin(2) - 1e-6).all() and (offset8 <= d.amax(2) + 1e-6).all()


# ------------------------------------------------------------------ network


def test_default_network_has_1_to_3_million_parameters():
    for features in (0, 1):
        n = count_parameters(FlowNet(FlowNetConfig(in_features=features)))
        assert 1_000_000 <= n <= 3_000_000, n


def test_forward_shapes_levels_and_indices():
    net = tiny_net()
    x, y = clouds(300, 280)
    fx, fy = torch.rand(2, 300, 1), torch.rand(2, 280, 1)
    with torch.no_grad():
        out = net(x, y, fx, fy)
    sizes = TINY.level_sizes(300)
    assert sizes == [300, 75, 18]
    assert [f.shape for f in out.flows] == [(2, s, 3) for s in sizes]
    assert [i.shape for i in out.index] == [(2, s) for s in sizes]
    torch.testing.assert_close(out.index[0][0], torch.arange(300))
    for index in out.index[1:]:
        assert int(index.min()) >= 0 and int(index.max()) < 300
        assert all(len(set(row.tolist())) == index.shape[1] for row in index)
    assert all(torch.isfinite(f).all() for f in out.flows)


def test_untrained_network_predicts_no_motion():
    net = tiny_net(trained=False)
    x, y = clouds(300, 280)
    with torch.no_grad():
        out = net(x, y, torch.rand(2, 300, 1), torch.rand(2, 280, 1))
    assert all(float(f.abs().max()) == 0.0 for f in out.flows)


def test_forward_is_deterministic_per_seed():
    x, y = clouds(300, 280)
    fx, fy = torch.rand(2, 300, 1), torch.rand(2, 280, 1)
    with torch.no_grad():
        a = tiny_net(3)(x, y, fx, fy).flows[0]
        b = tiny_net(3)(x, y, fx, fy).flows[0]
        c = tiny_net(4)(x, y, fx, fy).flows[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_source_order_does_not_change_the_flow():
    net = tiny_net()
    x, y = clouds(300, 280)
    fx, fy = torch.rand(2, 300, 1), torch.rand(2, 280, 1)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = net(x, y, fx, fy).flows[0]
        b = net(x[:, perm], y, fx[:, perm], fy).flows[0]
    torch.testing.assert_close(a[:, perm], b, atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_refused():
    net = tiny_net()
    x, y = clouds(300, 280)
    with pytest.raises(ValueError, match="input feature"):
        net(x, y)
    with pytest.raises(ValueError, match="at least"):
        net(x[:, :100], y, torch.rand(2, 100, 1), torch.rand(2, 280, 1))
    with pytest.raises(ValueError):
        FlowNetConfig(channels=(8, 16), estimator=(8,))


# ------------------------------------------------------------------ model, checkpoints, registry


def flow_model(seed: int = 0, normalisation: Normalisation | None = None) -> FlowModel:
    return FlowModel(tiny_net(seed), normalisation or Normalisation("rms"), "radius", 300, {"preset": "lung"})


def test_prediction_is_in_data_units():
    """rms normalisation: scaling both clouds by 1000 (m -> mm) scales the flow by 1000; a shift changes nothing."""
    model = flow_model()
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 3)), rng.random((280, 3)) + 0.05
    fx, fy = rng.uniform(0.001, 0.003, 300), rng.uniform(0.001, 0.003, 280)
    flow = model.predict(x, y, fx, fy)
    assert flow.shape == (300, 3) and flow.dtype == np.float64 and np.abs(flow).max() > 0
    np.testing.assert_allclose(
        model.predict(1000 * x, 1000 * y, 1000 * fx, 1000 * fy), 1000 * flow, atol=1e-3
    )
    np.testing.assert_allclose(model.predict(x + 50, y + 50, fx, fy), flow, atol=1e-5)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = flow_model(5, Normalisation("fixed", length=10.0))
    path = tmp_path / "m.pt"
    save_checkpoint(path, make_checkpoint(model.net, model.normalisation, "radius", 300, {"steps": 7}))
    loaded = FlowModel.from_checkpoint(read_checkpoint(path), name="m")
    assert loaded.normalisation == model.normalisation and loaded.feature == "radius" and loaded.points == 300
    assert loaded.metadata == {"steps": 7} and loaded.net.cfg == TINY
    rng = np.random.default_rng(1)
    x, y = rng.random((300, 3)) * 20, rng.random((290, 3)) * 20
    f = rng.uniform(0.1, 0.3, 300)
    np.testing.assert_array_equal(loaded.predict(x, y, f, f[:290]), model.predict(x, y, f, f[:290]))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt is not a readable"):
        read_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"kind": "something else"}, other)
    with pytest.raises(InputError, match="not a register flow-model checkpoint"):
        read_checkpoint(other)
    newer = tmp_path / "newer.pt"
    model = flow_model()
    payload = make_checkpoint(model.net, model.normalisation, "", 300, {})
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(InputError, match="upgrade register"):
        read_checkpoint(newer)
    wrong = tmp_path / "wrong.pt"
    torch.save({**payload, "architecture": {**payload["architecture"], "channels": [4, 8, 16]}}, wrong)
    with pytest.raises(InputError, match="does not match"):
        FlowModel.from_checkpoint(read_checkpoint(wrong), name=str(wrong))


def test_registry_lists_and_loads_shipped_models(tmp_path):
    assert available_models(tmp_path) == []
    with pytest.raises(InputError, match="none") as info:
        load_model("lung", directory=tmp_path)
    assert "flow.model" in str(info.value) and "register train" in str(info.value)
    model = flow_model()
    meta = {"preset": "lung", "steps": 12, "validation": {"epe": 1.5, "epe_zero": 6.0}}
    save_checkpoint(
        tmp_path / "lung.pt", make_checkpoint(model.net, model.normalisation, "radius", 300, meta)
    )
    (tmp_path / "lung.md").write_text("# lung\n")
    (info_,) = available_models(tmp_path)
    assert (info_.name, info_.preset, info_.steps, info_.validation["epe"]) == ("lung", "lung", 12, 1.5)
    assert info_.card == tmp_path / "lung.md"
    loaded = load_model("lung", directory=tmp_path)
    assert loaded.name == "lung" and loaded.feature == "radius"
    by_path = load_model(str(tmp_path / "lung.pt"), directory=tmp_path)
    assert by_path.points == 300
    with pytest.raises(InputError, match="Shipped models: lung"):
        load_model("sceneflow", directory=tmp_path)


def test_no_model_ships_without_a_card():
    for info in available_models():
        assert info.card is not None, f"{info.path} has no model card"
        text = info.card.read_text()
        assert "register train" in text and "seed" in text.lower()


@pytest.mark.parametrize("info", available_models(), ids=lambda m: m.name)
def test_shipped_model_beats_zero_flow_on_held_out_pairs(info):
    """Each shipped model, through stage 2 (subsample, network, smooth projection), lowers the
    end-point error of held-out synthetic pairs of its preset (seeds no training run draws)."""
    from dataclasses import replace

    from benchmarks.flow_heldout import stage_errors
    from register.config import load_config
    from register.synth.pairs import HELD_OUT_STREAM, make_training_pair, pair_seed

    model = load_model(info.name)
    cfg = load_config(info.preset)
    zero, field = [], []
    for i in range(2):
        pair = make_training_pair(info.preset, pair_seed(0, HELD_OUT_STREAM, 3000 + i), 4096)
        flow_cfg = replace(cfg.flow, axes=["x,y,z"])  # synthetic pairs: the training frame
        if cfg.pipeline.length_unit == "relative":  # lengths relative to the target's diagonal
            diagonal = float(np.linalg.norm(np.ptp(pair.target, axis=0)))
            flow_cfg = replace(cfg.flow, sigma=cfg.flow.sigma * diagonal)
        z, _, f, _ = stage_errors(pair, model, flow_cfg)
        zero.append(z)
        field.append(f)
    assert np.mean(field) < 0.8 * np.mean(zero), (field, zero)


def test_too_few_points_for_the_flow_stage_says_how_to_fix_it():
    from register.config import FlowConfig
    from register.stages.flow import check_inputs

    model = flow_model()
    need = model.net.cfg.min_points()
    with pytest.raises(
        InputError, match=r"needs at least .*source 10, target 400.*pipeline.stages = \['affine', 'spline'\]"
    ) as e:
        check_inputs(model, 10, 400, 3, FlowConfig())
    assert "raise flow.points" not in str(e.value)  # the clouds themselves are too small
    with pytest.raises(InputError, match=rf"raise flow.points to at least {need}"):
        check_inputs(model, 5000, 5000, 3, FlowConfig(points=need - 1))
    check_inputs(model, 5000, 5000, 3, FlowConfig(points=need))


def test_flow_axes_turn_the_clouds_into_the_model_frame_and_the_flow_back():
    """Stage 2 with ``flow.axes = "z,-x,-y"`` on camera-frame clouds gives the camera-frame
    version of the flow the model predicts on the same clouds in its own frame."""
    from register.config import FlowConfig
    from register.core.axes import axes_matrix
    from register.stages.flow import flow_predict
    from register.synth.pairs import HELD_OUT_STREAM, make_training_pair, pair_seed

    model = load_model("sceneflow")
    pair = make_training_pair("sceneflow", pair_seed(0, HELD_OUT_STREAM, 3100), 2048)
    r = axes_matrix("z,-x,-y")
    np.testing.assert_array_equal(r @ np.array([0.0, -1.0, 0.0]), [0.0, 0.0, 1.0])  # camera up
    a = np.full(len(pair.source), 1.0 / len(pair.source))
    in_model_frame = flow_predict(
        pair.source, pair.target, a, FlowConfig(sigma=4.0), model, rng=np.random.default_rng(0)
    )
    camera = flow_predict(
        pair.source @ r,  # p_camera = R^T p_model
        pair.target @ r,
        a,
        FlowConfig(sigma=4.0, axes=["z,-x,-y"]),
        model,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(camera.flow, in_model_frame.flow @ r, atol=1e-4)
    unturned = flow_predict(
        pair.source @ r, pair.target @ r, a, FlowConfig(sigma=4.0), model, rng=np.random.default_rng(0)
    )
    assert np.abs(unturned.flow - camera.flow).max() > 0.1  # the frame matters to the network
