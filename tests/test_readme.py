"""The README's Python blocks run as written, from the repository's folder layout (a temporary
working folder that sees ``data_samples/``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    (tmp_path / "data_samples").symlink_to(REPO / "data_samples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)
    assert os.listdir(tmp_path)  # the block ran to its end (it writes its transform)
    if "result" in namespace:
        assert namespace["result"].reliability.verdict == "ok"
        assert namespace["moved"].shape == namespace["landmarks"].shape
