"""The same model, data, settings and seed give a byte-identical formats.json (timings aside),
also across processes; the versions that decide the numbers are recorded in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from optsearch.cli.main import cli
from optsearch.results.result import TIMING_FIELDS, without_timings


def test_two_processes_write_the_same_formats_json(files: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "run",
        str(files["model"]),
        "--data",
        str(files["data"]),
        "--eps",
        "0.02",
        "--seed",
        "1",
        "--criterion",
        "paper",
    ]
    here = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "here")])
    assert here.exit_code == 0, here.output
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    there = subprocess.run(
        [sys.executable, "-m", "optsearch", *args, "--out", str(tmp_path / "there")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert there.returncode == 0, there.stderr
    a = json.loads((tmp_path / "here" / "formats.json").read_text())
    b = json.loads((tmp_path / "there" / "formats.json").read_text())
    assert set(a) - set(without_timings(a)) == set(TIMING_FIELDS)
    assert json.dumps(without_timings(a), indent=2) == json.dumps(without_timings(b), indent=2)
    # Byte for byte: the files differ only on the lines inside the timing fields.
    assert (tmp_path / "here" / "formats.csv").read_bytes() == (
        tmp_path / "there" / "formats.csv"
    ).read_bytes()
    for key in ("python", "tensorflow", "keras", "numpy", "machine", "cpu_flags", "onednn_opts"):
        assert a["versions"][key], key
