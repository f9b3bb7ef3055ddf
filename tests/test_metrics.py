import numpy as np
import pytest

from register.core.transforms import Affine, KernelField
from register.metrics import chamfer, folding_fraction, relative_correspondence_error, scene_flow, tre


def test_tre_hand_computed():
    warped = np.zeros((4, 3))
    ref = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 4.0]])
    out = tre(warped, ref)
    assert out["mean"] == pytest.approx(2.5)
    assert out["median"] == pytest.approx(2.5)
    assert out["max"] == pytest.approx(4.0)
    assert out["p75"] == pytest.approx(3.25)


def test_scene_flow_thresholds_at_their_edges():
    # truth |f| = 1 m for every point; errors chosen around the thresholds
    truth = np.tile([1.0, 0.0, 0.0], (6, 1))
    errors = [0.049, 0.0501, 0.099, 0.1001, 0.2999, 0.3001]
    est = truth + np.array([[0.0, e, 0.0] for e in errors])
    out = scene_flow(est, truth)
    assert out["epe3d"] == pytest.approx(np.mean(errors))
    # relative error = e / (1 + 1e-4): 0.049 -> strict ok; 0.0501 -> neither 5 cm nor 5 %
    assert out["acc3ds"] == pytest.approx(1 / 6)
    assert out["acc3dr"] == pytest.approx(3 / 6)
    # outliers: > 0.3 m or > 10 %: 0.1001 / 1.0001 > 0.1 -> outlier, and the larger ones
    assert out["outliers3d"] == pytest.approx(3 / 6)


def test_scene_flow_relative_threshold_rescues_large_flows():
    truth = np.array([[10.0, 0, 0]])
    est = truth + [0.4, 0, 0]  # 40 cm error but 4 % of a 10 m flow
    out = scene_flow(est, truth)
    assert out["acc3ds"] == 1.0 and out["acc3dr"] == 1.0 and out["outliers3d"] == 1.0  # > 0.3 m


def test_relative_error_and_chamfer():
    ref = np.array([[0.0, 0, 0], [3.0, 4.0, 0]])  # diagonal 5
    assert relative_correspondence_error(ref + [0.5, 0, 0], ref) == pytest.approx(0.1)
    assert chamfer(ref, ref + [0, 0, 1.0]) == pytest.approx(1.0)


def test_folding_fraction():
    pts = np.random.default_rng(0).random((50, 3))
    assert folding_fraction(Affine(np.diag([1.0, 2.0, 0.5]), np.zeros(3)), pts) == 0.0
    assert folding_fraction(Affine(np.diag([1.0, 1.0, -1.0]), np.zeros(3)), pts) == 1.0
    # a strong narrow kernel bump folds space near its centre
    fold = KernelField(np.array([[0.5, 0.5, 0.5]]), np.array([[-1.0, 0, 0]]), (0.05,))
    # d(x + v)/dx = 1 - (x - c) / sigma^2 * exp(...) < 0 at x = c - sigma; far away it is 1
    assert folding_fraction(fold, np.array([[0.45, 0.5, 0.5], [0.0, 0.0, 0.0]])) == 0.5


def test_eval_reproduces_the_tre_of_the_run(tmp_path):
    """`register eval` on the saved transform gives the TRE the registration run reported."""
    import json

    from typer.testing import CliRunner

    from register.app.cli import app
    from register.core.pointcloud import PointCloud
    from register.io import write_points

    rng = np.random.default_rng(1)
    x = rng.random((300, 3)) * [100.0, 80.0, 60.0]
    x = x[np.argsort(x[:, 0])] + np.sin(x / 20.0) * 5  # a curved slab
    y = x * 1.05 + [3.0, -2.0, 1.0]
    write_points(tmp_path / "src.ply", PointCloud(x))
    write_points(tmp_path / "tgt.ply", PointCloud(y[rng.permutation(len(y))]))
    np.savetxt(tmp_path / "src_lm.csv", x[:20], delimiter=",", header="x,y,z", comments="")
    np.savetxt(tmp_path / "tgt_lm.csv", y[:20], delimiter=",", header="x,y,z", comments="")
    lm = [str(tmp_path / "src_lm.csv"), str(tmp_path / "tgt_lm.csv")]
    runner = CliRunner()
    run = runner.invoke(
        app,
        [
            "run",
            str(tmp_path / "src.ply"),
            str(tmp_path / "tgt.ply"),
            "-o",
            str(tmp_path / "out"),
            "--json",
            "--quiet",
            "--stages",
            "affine",
            "--landmarks",
            *lm,
        ],
    )
    assert run.exit_code == 0, run.output
    reported = json.loads(run.stdout)["landmarks"]
    assert reported["after"]["mean"] < 0.2 * reported["before"]["mean"]
    ev = runner.invoke(app, ["eval", str(tmp_path / "out" / "transform.npz"), "--landmarks", *lm, "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["landmarks"]["after"] == reported["after"]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())["landmarks"]
    assert saved["after"] == reported["after"]
