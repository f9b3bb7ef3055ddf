"""The wheel carries the whole package: every module, the presets of the top-level folder
``pipelines/`` (as ``register/pipelines``) and the bundled model weights; installed into an empty
venv it runs without open3d and lists its models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (a build writes build/ and *.egg-info beside them)."""
    tree, out = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tree / name)
    for name in ("register", "pipelines"):
        shutil.copytree(REPO / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(tree),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    (found,) = out.glob("register_ot-*.whl")
    return found


def test_the_package_list_names_every_package_folder():
    listed = set(_project()["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "register").rglob("__init__.py")
    } | {"register.pipelines"}
    assert listed == on_disk


def test_the_wheel_holds_every_module_preset_and_weight(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "register").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    presets = {
        "register/pipelines/" + p.relative_to(REPO / "pipelines").as_posix()
        for p in (REPO / "pipelines").rglob("*.toml")
    }
    assert {"register/pipelines/lung.toml", "register/pipelines/fallback/lung.toml"} <= presets <= names
    weights = {
        p.relative_to(REPO).as_posix() for p in (REPO / "register/models/weights").iterdir() if p.is_file()
    }
    assert weights and weights <= names
    # The distribution is named register-ot; the import package stays register.
    assert any(n.startswith("register_ot-") and n.endswith(".dist-info/METADATA") for n in names)


def test_presets_load_from_the_unpacked_wheel(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from register.config import PRESET_DIR, load_config;"
        "print(PRESET_DIR); load_config('lung'); load_config('fallback/lung')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True
    )
    assert Path(out.stdout.strip()) == tmp_path / "register" / "pipelines"


@pytest.mark.slow
def test_the_wheel_installs_into_an_empty_venv_without_open3d(wheel, tmp_path):
    """Installs the wheel and its dependencies (from the configured package index) into a new venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # The CPU build of PyTorch first, as setup.sh does.
    subprocess.run([py, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True)
    absent = subprocess.run([py, "-c", "import open3d"], capture_output=True)
    assert absent.returncode != 0
    info = subprocess.run(
        [str(venv / "bin" / "register"), "info"], check=True, capture_output=True, text=True
    )
    for model in ("lung", "sceneflow", "shapes"):
        assert model in info.stdout
