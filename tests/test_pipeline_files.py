"""The preset files of ``pipelines/`` and the example user pipelines beside them: each preset
says what it assumes, each example loads by path and registers a pair with ``-p FILE.toml``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from register.app.cli import app
from register.config import PRESET_DIR, load_config, preset_names

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "pipelines" / "examples").glob("*.toml"))


def test_presets_are_the_top_level_pipelines_folder():
    assert (
        PRESET_DIR == REPO / "pipelines"
        or (PRESET_DIR / "lung.toml").read_text() == (REPO / "pipelines" / "lung.toml").read_text()
    )
    assert preset_names() == ["default", "lung", "rigid", "sceneflow", "shapes"]


@pytest.mark.parametrize("name", ["default", "lung", "rigid", "sceneflow", "shapes", "fallback/lung"])
def test_each_preset_opens_with_a_comment_on_what_it_assumes(name):
    first = (PRESET_DIR / f"{name}.toml").read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 30


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_pipelines_load_by_path(path):
    assert len(EXAMPLES) >= 2
    cfg = load_config(str(path))
    assert cfg.pipeline.stages
    assert f"-p pipelines/examples/{path.name}" in path.read_text()


def test_an_example_pipeline_registers_the_lung_sample(tmp_path):
    out = tmp_path / "out"
    args = [
        "run",
        str(REPO / "data_samples" / "lung_source.ply"),
        str(REPO / "data_samples" / "lung_target.ply"),
        "-p",
        str(REPO / "pipelines" / "examples" / "lung_affine_only.toml"),
        "-o",
        str(out),
        "--json",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["name"] for s in metrics["stages"]] == ["affine"]
    assert metrics["chamfer_after"] < 0.7 * metrics["chamfer_before"]
