"""Command-line tests of ``register``: runs, outputs, ``warp``, ``info``, and every bad-input case.

Clouds are small (about 300 points) and the pipeline is made cheap with ``--set`` so the whole
file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from register.app.cli import app, main
from register.config import load_config, to_toml, with_overrides
from register.core.pointcloud import PointCloud
from register.errors import InputError
from register.io import SUPPORTED_EXTENSIONS, read_points, write_points

# torch's OpenMP threads spin while waiting; on a busy 2-core machine that makes small problems
# 100x slower. Passive waiting keeps the runs (and the subprocesses, which inherit it) fast.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHEAP = [
    "--set",
    "affine.blurs=[0.2,0.1]",
    "--set",
    "spline.blurs=[0.05]",
    "--set",
    "spline.sigmas=[0.2]",
]
RESULT_FILES = {"transform.npz", "warped.ply", "field.npz", "field.vtk", "metrics.json", "config.toml"}
ENV = {"COLUMNS": "80", "NO_COLOR": "1"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUBPROCESS_TIMEOUT = 180


# ------------------------------------------------------------------------- helpers


def surface(n: int, seed: int) -> np.ndarray:
    """A noisy curved sheet: ``(n, 3)`` points."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform(-1, 1, (n, 2))
    z = 0.3 * np.sin(2 * uv[:, 0]) * np.cos(2 * uv[:, 1])
    return np.column_stack([uv, z]) + rng.normal(scale=0.01, size=(n, 3))


def deform(p: np.ndarray) -> np.ndarray:
    """A smooth non-rigid deformation plus a translation."""
    bend = np.column_stack([np.sin(p[:, 1]), np.cos(p[:, 0]), 0.5 * p[:, 0] * p[:, 1]])
    return p + 0.1 * bend + np.array([0.2, -0.1, 0.05])


def write_pair(folder: Path, n_source: int = 300, n_target: int = 280) -> tuple[Path, Path]:
    """``src.ply`` (with a ``radius`` attribute) and ``tgt.ply``: a resampled deformed copy."""
    src, tgt = folder / "src.ply", folder / "tgt.ply"
    rng = np.random.default_rng(1)
    write_points(src, PointCloud(surface(n_source, 0), {"radius": rng.uniform(0.5, 1.5, n_source)}))
    write_points(tgt, PointCloud(deform(surface(n_target, 2))))
    return src, tgt


def invoke(args: list) -> object:
    """Run ``register`` in-process; stdout and stderr are captured separately."""
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def stderr_of(result) -> str:
    return ANSI.sub("", result.stderr)


def assert_input_error(result, *needles: str) -> str:
    """Exit code 2, ``error: ...`` on stderr naming every needle, nothing on stdout."""
    err = stderr_of(result)
    assert result.exit_code == 2, (result.exit_code, result.stdout, err, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error:" in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in stderr: {err!r}"
    assert result.stdout == "", result.stdout
    return err


def listing(folder: Path) -> set[str]:
    """Every name in ``folder``, hidden ones included."""
    return set(os.listdir(folder))


def warped_points(outdir: Path) -> np.ndarray:
    return read_points(outdir / "warped.ply").points


def subprocess_env() -> dict[str, str]:
    return {**os.environ, **ENV, "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------- a shared run


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def run(pair, tmp_path_factory):
    """One successful ``register run SRC TGT -o OUTDIR --json``; returns (result, outdir)."""
    src, tgt = pair
    outdir = tmp_path_factory.mktemp("run") / "out"
    result = invoke(["run", src, tgt, "-o", outdir, "--json", "--seed", "3", *CHEAP])
    assert result.exit_code == 0, (stderr_of(result), result.exception)
    return result, outdir


# ------------------------------------------------------------------------- 1. a successful run


def test_run_writes_exactly_the_result_files(run):
    _, outdir = run
    assert listing(outdir) == RESULT_FILES
    siblings = listing(outdir.parent)
    assert siblings == {"out"}, f"leftover temporary folders: {siblings}"


def test_run_output_folder_has_usual_permissions(run):
    _, outdir = run
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(outdir.stat().st_mode) == 0o777 & ~umask


def test_run_metrics(run, pair):
    _, outdir = run
    metrics = json.loads((outdir / "metrics.json").read_text())
    assert set(metrics["stage_seconds"]) == {"affine", "spline"}
    assert all(v > 0 for v in metrics["stage_seconds"].values())
    assert [s["name"] for s in metrics["stages"]] == ["affine", "spline"]
    assert all(s["seconds"] > 0 for s in metrics["stages"])
    assert metrics["total_seconds"] > 0
    assert metrics["source_points"] == 300
    assert metrics["target_points"] == 280
    assert metrics["chamfer_before"] > metrics["chamfer_after"] > 0
    assert {"python", "register", "numpy", "torch"} <= set(metrics["versions"])
    assert metrics["device"] == "cpu" or metrics["device"].startswith("cuda")
    assert metrics["seed"] == 3
    assert metrics["source"] == str(pair[0]) and metrics["target"] == str(pair[1])
    assert metrics["pipeline"] == "default"


def test_run_warped_file_has_displacement_and_confidence(run, pair):
    _, outdir = run
    source = read_points(pair[0])
    warped = read_points(outdir / "warped.ply")
    assert warped.points.shape == source.points.shape
    displacement = warped.point_data["displacement"]
    confidence = warped.point_data["confidence"]
    assert displacement.shape == (300, 3) and confidence.shape == (300,)
    np.testing.assert_allclose(warped.points - source.points, displacement, atol=1e-12)
    # Transported / own mass: ~1 where matched (balanced OT here), never negative.
    assert np.isfinite(confidence).all() and (confidence >= 0).all()
    assert abs(np.median(confidence) - 1) < 0.1
    np.testing.assert_array_equal(warped.point_data["radius"], source.point_data["radius"])
    field = np.load(outdir / "field.npz")
    np.testing.assert_array_equal(field["points"], source.points)
    np.testing.assert_allclose(field["displacement"], displacement, atol=1e-12)
    vtk_field = read_points(outdir / "field.vtk")
    np.testing.assert_allclose(vtk_field.point_data["displacement"], displacement, atol=1e-12)


def test_run_config_toml_reloads_to_the_same_config(run):
    _, outdir = run
    metrics = json.loads((outdir / "metrics.json").read_text())
    path = outdir / "config.toml"
    loaded = load_config(str(path))
    expected = with_overrides(load_config("default"), [a for a in CHEAP if a != "--set"])
    assert loaded == expected.in_data_units(metrics["target_diameter"])
    assert loaded.pipeline.length_unit == "data"
    assert to_toml(loaded) == path.read_text()


def test_run_json_is_the_only_stdout(run):
    result, outdir = run
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok"
    assert summary["output"] == str(outdir)
    assert summary["warped"] == str(outdir / "warped.ply")
    assert summary["source_points"] == 300 and summary["target_points"] == 280
    assert summary["chamfer_before"] > summary["chamfer_after"]
    assert summary["screenshot"] is None
    assert set(summary["stage_seconds"]) == {"affine", "spline"}


def test_shorthand_without_run_in_a_subprocess(pair, run, tmp_path):
    """``python -m register.app.cli SRC TGT`` (no ``run``): JSON only on stdout, same result."""
    src, tgt = pair
    outdir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "register.app.cli", src, tgt, "-o", outdir, "--json", "--seed", "3", *CHEAP],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "ok" and summary["output"] == str(outdir)
    assert "chamfer" in proc.stderr  # the human summary goes to stderr
    assert listing(outdir) == RESULT_FILES
    # Same seed, another process: the same warped points.
    np.testing.assert_array_equal(warped_points(outdir), warped_points(run[1]))


def test_shorthand_in_process_main(pair, tmp_path, capsys):
    """``main([...])`` inserts ``run``: an error exits 2 through the same path."""
    src, _ = pair
    with pytest.raises(SystemExit) as info:
        main([str(src), str(tmp_path / "nope.ply"), "-o", str(tmp_path / "out")])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "nope.ply" in ANSI.sub("", captured.err) and captured.out == ""
    assert listing(tmp_path) == set()


def test_default_output_folder_name(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src, tgt = pair
    result = invoke(["run", src, tgt, "-q", *CHEAP])
    assert result.exit_code == 0, stderr_of(result)
    assert listing(tmp_path) == {"src_to_tgt"}
    assert listing(tmp_path / "src_to_tgt") == RESULT_FILES


# ------------------------------------------------------------------------- 2. reproducibility, overwrite


def test_same_seed_same_result_and_overwrite(pair, run, tmp_path):
    src, tgt = pair
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "old.txt").write_text("keep me")
    args = ["run", src, tgt, "-o", outdir, "-q", "--seed", "3", *CHEAP]

    refused = invoke(args)
    assert_input_error(refused, str(outdir), "--overwrite")
    assert listing(outdir) == {"old.txt"} and (outdir / "old.txt").read_text() == "keep me"
    assert listing(tmp_path) == {"out"}

    # --overwrite replaces only a result folder register wrote, never a folder of the user's
    assert_input_error(invoke([*args, "--overwrite"]), str(outdir), "old.txt")
    assert listing(outdir) == {"old.txt"} and (outdir / "old.txt").read_text() == "keep me"

    shutil.rmtree(outdir)
    shutil.copytree(run[1], outdir)  # an earlier result, marked to see it replaced
    metrics = json.loads((outdir / "metrics.json").read_text())
    (outdir / "metrics.json").write_text(json.dumps({**metrics, "earlier": True}))
    replaced = invoke([*args, "--overwrite"])
    assert replaced.exit_code == 0, stderr_of(replaced)
    assert listing(outdir) == RESULT_FILES
    assert "earlier" not in json.loads((outdir / "metrics.json").read_text())
    assert listing(tmp_path) == {"out"}, "temporary or trash folders left behind"
    np.testing.assert_array_equal(warped_points(outdir), warped_points(run[1]))


def test_empty_existing_output_folder_is_used(pair, tmp_path):
    src, tgt = pair
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = invoke(["run", src, tgt, "-o", outdir, "-q", *CHEAP])
    assert result.exit_code == 0, stderr_of(result)
    assert listing(outdir) == RESULT_FILES
    assert listing(tmp_path) == {"out"}


# ------------------------------------------------------------------------- 3. warp


def test_warp_source_reproduces_the_run(run, pair, tmp_path):
    _, outdir = run
    out = tmp_path / "moved.ply"
    result = invoke(["warp", outdir / "transform.npz", pair[0], "-o", out, "--json"])
    assert result.exit_code == 0, stderr_of(result)
    assert json.loads(result.stdout) == {"status": "ok", "output": str(out), "points": 300, "inverse": False}
    moved = read_points(out)
    np.testing.assert_allclose(moved.points, warped_points(outdir), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(moved.point_data["radius"], read_points(pair[0]).point_data["radius"])


def test_warp_mesh_keeps_faces(run, tmp_path):
    from register.core.transforms import Transform

    _, outdir = run
    u, v = np.meshgrid(np.linspace(-1, 1, 8), np.linspace(-1, 1, 8))
    points = np.column_stack([u.ravel(), v.ravel(), 0.3 * np.sin(2 * u.ravel()) * np.cos(2 * v.ravel())])
    quads = [
        (i * 8 + j, i * 8 + j + 1, (i + 1) * 8 + j + 1, (i + 1) * 8 + j) for i in range(7) for j in range(7)
    ]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], dtype=np.int64)
    mesh = tmp_path / "mesh.ply"
    write_points(mesh, PointCloud(points, faces=faces))
    out = tmp_path / "mesh_moved.ply"
    result = invoke(["warp", outdir / "transform.npz", mesh, "-o", out])
    assert result.exit_code == 0, stderr_of(result)
    assert "mesh_moved.ply" in stderr_of(result) and result.stdout == ""
    moved = read_points(out)
    np.testing.assert_array_equal(moved.faces, faces)
    expected = Transform.load(outdir / "transform.npz").apply(points)
    np.testing.assert_allclose(moved.points, expected, rtol=0, atol=1e-9)


def test_warp_landmarks_csv(run, tmp_path):
    from register.core.transforms import Transform

    _, outdir = run
    landmarks = np.array([[0.0, 0.0, 0.0], [0.5, -0.5, 0.1], [-0.7, 0.2, -0.1], [0.3, 0.9, 0.05]])
    rows = "".join(f"{x!r},{y!r},{z!r},{i}\n" for i, (x, y, z) in enumerate(landmarks.tolist()))
    src = tmp_path / "landmarks.csv"
    src.write_text("x,y,z,id\n" + rows)
    out = tmp_path / "landmarks_warped.csv"
    result = invoke(["warp", outdir / "transform.npz", src, "-o", out])
    assert result.exit_code == 0, stderr_of(result)
    assert out.read_text().splitlines()[0] == "x,y,z,id"
    moved = read_points(out)
    expected = Transform.load(outdir / "transform.npz").apply(landmarks)
    np.testing.assert_allclose(moved.points, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(moved.point_data["id"], np.arange(4))


def test_warp_refuses_existing_output(run, pair, tmp_path):
    _, outdir = run
    out = tmp_path / "moved.xyz"
    out.write_text("old content\n")
    args = ["warp", outdir / "transform.npz", pair[0], "-o", out]
    assert_input_error(invoke(args), str(out), "--overwrite")
    assert out.read_text() == "old content\n"
    assert listing(tmp_path) == {"moved.xyz"}
    result = invoke([*args, "--overwrite"])
    assert result.exit_code == 0, stderr_of(result)
    np.testing.assert_allclose(read_points(out).points, warped_points(outdir), rtol=0, atol=1e-9)


def test_warp_2d_points_into_3d_transform(run, tmp_path):
    _, outdir = run
    flat = tmp_path / "flat.csv"
    flat.write_text("x,y\n0,0\n1,0\n0,1\n1,1\n")
    out = tmp_path / "flat_moved.csv"
    assert_input_error(invoke(["warp", outdir / "transform.npz", flat, "-o", out]), "flat.csv", "2-D", "3-D")
    assert listing(tmp_path) == {"flat.csv"}


def test_warp_missing_transform(pair, tmp_path):
    out = tmp_path / "moved.ply"
    assert_input_error(invoke(["warp", tmp_path / "none.npz", pair[0], "-o", out]), "none.npz")
    assert listing(tmp_path) == set()


# ------------------------------------------------------------------------- 4. bad inputs


def _text(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return name


def _truncated_ply(folder: Path) -> str:
    write_points(folder / "trunc.ply", PointCloud(surface(50, 5)))
    data = (folder / "trunc.ply").read_bytes()
    (folder / "trunc.ply").write_bytes(data[: len(data) - 300])
    return "trunc.ply"


def _rows(n: int) -> str:
    return "".join(f"{0.1 * i},{0.2 * i * i},{np.sin(i)}\n" for i in range(n))


# name -> (args after the command, given the folder holding src.ply/tgt.ply; words stderr must contain)
BAD_INPUTS = {
    "unknown_extension": (lambda d: [_text(d, "src.foo", "0 0 0\n"), "tgt.ply"], ["src.foo", "'.foo'"]),
    "missing_file": (lambda d: ["src.ply", "missing.ply"], ["missing.ply", "not found"]),
    "empty_cloud": (lambda d: [_text(d, "empty.csv", "x,y,z\n"), "tgt.ply"], ["empty.csv", "no points"]),
    "nan_coordinate": (
        lambda d: ["src.ply", _text(d, "nan.csv", "x,y,z\n" + _rows(5) + "nan,1,2\n" + _rows(5))],
        ["nan.csv", "NaN"],
    ),
    "wrong_columns": (
        lambda d: [_text(d, "cols.csv", _rows(4) + "1.0,2.0\n" + _rows(4)), "tgt.ply"],
        ["cols.csv", "columns"],
    ),
    "too_few_points": (lambda d: [_text(d, "three.csv", _rows(3)), "tgt.ply"], ["three.csv", "at least 4"]),
    "truncated_binary_ply": (lambda d: [_truncated_ply(d), "tgt.ply"], ["trunc.ply", "truncated"]),
    "unknown_preset": (lambda d: ["src.ply", "tgt.ply", "--pipeline", "nosuch"], ["--pipeline", "nosuch"]),
    "missing_pipeline_file": (
        lambda d: ["src.ply", "tgt.ply", "--pipeline", "mine.toml"],
        ["--pipeline", "mine.toml"],
    ),
    "unknown_config_key": (
        lambda d: ["src.ply", "tgt.ply", "--set", "affine.nosuch=1"],
        ["--set", "affine.nosuch", "known keys of [affine]"],
    ),
    "unknown_config_table": (
        lambda d: ["src.ply", "tgt.ply", "--set", "nosuch.mode=1"],
        ["--set", "[nosuch]"],
    ),
    "bad_config_value": (
        lambda d: ["src.ply", "tgt.ply", "--set", "affine.mode=bogus"],
        ["--set", "affine.mode", "bogus"],
    ),
    "malformed_set": (lambda d: ["src.ply", "tgt.ply", "--set", "affine"], ["--set", "TABLE.KEY=VALUE"]),
    "unknown_stage": (
        lambda d: ["src.ply", "tgt.ply", "--stages", "affine,warpdrive"],
        ["--stages", "warpdrive"],
    ),
    "missing_weights_attribute": (
        lambda d: ["src.ply", "tgt.ply", "--weights", "nosuch"],
        ["--weights nosuch", "src.ply"],
    ),
    "cuda_absent": (lambda d: ["src.ply", "tgt.ply", "--device", "cuda"], ["--device cuda", "CUDA"]),
    "bad_device": (lambda d: ["src.ply", "tgt.ply", "--device", "tpu"], ["--device tpu"]),
    "screenshot_not_png": (
        lambda d: ["src.ply", "tgt.ply", "--screenshot", "out.jpg"],
        ["--screenshot", "out.jpg", ".png"],
    ),
    "output_parent_missing": (
        lambda d: ["src.ply", "tgt.ply", "-o", "no/such/out"],
        ["no/such/out", "does not exist"],
    ),
    "output_is_a_file": (
        lambda d: ["src.ply", "tgt.ply", "-o", _text(d, "taken", "x")],
        ["-o taken", "not a folder"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_and_leaves_nothing(case, tmp_path, monkeypatch):
    if case == "cuda_absent":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available on this machine: --device cuda is valid")
    monkeypatch.chdir(tmp_path)
    write_pair(tmp_path, 200, 190)
    build, needles = BAD_INPUTS[case]
    args = build(tmp_path)
    before = listing(tmp_path)
    extra = [] if "-o" in args else ["-o", "out"]
    extra += [] if "--screenshot" in args else ["--screenshot", "qa.png"]
    result = invoke(["run", *args, *extra, "-q", *CHEAP])
    assert_input_error(result, *needles)
    assert listing(tmp_path) == before, "output files were left behind"


def test_error_message_is_not_hard_wrapped(pair, tmp_path):
    """A long path is printed whole on one line (scripts grep stderr for it)."""
    missing = tmp_path / ("a_rather_long_folder_name_" * 3) / "missing_target_cloud.ply"
    err = assert_input_error(invoke(["run", pair[0], missing, "-o", tmp_path / "out"]))
    assert str(missing) in err
    assert err.startswith("error: ")


def test_failed_write_keeps_old_output_and_no_partial_folder(pair, run, tmp_path, monkeypatch):
    """A failure half-way through writing OUTDIR (--overwrite) leaves the old OUTDIR as it was."""
    import register.app.outputs

    def broken_to_toml(cfg):
        raise InputError("config.toml: simulated write failure")

    monkeypatch.setattr(register.app.outputs, "to_toml", broken_to_toml)
    src, tgt = pair
    outdir = tmp_path / "out"
    shutil.copytree(run[1], outdir)
    before = {name: (outdir / name).read_bytes() for name in RESULT_FILES}
    result = invoke(["run", src, tgt, "-o", outdir, "-q", "--overwrite", *CHEAP])
    assert_input_error(result, "simulated write failure")
    assert listing(tmp_path) == {"out"}, "a temporary folder was left behind"
    assert {name: (outdir / name).read_bytes() for name in listing(outdir)} == before


def test_failed_screenshot_leaves_no_result(pair, tmp_path, monkeypatch):
    """Rendering fails after the registration: exit 2 and neither OUTDIR nor the PNG remains."""
    import register.app.viz

    def broken_render(*args, screenshot=None, **kwargs):
        raise InputError(f"--screenshot {screenshot}: rendering failed (EGL not available)")

    monkeypatch.setattr(register.app.viz, "render", broken_render)
    src, tgt = pair
    shot = tmp_path / "qa.png"
    result = invoke(["run", src, tgt, "-o", tmp_path / "out", "-q", "--screenshot", shot, *CHEAP])
    assert_input_error(result, "--screenshot", "qa.png", "rendering failed")
    assert listing(tmp_path) == set()


# ------------------------------------------------------------------------- 5. flow stage


@pytest.mark.parametrize("stages", ["flow", "affine,flow,spline"])
def test_flow_stage_without_a_model_is_a_clear_error(stages, pair, tmp_path):
    src, tgt = pair
    args = ["run", src, tgt, "-o", tmp_path / "out", "-q", "--stages", stages, "--set", 'flow.model="nosuch"']
    result = invoke([*args, *CHEAP])
    err = assert_input_error(result, "--stages flow", "flow.model = 'nosuch'", "no such flow model")
    assert "Shipped models:" in err and "register train" in err
    assert listing(tmp_path) == set()


# ------------------------------------------------------------------------- 6. info


def test_info_json():
    result = invoke(["info", "--json"])
    assert result.exit_code == 0, stderr_of(result)
    data = json.loads(result.stdout)
    assert {"python", "register", "numpy", "torch"} <= set(data["versions"])
    assert {"default", "lung", "sceneflow", "shapes"} <= set(data["presets"])
    assert set(data["formats"]) == set(SUPPORTED_EXTENSIONS)
    assert {".ply", ".csv", ".npz", ".vtk"} <= set(data["formats"])
    assert data["devices"]["cpu_threads"] >= 1 and isinstance(data["devices"]["cuda"], list)
    assert isinstance(data["models"], list)
    for model in data["models"]:
        assert {"name", "path", "card", "preset", "steps", "validation"} <= set(model)


def test_info_table_on_stdout():
    result = invoke(["info"])
    assert result.exit_code == 0, stderr_of(result)
    assert "sceneflow" in result.stdout and ".laz" in result.stdout
    assert stderr_of(result) == ""


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"register {metadata.version('register-ot')}"


def test_export_is_a_command_not_a_source_file(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code in (0, None)
    assert "--affine-only" in capsys.readouterr().out


# ------------------------------------------------------------------------- 7. help and imports


def test_help_mentions_commands():
    result = invoke(["--help"])
    assert result.exit_code == 0
    assert "warp" in result.stdout and "info" in result.stdout and "run" in result.stdout


def test_main_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "warp" in out and "info" in out


def test_import_and_help_do_not_load_heavy_modules():
    code = textwrap.dedent(
        """
        import json, sys
        import register.app.cli

        def heavy():
            return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pyvista", "vtk", "vtkmodules"))

        after_import = heavy()
        try:
            register.app.cli.main(["--help"])
        except SystemExit as exc:
            status = exc.code
        print(json.dumps({"import": after_import, "help": heavy(), "status": status}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["import"] == [], f"import register.app.cli loads {report['import']}"
    assert report["help"] == [], f"register --help loads {report['help']}"
    assert report["status"] in (0, None)


# ------------------------------------------------------------------------- 8. screenshot


def test_screenshot_renders_a_png(pair, tmp_path):
    src, tgt = pair
    shot = tmp_path / "qa.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "register.app.cli",
            src,
            tgt,
            "-o",
            tmp_path / "out",
            "-q",
            "--screenshot",
            shot,
        ]
        + CHEAP,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=SUBPROCESS_TIMEOUT,
    )
    err = ANSI.sub("", proc.stderr)
    if proc.returncode != 0 and (
        "rendering failed" in err or (proc.returncode < 0 and re.search(r"EGL|display|OpenGL|GLX", err))
    ):
        pytest.skip(f"off-screen rendering is not possible on this machine: {err.strip()[-300:]}")
    assert proc.returncode == 0, err
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000
    assert listing(tmp_path) == {"out", "qa.png"}
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 20, f"only {len(colours)} colours: a blank picture?"
    # Not mostly one colour: the background must not cover the whole picture.
    assert max(count for count, _ in colours) < 0.999 * sum(count for count, _ in colours)


def test_screenshot_refuses_existing_png(pair, tmp_path):
    src, tgt = pair
    shot = tmp_path / "qa.png"
    shot.write_bytes(b"old")
    result = invoke(["run", src, tgt, "-o", tmp_path / "out", "-q", "--screenshot", shot, *CHEAP])
    assert_input_error(result, "--screenshot", "qa.png", "--overwrite")
    assert shot.read_bytes() == b"old"
    assert listing(tmp_path) == {"qa.png"}


def test_library_argument_names_become_the_options_in_messages():
    """The library names arguments (``device='cuda'``) and config keys; the command line says
    the option that sets them, from one table."""
    from register.app.cli.common import cli_message

    assert (
        cli_message("device='cuda': no CUDA; use device='cpu'") == "--device cuda: no CUDA; use --device cpu"
    )
    assert cli_message("overrides='x': expected TABLE.KEY=VALUE") == "--set x: expected TABLE.KEY=VALUE"
    assert cli_message("read with drop_nan=True to drop them") == "read with --drop-nan to drop them"
    assert cli_message("pipeline.stages has 'flow': drop it") == "--stages flow: drop it"
    assert cli_message("run: pipeline.stages = ['affine', 'spline']") == "run: --stages affine,spline"
    # other config keys stay (--set takes them); a key containing an argument name is left alone
    assert cli_message("spline.sigmas = [inf]: must be finite") == "spline.sigmas = [inf]: must be finite"
    assert cli_message("pipeline.device_hint=1") == "pipeline.device_hint=1"
    assert cli_message("/data/config=1/src.ply: file not found") == "/data/config=1/src.ply: file not found"


def test_library_messages_name_no_command_line_option():
    """Messages of library modules (everything outside register/app) name arguments and config
    keys, not options of the command line."""
    import ast

    root = Path(__file__).resolve().parents[1] / "register"
    found = []
    for path in root.rglob("*.py"):
        if "app" in path.relative_to(root).parts or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for part in ast.walk(node.exc):
                    text = part.value if isinstance(part, ast.Constant) else None
                    if isinstance(text, str) and re.search(r"(^|[\s(`'])--[a-z]", text):
                        found.append(f"{path.relative_to(root)}:{node.lineno}: {text[:60]}")
    assert not found, "\n".join(found)


def test_progress_is_one_timestamped_line_per_step_when_stderr_is_a_file(run):
    """CliRunner's stderr is not a terminal, as a SLURM log is not: plain lines, no spinner."""
    result, _ = run
    lines = stderr_of(result).splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
    for label in ("affine RobOT", "spline RobOT", "reliability report"):
        assert any(re.fullmatch(rf"{stamp} {label}: started", line) for line in lines), lines
        assert any(re.fullmatch(rf"{stamp} {label}: done in [\d.]+ s", line) for line in lines), lines
    for label in ("affine RobOT", "spline RobOT"):  # the stages' levels as they pass
        assert any(re.fullmatch(rf"{stamp} {label}: level 1/\d after [\d.]+ s", line) for line in lines), (
            lines
        )


def test_step_labels_name_the_candidate_frame():
    from register.app.cli.register_cmd import step_label

    assert step_label("spline") == "spline RobOT"
    assert step_label("flow (frame z,-x,-y)") == "flow network (frame z,-x,-y)"


def test_json_on_failure_is_an_object_naming_the_file_or_option(tmp_path):
    """With --json, a failing command still answers on stdout: error, exit code, and the file or
    option the message names (the same line is on stderr)."""
    missing = tmp_path / "nosuch.ply"
    result = invoke(["run", missing, missing, "-o", tmp_path / "out", "--json"])
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["exit_code"] == 2 and answer["file"] == str(missing) and "not found" in answer["error"]
    assert answer["error"] in stderr_of(result).replace("\n", " ") or "error:" in stderr_of(result)
    src, tgt = write_pair(tmp_path)
    result = invoke(["run", src, tgt, "-o", tmp_path / "out2", "--json", "--device", "cuda:99"])
    if result.exit_code == 2:  # no such CUDA device here (or none at all)
        answer = json.loads(result.stdout)
        assert answer["option"] == "--device" and answer["exit_code"] == 2
