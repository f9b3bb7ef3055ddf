"""Label-aware matching (``--labels NAME``): points match points of their own label only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from register.app.cli import app
from register.config import AffineConfig
from register.core.clusters import cluster
from register.core.pointcloud import PointCloud
from register.errors import InputError
from register.io import write_points
from register.ot.matching import robust_match
from register.pipeline import match_classes, register
from register.stages.affine import affine_robot
from register.stages.common import MatchSettings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


def swapped_layers(n: int = 400, seed: int = 0):
    """Two interleaved classes on planes z = 0 and z = 0.05; in the target the classes swap
    planes, so each point's nearest target point is of the other class."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 3))
    cx = (rng.uniform(size=n) < 0.5).astype(np.int64)
    x[:, 2] = 0.05 * cx
    y = x[rng.permutation(n)].copy()
    cy = (y[:, 2] > 0.025).astype(np.int64)
    y[:, 2] = 0.05 * (1 - cy)
    return x, cx, y, cy


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_matches_stay_within_their_class(backend: str) -> None:
    x, cx, y, cy = swapped_layers()
    X, Y = (torch.tensor(v, dtype=torch.float32) for v in (x, y))
    own = 0.05 * (1 - cx)  # the z of each point's own class in the target
    plain = robust_match(X, Y, blur=0.01, reach=0.3, max_iter=200, backend=backend)
    assert np.abs(plain.targets.numpy()[:, 2] - own).mean() > 0.01  # the nearest layer wins
    labelled = robust_match(
        X,
        Y,
        blur=0.01,
        reach=0.3,
        max_iter=200,
        backend=backend,
        classes=(torch.tensor(cx), torch.tensor(cy)),
    )
    assert np.abs(labelled.targets.numpy()[:, 2] - own).max() < 1e-4
    assert labelled.confidence.min() > 0.9
    assert labelled.warm.f.shape == (len(x),) and labelled.warm.g.shape == (len(y),)


def test_a_class_the_target_lacks_is_unmatched() -> None:
    x, cx, y, cy = swapped_layers()
    cx = cx.copy()
    cx[:10] = 7
    X, Y = (torch.tensor(v, dtype=torch.float32) for v in (x, y))
    m = robust_match(X, Y, blur=0.01, reach=0.3, classes=(torch.tensor(cx), torch.tensor(cy)))
    assert (m.confidence[:10] == 0).all() and (m.confidence[10:] > 0.5).all()
    np.testing.assert_array_equal(m.targets[:10].numpy(), x[:10].astype(np.float32))


def test_clusters_never_mix_classes() -> None:
    x, cx, _, _ = swapped_layers(2000)
    x[:, 2] = 0.0  # the two classes on one plane: every voxel holds both
    masses = np.random.default_rng(1).uniform(0.5, 1.5, len(x))
    merged = cluster(x, masses, 0.1, cx)
    assert merged.classes is not None
    np.testing.assert_array_equal(merged.classes[merged.labels], cx)  # each point's cluster: its class
    assert np.isclose(merged.masses.sum(), masses.sum())
    assert len(merged.points) > len(cluster(x, masses, 0.1).points)


def test_affine_stage_follows_the_labels() -> None:
    """Two parallel planes whose labels swap: only the labels tell the affine stage to flip z."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (600, 3))
    cx = (np.arange(600) % 2).astype(np.int64)
    x[:, 2] = cx.astype(float)
    y = rng.uniform(0, 1, (600, 3))
    cy = (np.arange(600) % 2).astype(np.int64)
    y[:, 2] = 1.0 - cy
    cfg = AffineConfig(blurs=[0.1, 0.05], iterations=20)
    ms = MatchSettings(max_iter=100)
    a, b = np.ones(600), np.ones(600)
    plain = affine_robot(x, y, a, b, cfg, ms, rng=np.random.default_rng(0)).transform
    labelled = affine_robot(x, y, a, b, cfg, ms, rng=np.random.default_rng(0), classes=(cx, cy)).transform
    flipped = 1.0 - x[:, 2]
    assert np.abs(plain.apply(x)[:, 2] - flipped).mean() > 0.3
    assert np.abs(labelled.apply(x)[:, 2] - flipped).max() < 0.05


def test_match_classes_checks_the_attribute() -> None:
    pts = np.random.default_rng(3).normal(size=(20, 3))
    good = PointCloud(pts, {"label": np.repeat([1.0, 2.0], 10)}, path="a.ply")
    cx, cy = match_classes(good, good, "label")
    assert cx.dtype == np.int64 and set(cx) == {1, 2}
    assert match_classes(good, good, "") is None
    with pytest.raises(
        InputError, match=r"b.ply: no point attribute 'label' for pipeline.labels \(attributes: kind\)"
    ):
        match_classes(good, PointCloud(pts, {"kind": np.ones(20)}, path="b.ply"), "label")
    with pytest.raises(InputError, match="one integer label per point"):
        match_classes(good, PointCloud(pts, {"label": np.linspace(0, 1, 20)}, path="c.ply"), "label")
    with pytest.raises(InputError, match="none in common"):
        match_classes(good, PointCloud(pts, {"label": np.full(20, 5.0)}, path="d.ply"), "label")


def test_register_records_the_labels() -> None:
    x, cx, y, cy = swapped_layers(300)
    src = PointCloud(x, {"label": cx.astype(float)})
    tgt = PointCloud(y, {"label": cy.astype(float)})
    from register.app.run import build_config

    cfg = build_config("default", stages="affine", overrides=('pipeline.labels="label"',))
    result = register(src, tgt, cfg)
    assert result.metrics["labels"] == "label"


def test_cli_labels(tmp_path: Path) -> None:
    x, cx, y, cy = swapped_layers(300)
    write_points(tmp_path / "s.ply", PointCloud(x, {"label": cx.astype(float)}))
    write_points(tmp_path / "t.ply", PointCloud(y, {"label": cy.astype(float)}))
    base = ["run", tmp_path / "s.ply", tmp_path / "t.ply", "--stages", "affine"]
    missing = CliRunner().invoke(
        app, [str(a) for a in [*base, "--labels", "artery", "-o", tmp_path / "a"]], env=ENV
    )
    assert missing.exit_code == 2 and "no point attribute 'artery'" in missing.stderr
    assert not (tmp_path / "a").exists()
    ok = CliRunner().invoke(
        app, [str(a) for a in [*base, "--labels", "label", "-o", tmp_path / "b", "-q"]], env=ENV
    )
    assert ok.exit_code == 0, ok.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["labels"] == "label"


def test_register_takes_labels_and_weights_as_arguments() -> None:
    """``register(..., labels=, weights=)`` mirror ``--labels`` / ``--weights``: the same result
    as the config keys, and a missing attribute is refused naming the key."""
    x, cx, y, cy = swapped_layers(300)
    src = PointCloud(x, {"label": cx.astype(float), "w": np.ones(len(x))})
    tgt = PointCloud(y, {"label": cy.astype(float), "w": np.ones(len(y))})
    from register.app.run import build_config

    by_key = register(
        src, tgt, build_config("default", stages="affine", overrides=('pipeline.labels="label"',))
    )
    by_argument = register(src, tgt, build_config("default", stages="affine"), labels="label", weights="w")
    assert by_argument.metrics["labels"] == "label" and by_argument.metrics["weights"] == "w"
    np.testing.assert_array_equal(by_argument.warped, by_key.warped)
    with pytest.raises(InputError, match="pipeline.weights = 'nosuch'"):
        register(src, tgt, build_config("default", stages="affine"), weights="nosuch")
