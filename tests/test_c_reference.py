"""The exported C reference: it compiles with the system C compiler and reproduces the predictions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import images, make_result_dir, tiny_model

from optsearch.cli.main import cli
from optsearch.deploy import integer_ref

ROOT = Path(__file__).resolve().parents[1]
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on this machine")


def compile_and_run(folder: Path, prefix: str, x: np.ndarray) -> np.ndarray:
    """Build PREFIX_ref as the export's note says, run it on ``x``; rows of (class, scores...)."""
    assert CC is not None
    subprocess.run(
        [CC, "-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Werror", "-Wno-unused-function",
         "-o", f"{prefix}_ref", f"{prefix}_ref.c", "-lm"],
        cwd=folder, check=True, capture_output=True, text=True,
    )  # fmt: skip
    np.asarray(x, dtype=np.float32).tofile(folder / "input.f32")
    subprocess.run(
        [str(folder / f"{prefix}_ref"), "input.f32", str(len(x)), "output.txt"], cwd=folder, check=True
    )
    return np.loadtxt(folder / "output.txt", ndmin=2)


def keras_predictions(result_dir: Path, x: np.ndarray) -> np.ndarray:
    import keras

    import optsearch.model.quantizer_layer  # noqa: F401

    model = keras.saving.load_model(result_dir / "quantized.keras", compile=False)
    return np.argmax(model.predict(x, verbose=0), axis=1)


def test_tiny_model_in_c_equals_the_integer_reference(tmp_path: Path) -> None:
    """Integer-only layers (int64 accumulators) and real-input ones (doubles), bit for bit."""
    from optsearch.run.deployed import load_result

    x = images(64)
    result_dir = make_result_dir(tiny_model(), x, tmp_path / "result", bw=6)
    out = CliRunner().invoke(cli, ["export", str(result_dir), "--to", "c"])
    assert out.exit_code == 0, out.output
    assert "cc -std=c99 -O2 -ffp-contract=off -o tiny_ref tiny_ref.c -lm" in out.output
    folder = result_dir / "export" / "c"
    header = (folder / "tiny_model.h").read_text()
    assert "#define C2_W_BW 6" in header and "static const int8_t c2_w[216]" in header
    assert "#define OUT_A_BW 6" in header and "bn2_scale" in header
    rows = compile_and_run(folder, "tiny", x)
    netlist = load_result(result_dir).netlist
    scores = integer_ref.run(netlist, x)[integer_ref.scores_node(netlist)].real()
    assert np.array_equal(rows[:, 1:], scores)
    assert np.array_equal(rows[:, 0].astype(int), np.argmax(scores, axis=1))
    assert np.array_equal(rows[:, 0].astype(int), keras_predictions(result_dir, x))


def test_zoo_sequential_model_reproduces_the_predictions(tmp_path: Path) -> None:
    """models/sequential_mnist.keras at uniform 8-bit formats, on shipped images: C = tool's predictions."""
    from optsearch.model.loading import load_model
    from optsearch.run.deployed import load_result

    data = np.load(ROOT / "models" / "default_data.npz")
    x = data["x"][:24].astype(np.float32)
    model = load_model(ROOT / "models" / "sequential_mnist.keras")
    result_dir = make_result_dir(model, x, tmp_path / "zoo", name="sequential_mnist")
    assert CliRunner().invoke(cli, ["export", str(result_dir), "--to", "c"]).exit_code == 0
    rows = compile_and_run(result_dir / "export" / "c", "sequential_mnist", x)
    netlist = load_result(result_dir).netlist
    scores = integer_ref.run(netlist, x)[integer_ref.scores_node(netlist)].real()
    assert np.array_equal(rows[:, 1:], scores)
    predicted = rows[:, 0].astype(int)
    assert np.array_equal(predicted, keras_predictions(result_dir, x))
    assert np.mean(predicted == data["y"][:24]) > 0.9


def test_branched_model_gets_a_header_only(tmp_path: Path) -> None:
    import keras

    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = L.Rescaling(1 / 255)(inputs)
    a = L.Conv2D(2, 3, padding="same", activation="relu", name="a")(x)
    b = L.Conv2D(2, 1, activation="relu", name="b")(x)
    outputs = L.Dense(2, name="d")(L.Flatten()(L.Concatenate()([a, b])))
    result_dir = make_result_dir(keras.Model(inputs, outputs, name="fork"), images(8), tmp_path / "r")
    out = CliRunner().invoke(cli, ["export", str(result_dir), "--to", "c"])
    assert out.exit_code == 0, out.output
    assert "no C reference inference" in out.output and "not sequential" in out.output
    assert sorted(p.name for p in (result_dir / "export" / "c").iterdir()) == ["fork_model.h"]
