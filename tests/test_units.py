"""The units guard: presets with physical lengths refuse clouds on another scale, before any work."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from register.app.cli import app
from register.config import load_config, with_overrides
from register.errors import ConfigError, InputError
from register.io import read_points, write_points
from register.pipeline import check_extent, register

SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_cli(args) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})
    return result.exit_code, result.stdout, ANSI.sub("", result.stderr), result.exception


def scaled_copy(path: Path, folder: Path, factor: float) -> Path:
    cloud = read_points(path)
    cloud.points = cloud.points * factor
    out = folder / path.name
    write_points(out, cloud)
    return out


@pytest.mark.parametrize("preset", ["lung", "fallback/lung", "sceneflow"])
def test_presets_with_units_declare_a_range(preset):
    cfg = load_config(preset).pipeline
    assert cfg.units and 0 < cfg.min_extent < cfg.max_extent < np.inf


@pytest.mark.parametrize("preset", ["default", "shapes", "rigid"])
def test_scale_free_presets_check_nothing(preset):
    cfg = load_config(preset)
    huge = read_points(SAMPLES / "lung_source.ply")
    huge.points = huge.points * 1e6
    check_extent(cfg, huge)  # no error: relative lengths fit any scale


def test_lung_sample_passes_in_millimetres():
    cloud = read_points(SAMPLES / "lung_source.ply")
    check_extent(load_config("lung"), cloud, "the lung preset")


@pytest.mark.parametrize("factor, unit", [(1e-3, "metres"), (0.1, "centimetres")])
def test_lung_sample_in_other_units_is_refused(factor, unit):
    cloud = read_points(SAMPLES / "lung_source.ply")
    cloud.points = cloud.points * factor
    with pytest.raises(
        InputError, match=r"lung_source\.ply spans .* the units of the lung preset are millimetres"
    ):
        check_extent(load_config("lung"), cloud, "the lung preset")


def test_library_call_refuses_before_any_work():
    src = read_points(SAMPLES / "lung_source.ply").points / 1000
    tgt = read_points(SAMPLES / "lung_target.ply").points / 1000
    with pytest.raises(InputError, match="the units of the lung preset are millimetres"):
        register(src, tgt, "lung")


def test_cli_lung_sample_in_metres_exits_2_without_output(tmp_path):
    src = scaled_copy(SAMPLES / "lung_source.ply", tmp_path, 1e-3)
    tgt = scaled_copy(SAMPLES / "lung_target.ply", tmp_path, 1e-3)
    out = tmp_path / "out"
    code, stdout, err, exc = run_cli(["run", src, tgt, "-p", "lung", "-o", out])
    assert code == 2 and isinstance(exc, SystemExit), (code, err, exc)
    assert stdout == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    assert "lung_source.ply spans 0.366 units" in err and "lung preset" in err and "millimetres" in err
    assert not out.exists()


def test_cli_normalised_vessel_tree_with_lung_preset_exits_2(tmp_path, shared_data):
    folder = shared_data / "lung" / "vessels"
    if not (folder / "copd1_source.vtk").is_file():
        pytest.skip(f"{folder}/copd1_source.vtk absent")
    code, stdout, err, exc = run_cli(
        ["run", folder / "copd1_source.vtk", folder / "copd1_target.vtk", "-p", "lung", "-o", tmp_path / "o"]
    )
    assert code == 2 and isinstance(exc, SystemExit), (code, err, exc)
    assert "copd1_source.vtk spans" in err and "units of the lung preset are millimetres" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_the_range_can_be_switched_off():
    cfg = with_overrides(load_config("lung"), ["pipeline.min_extent=0", "pipeline.max_extent=inf"])
    cloud = read_points(SAMPLES / "lung_source.ply")
    cloud.points = cloud.points / 1000
    check_extent(cfg, cloud)


def test_an_empty_range_is_a_config_error():
    with pytest.raises(ConfigError, match="min_extent"):
        with_overrides(load_config("lung"), ["pipeline.min_extent=10", "pipeline.max_extent=5"])
