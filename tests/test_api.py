"""The public Python API: the README's example runs as written, and the API refuses bad input in one
line like the CLI does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optsearch
from optsearch.core.errors import OptsearchError

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The ```python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's Python API section has no python block"
    return match.group(1)


def test_the_readme_example_runs(tmp_path: Path) -> None:
    """Run in a fresh interpreter, in a folder holding the repository's models/, as a user would."""
    (tmp_path / "models").symlink_to(ROOT / "models")
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out loss" in done.stdout and "less than 8-bit" in done.stdout
    assert (tmp_path / "runs/api/formats.json").is_file()
    assert (tmp_path / "runs/api/export/hls4ml/hls4ml_config.json").is_file()


def test_import_is_light() -> None:
    """``import optsearch`` and building settings load no TensorFlow."""
    code = (
        "import sys, optsearch\n"
        "s = optsearch.make_settings('m.keras', 'mnist', eps=0.02, allocation='constant', method='paper')\n"
        "assert s.search.eps == 0.02 and s.search.allocation['W'].scheme == 'constant'\n"
        "print('tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_settings_are_checked_by_the_schema() -> None:
    with pytest.raises(OptsearchError, match="eps"):
        optsearch.make_settings("m.keras", "mnist", eps=2.0)
    with pytest.raises(OptsearchError, match="unknown setting 'epsilon'"):
        optsearch.make_settings("m.keras", "mnist", epsilon=0.01)


def test_bad_data_is_one_error() -> None:
    with pytest.raises(OptsearchError, match="one label per sample"):
        optsearch.search("m.keras", (np.zeros((3, 8, 8, 1)), np.zeros(2)))
    with pytest.raises(OptsearchError, match="data must be"):
        optsearch.search("m.keras", 42)


def test_every_public_name_resolves() -> None:
    for name in optsearch.__all__:
        assert getattr(optsearch, name) is not None
    with pytest.raises(AttributeError):
        _ = optsearch.nothing_here  # type: ignore[attr-defined]
