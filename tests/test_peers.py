"""Peer registration tools (benchmarks/peers.py) and the child-process limits (benchmarks/limits.py).

Peers whose package is missing are skipped with a message (probreg and pycpd are in the
``bench`` extra, not in the test set-up); the time / memory limits and the transform code are
tested with hooks that need no peer package.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.peers import (
    BCPD_METHODS,
    BCPD_SHAPES_ARGS,
    BCPD_TUNED_ARGS,
    PEER_METHODS,
    PeerTransform,
    availability,
    bcpd_binary,
    interpolate_displacement,
    kernel_displacement,
    run_peer,
)

N = 200
RIGID_METHODS = ("open3d_icp", "probreg_cpd_rigid", "probreg_cpd_affine")
NONRIGID_METHODS = ("probreg_cpd_nonrigid", "pycpd_deformable")
# Mean TRE (mm) of DIR-LAB case 1 in ../shared/data/PEERS.md.
PEERS_DIRLAB_CASE1 = {
    "open3d_icp": 2.11,
    "probreg_cpd_rigid": 1.80,
    "probreg_cpd_affine": 1.15,
    "probreg_cpd_nonrigid": 0.82,
    "pycpd_deformable": 0.72,
}


def skip_unless_available(method: str) -> None:
    reason = availability(method)
    if reason is not None:
        pytest.skip(f"{method} not available here: {reason}")


def ellipsoid(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points on an anisotropic ellipsoid surface (semi-axes 40, 25, 15: a lung-sized blob)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u * np.array([40.0, 25.0, 15.0])


def rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def rigid_motion(x: np.ndarray) -> np.ndarray:
    return x @ rotation([1, 2, 3], 6.0).T + np.array([2.0, -1.5, 1.0])


def smooth_deformation(x: np.ndarray) -> np.ndarray:
    """A smooth, non-affine displacement of up to ~3 units (about 4 % of the size)."""
    d = np.stack(
        [
            2.5 * np.sin(x[:, 1] / 20.0),
            2.0 * np.cos(x[:, 0] / 25.0),
            1.5 * np.sin((x[:, 0] + x[:, 2]) / 20.0),
        ],
        axis=1,
    )
    return x + d


def shuffled(points: np.ndarray) -> np.ndarray:
    return points[np.random.default_rng(0).permutation(len(points))]


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean())


_CACHE: dict[tuple[str, str], object] = {}


def peer_run(method: str, case: str):
    """One child run per (method, case) for the whole module."""
    key = (method, case)
    if key not in _CACHE:
        source = ellipsoid(N)
        target = rigid_motion(source) if case == "rigid" else smooth_deformation(source)
        _CACHE[key] = (source, target, run_peer(method, source, shuffled(target), time_limit_s=120, seed=0))
    return _CACHE[key]


# ------------------------------------------------------------------------ transform code


def test_affine_transform_and_identity():
    x = ellipsoid(20)
    r = rotation([0, 0, 1], 30)
    t = PeerTransform("affine", matrix=2.0 * r, translation=np.array([1.0, 2.0, 3.0]))
    assert np.allclose(t.apply(x), 2.0 * x @ r.T + [1, 2, 3])
    assert np.allclose(PeerTransform.identity().apply(x), x)


def test_kernel_displacement_matches_dense_formula_and_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    ctrl, w, u = rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), rng.normal(size=(37, 3))
    dense = np.exp(-((u[:, None] - ctrl[None]) ** 2).sum(-1) / 3.0) @ w
    assert np.allclose(kernel_displacement(u, ctrl, w, 3.0), dense, atol=1e-12)
    monkeypatch.setattr("benchmarks.peers._KERNEL_CHUNK_BYTES", 8 * 50 * 4)  # 4 rows a chunk
    assert np.allclose(kernel_displacement(u, ctrl, w, 3.0), dense, atol=1e-12)


def test_cpd_kernel_transform_denormalises():
    rng = np.random.default_rng(2)
    ctrl, w = rng.normal(size=(30, 3)), 0.1 * rng.normal(size=(30, 3))
    cs, ct = np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.0, 5.0])
    t = PeerTransform(
        "cpd_kernel",
        ctrl=ctrl,
        weights=w,
        kernel_den=4.0,
        src_centre=cs,
        src_scale=2.0,
        tgt_centre=ct,
        tgt_scale=3.0,
    )
    x = ctrl * 2.0 + cs  # the control points in the source frame
    assert np.allclose(t.apply(x), 3.0 * (ctrl + kernel_displacement(ctrl, ctrl, w, 4.0)) + ct)


def test_interpolated_displacement_exact_at_nodes_and_constant_field():
    nodes = ellipsoid(100)
    disp = np.sin(nodes / 10.0)
    assert np.allclose(interpolate_displacement(nodes, nodes, disp), disp)
    const = np.tile([1.0, -2.0, 0.5], (len(nodes), 1))
    probes = nodes[:10] + 0.3
    assert np.allclose(interpolate_displacement(probes, nodes, const), const[:10])
    far = np.array([[1e6, 0.0, 0.0]])  # beyond every kernel: the nearest node's displacement
    assert np.isfinite(interpolate_displacement(far, nodes, disp)).all()


# --------------------------------------------------------------------------- the limits


def test_time_limit_kills_a_slow_run():
    x = ellipsoid(10)
    t0 = time.perf_counter()
    result = run_peer("_test_sleep", x, x, time_limit_s=1.0, seed=0, params={"seconds": 120})
    elapsed = time.perf_counter() - t0
    assert result.status == "timeout", result
    assert result.transform is None and not result.ok
    assert 0.9 <= result.wall_s < 10
    assert elapsed < 60
    with pytest.raises(RuntimeError, match="no transform"):
        result.apply(x)


def test_memory_limit_gives_oom():
    x = ellipsoid(10)
    result = run_peer(
        "_test_alloc", x, x, time_limit_s=60, seed=0, memory_limit_mb=250, params={"mb": 400, "seconds": 30}
    )
    assert result.status == "oom", result
    assert result.peak_rss_mb > 200


def test_measures_a_finished_run():
    x = ellipsoid(10)
    result = run_peer("_test_alloc", x, x, time_limit_s=60, seed=0, params={"mb": 100, "seconds": 0.2})
    assert result.ok, result
    assert 0.15 <= result.wall_s < 10
    assert 0 <= result.cpu_s < result.wall_s + 1
    # At least the 100 MiB block. Without psutil the peak is the child's ru_maxrss, which also counts
    # transient import-time peaks, so no tight upper bound holds across environments.
    assert 90 <= result.peak_rss_delta_mb < 4000
    assert result.peak_rss_mb >= result.peak_rss_delta_mb
    assert result.record()["status"] == "ok"


def test_error_in_the_child_is_reported():
    x = ellipsoid(10)
    result = run_peer("_test_error", x, x, time_limit_s=30, seed=0)
    assert result.status.startswith("error: ValueError: deliberate failure"), result
    assert "Traceback" in result.message


def test_bad_arguments_raise_in_the_parent():
    x = ellipsoid(10)
    with pytest.raises(ValueError, match="unknown peer method"):
        run_peer("nope", x, x, time_limit_s=1, seed=0)
    with pytest.raises(ValueError, match="unknown params"):
        run_peer("open3d_icp", x, x, time_limit_s=1, seed=0, params={"bogus": 1})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        run_peer("open3d_icp", x[:, :2], x, time_limit_s=1, seed=0)


# ------------------------------------------------------------------------------- BCPD


def test_bcpd_unavailable_without_binary(monkeypatch, tmp_path):
    monkeypatch.setattr("benchmarks.peers.PEERS_BIN", tmp_path / "none")  # no built binary
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no bcpd
    x = ellipsoid(10)
    for method in BCPD_METHODS:
        result = run_peer(method, x, x, time_limit_s=10, seed=0)
        assert result.status.startswith("unavailable: no bcpd binary in"), result.status
        assert "setup_peers.sh" in result.status


FAKE_BCPD = """#!{python}
# A stand-in for the BCPD binary: writes <prefix>y.txt = Y + (1, 2, 3), tab separated, and its
# arguments to $FAKE_BCPD_ARGV when set.
import os
import sys
import numpy as np
args = sys.argv[1:]
if os.environ.get("FAKE_BCPD_ARGV"):
    open(os.environ["FAKE_BCPD_ARGV"], "w").write("\\n".join(args))
y = np.loadtxt(args[args.index("-y") + 1], delimiter=",", ndmin=2)
np.savetxt(args[args.index("-o") + 1] + "y.txt", y + [1.0, 2.0, 3.0], delimiter="\\t")
"""


def test_bcpd_wrapper_with_a_stand_in_binary(monkeypatch, tmp_path):
    fake = tmp_path / "bcpd"
    fake.write_text(FAKE_BCPD.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("benchmarks.peers.PEERS_BIN", tmp_path / "none")  # not the built one
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    x = ellipsoid(50)
    result = run_peer("bcpd", x, shuffled(x), time_limit_s=60, seed=0)
    assert result.ok, (result.status, result.message)
    assert np.allclose(result.warped_source, x + [1, 2, 3])
    assert np.allclose(result.apply(x), x + [1, 2, 3])
    assert np.allclose(result.apply(x[:5] + 0.5), x[:5] + 0.5 + [1, 2, 3])  # constant field
    assert "-r0" in result.info["args"]


@pytest.mark.parametrize(
    ("method", "expected"),
    [("bcpd", ["-r0"]), ("bcpd_tuned", [*BCPD_TUNED_ARGS, "-r0"]), ("bcpd_shapes", BCPD_SHAPES_ARGS)],
)
def test_bcpd_settings_reach_the_binary(monkeypatch, tmp_path, method, expected):
    """Each BCPD method passes its PEERS.md settings to the binary (read back from the binary's
    own argv), after the input / output options, with the seed unless the settings fix one."""
    fake = tmp_path / "bcpd"
    fake.write_text(FAKE_BCPD.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr("benchmarks.peers.PEERS_BIN", tmp_path)  # the built binary's place
    monkeypatch.setenv("FAKE_BCPD_ARGV", str(tmp_path / "argv.txt"))
    x = ellipsoid(30)
    result = run_peer(method, x, shuffled(x), time_limit_s=60, seed=0)
    assert result.ok, (result.status, result.message)
    argv = (tmp_path / "argv.txt").read_text().split("\n")
    assert argv[:2] == ["-x", argv[1]] and argv[1].endswith("X.txt") and argv[3].endswith("Y.txt")
    assert argv[argv.index("-q") + 1 :] == expected
    assert result.params["binary"] == str(fake) and result.info["args"] == expected


def test_the_built_bcpd_binary_registers_a_small_cloud():
    """The real BCPD (``bash benchmarks/setup_peers.sh bcpd``) in the harness, every setting."""
    binary = bcpd_binary()
    if binary is None:
        pytest.skip("BCPD is not built: run `bash benchmarks/setup_peers.sh bcpd` to test it")
    source = 3.0 * ellipsoid(150)  # semi-axes 120, 75, 45 (BCPD's default fails on tiny clouds)
    target = smooth_deformation(source)
    before = mean_error(source, target)
    for method in BCPD_METHODS:
        result = run_peer(method, source, shuffled(target), time_limit_s=120, seed=0, threads=2)
        assert result.ok, (method, result.status, result.message)
        assert result.params["binary"] == binary and result.wall_s > 0
        assert result.info["self_check_max_abs"] < 1e-9
        after = mean_error(result.apply(source), target)
        assert after < 0.5 * before, (method, before, after)


# ------------------------------------------------------------------------------- peers


@pytest.mark.parametrize("method", RIGID_METHODS)
def test_peer_recovers_a_rigid_motion(method):
    skip_unless_available(method)
    source, target, result = peer_run(method, "rigid")
    assert result.ok, (result.status, result.message)
    before = mean_error(source, target)
    after = mean_error(result.apply(source), target)
    assert after < 0.02 * before, (before, after)
    assert result.info["self_check_max_abs"] < 1e-6
    landmarks = ellipsoid(30, seed=5) * 0.9  # not source points: inside the shell
    assert mean_error(result.apply(landmarks), rigid_motion(landmarks)) < 0.05 * before
    assert result.wall_s > 0 and result.cpu_s >= 0 and result.peak_rss_mb > 0


@pytest.mark.parametrize("method", NONRIGID_METHODS)
def test_peer_recovers_a_smooth_deformation(method):
    skip_unless_available(method)
    source, target, result = peer_run(method, "deform")
    assert result.ok, (result.status, result.message)
    before = mean_error(source, target)
    after = mean_error(result.apply(source), target)
    assert after < 0.1 * before, (before, after)


@pytest.mark.parametrize("method", NONRIGID_METHODS)
def test_nonrigid_landmark_evaluation_matches_the_tool_at_source_points(method):
    skip_unless_available(method)
    source, target, result = peer_run(method, "deform")
    assert result.ok, (result.status, result.message)
    # Our G(x, Y) W at the source points == the tool's own output. probreg builds its G in
    # float32 (its C++ default), hence the looser tolerance there; pycpd is float64 throughout.
    diagonal = float(np.linalg.norm(source.max(0) - source.min(0)))
    tol = (1e-5 if method.startswith("probreg") else 1e-12) * diagonal
    assert np.abs(result.apply(source) - result.warped_source).max() < tol
    assert result.info["self_check_max_abs"] < tol
    if "kernel_check_max_abs" in result.info:
        assert result.info["kernel_check_max_abs"] < 1e-5
    # Landmarks that are not source points: continuous at the source points, and between
    # them closer to the true deformation than without registration.
    near = source[:20] + 1e-6
    assert np.abs(result.apply(near) - result.warped_source[:20]).max() < 1e-3
    landmarks = ellipsoid(40, seed=7) * 1.01
    assert mean_error(result.apply(landmarks), smooth_deformation(landmarks)) < 0.1 * mean_error(
        landmarks, smooth_deformation(landmarks)
    )


def test_every_peer_is_listed_with_a_reason_when_missing():
    for method in PEER_METHODS:
        reason = availability(method)
        assert reason is None or isinstance(reason, str) and reason


# --------------------------------------------------------------- real data (slow, optional)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PEERS_DIRLAB_CASE1))
def test_dirlab_case1_matches_peers_md(method, shared_data: Path):
    """Source EI, target EE shuffled with default_rng(0); mean TRE within 0.03 mm of PEERS.md."""
    skip_unless_available(method)
    path = shared_data / "lung/dirlab4dct/case1_dense_EI_EE_mm.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    table = np.loadtxt(path, delimiter=",", comments="#", ndmin=2)
    ei, ee = table[:, :3], table[:, 3:6]
    result = run_peer(method, ei, shuffled(ee), time_limit_s=600, seed=0)
    assert result.ok, (result.status, result.message)
    tre = mean_error(result.apply(ei), ee)
    assert abs(tre - PEERS_DIRLAB_CASE1[method]) < 0.03, tre
