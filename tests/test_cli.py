"""The command line: help, the happy path, and every bad input as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import pytest
from click.testing import CliRunner, Result
from conftest import N

from optsearch.cli.main import cli


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one error line naming what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_teaches() -> None:
    result = _run("--help")
    assert result.exit_code == 0 and "inspect" in result.output and "evaluate" in result.output
    help_text = _run("evaluate", "--help").output
    for option in ("--data", "--scale", "--resize", "--search-fraction", "--unsafe-load", "--save-quantized"):
        assert option in help_text


def test_inspect_lists_layers(files: dict[str, Path]) -> None:
    result = _run("inspect", files["model"])
    assert result.exit_code == 0, result.output
    assert "2 quantizable layers" in result.output
    assert "out (logits, softmax split off)" in result.output


def test_evaluate_reports_and_saves_a_model_that_reloads(files: dict[str, Path], tmp_path: Path) -> None:
    saved = tmp_path / "q" / "uniform.keras"
    result = _run("evaluate", files["model"], "--data", files["data"], "--save-quantized", saved)
    assert result.exit_code == 0, result.output
    assert "search" in result.output and "held-out" in result.output and "uniform 8-bit" in result.output
    assert saved.exists() and sorted(p.name for p in saved.parent.iterdir()) == ["uniform.keras"]
    import optsearch.model.quantizer_layer  # noqa: F401  (registers the layer for loading)

    reloaded = keras.saving.load_model(saved, compile=False, safe_mode=True)
    assert reloaded.get_layer("c1_act_quant").enabled


def test_no_split_and_one_hot_labels(files: dict[str, Path]) -> None:
    result = _run("evaluate", files["model"], "--data", files["one_hot"], "--search-fraction", "1.0")
    assert result.exit_code == 0, result.output
    assert "held-out" not in result.output
    assert f"search      {N} samples  float {110 / N:.4%}" in result.output


@pytest.mark.parametrize(
    ("model_key", "fragments"),
    [
        ("missing", ["model file not found", "missing.keras"]),
        ("not_a_model", ["notes.keras"]),
        ("plain", ["plain.keras", "no layer optsearch can quantize"]),
    ],
)
def test_bad_model(files: dict[str, Path], tmp_path: Path, model_key: str, fragments: list[str]) -> None:
    model = files.get(model_key, tmp_path / "missing.keras")
    out = tmp_path / "never.keras"
    _assert_user_error(_run("evaluate", model, "--data", files["data"], "--save-quantized", out), *fragments)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    _assert_user_error(_run("inspect", model), *fragments)


@pytest.mark.parametrize(
    ("data_key", "fragments"),
    [
        ("wrong_shape", ["wrong_shape.npz", "(10, 10, 1)", "(8, 8, 1)", "--resize"]),
        ("labels_out_of_range", ["labels_out_of_range.npz", "largest label is 7", "3 classes"]),
        ("labels_wrong_length", ["labels_wrong_length.npz", f"{N} samples but {N - 5} labels"]),
        ("nan", ["nan.npz", "NaN"]),
        ("empty", ["empty.npz", "no samples"]),
        ("missing", ["missing.npz"]),
    ],
)
def test_bad_data(files: dict[str, Path], tmp_path: Path, data_key: str, fragments: list[str]) -> None:
    data = files.get(data_key, tmp_path / "missing.npz")
    out = tmp_path / "never.keras"
    _assert_user_error(_run("evaluate", files["model"], "--data", data, "--save-quantized", out), *fragments)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_options(files: dict[str, Path], tmp_path: Path) -> None:
    _assert_user_error(
        _run("evaluate", files["model"], "--data", files["data"], "--save-quantized", tmp_path / "q.h5"),
        "must end in .keras",
    )
    result = _run("evaluate", files["model"], "--data", files["data"], "--search-fraction", "0")
    assert result.exit_code == 2 and "--search-fraction" in result.output
    result = _run("evaluate", files["model"], "--data", "imagenet")
    _assert_user_error(result, "imagenet", "mnist")


def test_console_script_exit_code_and_quiet_stderr(files: dict[str, Path]) -> None:
    """As a real process: exit 2, one line on stderr, none of TensorFlow's start-up chatter."""
    proc = subprocess.run(
        [sys.executable, "-m", "optsearch", "inspect", str(files["plain"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("Error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "absl" not in proc.stderr and "oneDNN" not in proc.stderr
