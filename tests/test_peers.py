"""The TFLite peer (optsearch.run.tflite) and scripts/bench_peers.py on a tiny CNN built here (issue 22)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import keras
import numpy as np
import pytest
from conftest import script_module

from optsearch.run.tflite import run_tflite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with script_module(ROOT / "scripts" / "bench_peers.py") as module:
        yield module


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


def test_script_end_to_end(
    tiny: tuple[Path, Path, keras.Model, np.ndarray], tmp_path: Path, bench: ModuleType
) -> None:
    path, data, _, _ = tiny
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
    parts = json.loads((tmp_path / "peers" / "tiny-parts.json").read_text())["rows"]
    assert [r["name"] for r in parts] == [
        "uniform 8-bit, weights and biases only",
        "uniform 8-bit, activations only",
    ]
    assert parts[0]["weights_bytes"] == rows[uniform8]["weights_bytes"]  # the same formats, fewer applied
    assert all(r["samples"] == 20 for r in parts)
    page = (tmp_path / "peers.md").read_text()
    assert "## tiny" in page and "| TFLite int8 |" in page and "| optsearch uniform 8-bit |" in page
    assert "optsearch pareto, eps 1% | not run: not measured yet" in page
    assert "configs/peers.yaml --only 'tiny-paper-eps0.005'" in page  # the command that makes the row
    assert "--fold-bn exact" not in page.split("## tiny")[1]  # only FOLD_BN_MODELS have that search
    # --render-only reads the cache and writes the same page
    assert bench.main(["--render-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "peers.md").read_text() == page


def test_stored_curves_answer_the_min_weights_rows(
    tiny: tuple[Path, Path, keras.Model, np.ndarray], tmp_path: Path, bench: ModuleType
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


def test_batch_searches_are_measured_on_the_held_out_half(
    tiny: tuple[Path, Path, keras.Model, np.ndarray], tmp_path: Path, bench: ModuleType
) -> None:
    """An Alg. 2 search of configs/peers.yaml's shape, finished under --batch-root: measured once on
    the held-out half (counts, the exact network), kept with its small files, and on the page with
    accuracy, interval and both memories."""
    from click.testing import CliRunner

    from optsearch.cli.main import cli

    path, data, _, _ = tiny
    folder = tmp_path / "batch" / "runs" / "peers" / "tiny-paper-eps0.005"
    options = ["--method", "paper", "--eps", "0.005", "--criterion", "paper", "--search-fraction", "0.5"]
    ran = CliRunner().invoke(cli, ["run", str(path), "--data", str(data), *options, "--out", str(folder)])
    assert ran.exit_code == 0, ran.output
    argv = ["--models", "tiny", "--model-dir", str(path.parent), "--data", str(data)]
    argv += ["--batch-root", str(tmp_path / "batch"), "--out", str(tmp_path / "docs")]
    assert bench.main([*argv, "--runs", str(tmp_path / "answers")]) == 0
    kept = tmp_path / "docs" / "peers" / "searches" / "tiny-paper-eps0.005"
    assert {p.name for p in kept.iterdir()} >= {"measured.json", "formats.json", "verify_held_out.json"}
    rows = json.loads((tmp_path / "docs" / "peers" / "tiny-searches.json").read_text())["rows"]
    found = next(r for r in rows if r["name"] == "optsearch Alg. 2, eps 0.5%")
    result = json.loads((folder / "formats.json").read_text())
    assert found["samples"] == result["data"]["held_out_samples"] > 50
    assert found["weights_bytes"] == result["costs"]["quantized"]["weights_bytes"]
    assert found["peak_activation_bytes"] == result["costs"]["quantized"]["peak_activation_bytes"]
    correct = found["float_correct"] - found["losses"] + found["gains"]
    assert correct == round(found["accuracy"] * found["samples"])
    low, high = found["accuracy_interval"]
    assert low <= found["accuracy"] <= high
    page = (tmp_path / "docs" / "peers.md").read_text()
    assert "| optsearch Alg. 2, eps 0.5% | " in page and "| optsearch Alg. 2, eps 2% | not run" in page


def _row(name: str, loss: float, weights: int, losses: int, gains: int) -> dict[str, object]:
    return {"name": name, "loss": loss, "weights_bytes": weights, "losses": losses, "gains": gains,
            "samples": 1000}  # fmt: skip


def test_verdict_says_by_how_much_a_model_misses(bench: ModuleType) -> None:
    tflite = _row("TFLite int8", 0.004, 1000, 10, 6)
    small = _row("optsearch small", 0.010, 500, 15, 5)  # 50% less, 0.6 points and 6 flips worse
    big = _row("optsearch big", 0.002, 700, 7, 5)  # no worse, but only 30% less
    said = bench.verdict([tflite, small, big])
    assert said.startswith("target **not met**")
    assert (
        "the lowest loss is 1.00% (optsearch small, 50.0% less), 0.60 points higher, +6 net flipped" in said
    )
    assert (
        "optsearch big (0.20%), has 30.0% less weights memory, 100 bytes more than the target's 600" in said
    )
    met = bench.verdict([tflite, _row("optsearch good", 0.003, 550, 8, 5)])
    assert met.startswith("target **met** by 1 of 1") and "45.0% smaller" in met
    worse = bench.verdict([tflite, _row("optsearch worse", 0.006, 900, 11, 5)])
    assert "no row is as low; the lowest, optsearch worse, lost 0.60% (0.20 points higher, +2 net" in worse


def test_layer_gaps_name_the_layers_a_per_channel_format_helps_most(bench: ModuleType) -> None:

    def layer(name: str, tensor8: float, channel8: float) -> dict[str, object]:
        return {
            "layer": name,
            "per_tensor": {"8": {"loss": tensor8}, "6": {"loss": 2 * tensor8}},
            "per_channel": {"8": {"loss": channel8}, "6": {"loss": channel8}},
        }

    said = bench._layer_gaps([layer("a", 0.01, 0.0), layer("b", 0.05, 0.01), layer("c", 0.0, 0.0)], top=2)
    assert said.startswith("at 8 bits per tensor -> per channel, the largest gaps: b 5.00% -> 1.00%, a 1.00%")
    assert (
        "at 6 bits per tensor -> per channel, the largest gaps: b 10.00% -> 1.00%, a 2.00% -> 0.00%" in said
    )
