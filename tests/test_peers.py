"""The TFLite peer (optsearch.run.tflite) and scripts/bench_peers.py on a tiny CNN built here (issue 22)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from optsearch.run.tflite import run_tflite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, keras.Model, np.ndarray]:
    """Conv2D(4, 3x3)-ReLU-MaxPool-Flatten-Dense(3) on 8x8x1 inputs, labelled by its own predictions."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu", bias_initializer="random_normal", name="c"),
            L.MaxPooling2D(2, name="pool"),
            L.Flatten(name="flat"),
            L.Dense(3, bias_initializer="random_normal", name="d"),
        ]
    )
    x = np.random.default_rng(0).normal(size=(120, 8, 8, 1)).astype(np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    folder = tmp_path_factory.mktemp("tiny")
    model.save(folder / "tiny.keras")
    np.savez(folder / "tiny.npz", x=x, y=y)
    return folder / "tiny.keras", folder / "tiny.npz", model, x


def test_int8_conversion_agrees_and_counts_memory(tiny: tuple[Path, Path, keras.Model, np.ndarray]) -> None:
    path, _, model, x = tiny
    run = run_tflite(path, x[:60], x, "int8")
    float_pred = np.argmax(model.predict(x, verbose=0), axis=1)
    assert run.mode == "int8" and run.predictions.shape == (len(x),)
    assert np.mean(run.predictions == float_pred) >= 0.8
    # int8 weights + int32 biases: conv 3*3*1*4 + 4*4, dense 36*3 + 3*4
    assert run.weights_bytes == (36 + 16) + (108 + 12)
    # int8 activations per sample: input 64, conv 6x6x4 = 144, pool 36, flatten 36, dense 3
    assert 0 < run.peak_activation_bytes <= 64 + 144 + 36 + 36 + 3
    assert run.peak_activation_bytes == 64 + 144  # the conv reads the input and writes its output
    assert run.seconds > 0


def test_script_end_to_end(tiny: tuple[Path, Path, keras.Model, np.ndarray], tmp_path: Path) -> None:
    path, data, _, _ = tiny
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--models", "tiny", "--model-dir", str(path.parent), "--data", str(data), "--samples", "20"]
    assert bench.main([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "peers" / "tiny.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    hls4ml, uniform8 = "hls4ml ap_fixed<16,6> (AP_TRN, AP_WRAP)", "optsearch uniform 8-bit"
    assert set(rows) == {"float32", "TFLite int8", "TFLite int16x8", hls4ml, uniform8}
    assert rows[hls4ml]["weights_bytes"] == 2 * (36 + 4 + 108 + 3)  # 16 bits each, packed
    assert rows[uniform8]["weights_bytes"] == 36 + 4 + 108 + 3
    assert rows[hls4ml]["samples"] == rows[uniform8]["samples"] == 20
    assert rows["float32"]["samples"] == 20 and rows["float32"]["loss"] == 0.0
    assert rows["TFLite int8"]["weights_bytes"] == 172
    assert rows["float32"]["weights_bytes"] == 4 * (36 + 4 + 108 + 3)
    page = (tmp_path / "peers.md").read_text()
    assert "## tiny" in page and "| TFLite int8 |" in page and "| optsearch uniform 8-bit |" in page
    assert "optsearch pareto, eps 1% | not run: not measured yet" in page
    # --render-only reads the cache and writes the same page
    assert bench.main(["--render-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "peers.md").read_text() == page


def test_stored_curves_answer_the_min_weights_rows(
    tiny: tuple[Path, Path, keras.Model, np.ndarray], tmp_path: Path
) -> None:
    """The min. weights rows: optsearch pareto from a pareto search's curves, on its split, with the
    target's verdict and the plot on the page."""
    from click.testing import CliRunner

    from optsearch.cli.main import cli

    path, data, _, _ = tiny
    searched = tmp_path / "allocation" / "tiny-pareto"
    ran = CliRunner().invoke(
        cli,
        [
            "run",
            str(path),
            "--data",
            str(data),
            "--criterion",
            "paper",
            "--eps",
            "0.1",
            "--out",
            str(searched),
        ],
    )
    assert ran.exit_code == 0, ran.output
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "scripts" / "bench_peers.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--models", "tiny", "--model-dir", str(path.parent), "--data", str(data), "--samples", "60"]
    argv += ["--allocation-dir", str(tmp_path / "allocation"), "--stored-eps", "0.05", "0.2"]
    assert bench.main([*argv, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "docs")]) == 0
    stored = json.loads((tmp_path / "docs" / "peers" / "tiny-stored.json").read_text())
    rows = {r["name"]: r for r in stored["rows"]}
    assert set(rows) == {bench.stored_name(0.05), bench.stored_name(0.2)}
    for row in rows.values():
        folder = json.loads((Path(row["folder"]) / "formats.json").read_text())
        assert row["samples"] == folder["data"]["held_out_samples"] and row["weights_bytes"] > 0
        assert row["loss_interval"][0] <= row["loss"] <= row["loss_interval"][1]
        assert folder["settings"]["objective"] == "weights" and folder["pareto"]["curve_evaluations"] == 0
    page = (tmp_path / "docs" / "peers.md").read_text()
    assert "| optsearch pareto, eps 5%, min. weights |" in page and "tiny: target **" in page
    assert (tmp_path / "docs" / "peers" / "tiny.png").stat().st_size > 0
