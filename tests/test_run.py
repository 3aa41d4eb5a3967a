"""``optsearch run`` end to end on a tiny model: outputs, their agreement, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner, Result

from optsearch.cli.main import cli
from optsearch.render.report import summary_lines
from optsearch.results.result import RunResult


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "result"
    result = _run(
        "run", files["model"], "--data", files["data"], "--eps", "0.02", "--out", out, "--criterion", "paper",
        "--method", "paper",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_outputs_are_all_there(finished: Path) -> None:
    names = sorted(p.name for p in finished.iterdir())
    assert names == [
        "bitwidths.png",
        "formats.csv",
        "formats.json",
        "loss_steps.png",
        "quantized.keras",
        "report.md",
        "search_log.jsonl",
    ]
    assert not [p for p in finished.parent.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_formats_json_round_trips_and_agrees_with_the_log(finished: Path) -> None:
    data = json.loads((finished / "formats.json").read_text())
    result = RunResult.from_dict(data)
    assert json.loads(json.dumps(result.to_dict())) == data
    log = [json.loads(line) for line in (finished / "search_log.jsonl").read_text().splitlines()]
    assert result.evaluations == sum(not entry["cached"] for entry in log)
    assert {entry["tensor"] for entry in log} <= {str(t) for t in result.formats}
    for layer in result.layers:
        for kind, tensor in layer.tensors.items():
            assert tensor.loss <= tensor.eps
            if tensor.evaluations:
                assert any(
                    e["tensor"] == f"{layer.name}:{kind}"
                    and (e["bw"], e["f"]) == (tensor.bw, tensor.f)
                    and e["accepted"]
                    for e in log
                )
    # Dependent search: the last decision's loss is the loss of the whole quantized network.
    assert result.accuracy["search"].quantized_loss == result.steps[-1]["loss"]
    assert result.accuracy["search"].quantized_loss <= result.eps
    assert set(result.accuracy) == {"search", "held_out"}
    assert result.versions["tensorflow"] and result.versions["keras"]


def test_csv_has_a_row_per_tensor(finished: Path) -> None:
    rows = list(csv.DictReader((finished / "formats.csv").open()))
    result = RunResult.from_dict(json.loads((finished / "formats.json").read_text()))
    assert {(r["layer"], r["tensor"]): (int(r["bw"]), int(r["f"])) for r in rows} == {
        (t.layer, t.kind): (f.bw, f.f) for t, f in result.formats.items()
    }


def test_report_mentions_every_layer_and_both_baselines(finished: Path) -> None:
    report = (finished / "report.md").read_text()
    result = RunResult.from_dict(json.loads((finished / "formats.json").read_text()))
    for layer in result.layers:
        assert f"| {layer.name} |" in report
    assert "uniform 8-bit" in report and "float32" in report and "held-out" in report
    assert "ap_fixed<" in report
    # c1 reads the Rescaling's float output and out the BatchNorm's: the report says what that means.
    assert result.model.float_inputs == {"c1": "Rescaling 'scale'", "out": "BatchNormalization 'bn1'"}
    assert "**Float between quantizers.** 2 of 2 quantizable layers read a real-valued input" in report
    assert "c1 (Rescaling 'scale'), out (BatchNormalization 'bn1')" in report
    assert summary_lines(result)[-1].startswith("note: 2 of 2 layers read a float input")


def test_quantized_model_reloads_in_safe_mode_with_the_reported_accuracy(
    finished: Path, files: dict[str, Path]
) -> None:
    import optsearch.model.quantizer_layer  # noqa: F401  (registers the quantizer layer)
    from optsearch.data import load_npz, split

    model = keras.saving.load_model(finished / "quantized.keras", compile=False, safe_mode=True)
    result = RunResult.from_dict(json.loads((finished / "formats.json").read_text()))
    search, held_out = split(load_npz(files["data"]), 0.5, 0)
    assert held_out is not None
    for name, part in (("search", search), ("held_out", held_out)):
        predicted = np.argmax(model.predict(part.x.astype(np.float32), verbose=0), axis=1)
        assert float(np.mean(predicted == part.y)) == result.accuracy[name].quantized


def test_evaluate_applies_a_formats_file(finished: Path, files: dict[str, Path]) -> None:
    result = _run("evaluate", files["model"], "--data", files["data"], "--formats", finished / "formats.json")
    assert result.exit_code == 0, result.output
    found = RunResult.from_dict(json.loads((finished / "formats.json").read_text()))
    assert f"formats.json {found.accuracy['search'].quantized:.4%}" in result.output
    assert "less than 8-bit" in result.output


def test_costs_hand_computed_on_the_tiny_model(finished: Path) -> None:
    """c1: 3x3x1x4 kernel over 6x6 outputs; out: 144 inputs x 3 classes (spec §8)."""
    result = RunResult.from_dict(json.loads((finished / "formats.json").read_text()))
    c1, out = result.layers
    assert (c1.macs, c1.weights, c1.biases, c1.activations) == (36 * 9 * 4, 36, 4, 144)
    assert (out.macs, out.weights, out.biases, out.activations) == (144 * 3, 432, 3, 3)
    bw = {(layer.name, k): t.bw for layer in result.layers for k, t in layer.tensors.items()}
    assert result.costs["quantized"].multiply_cost == (
        c1.macs * bw["c1", "W"] * bw["c1", "A"] + out.macs * bw["out", "W"] * bw["out", "A"]
    )
    assert (
        result.costs["quantized"].bops
        == c1.macs * bw["c1", "W"] * 8 + out.macs * bw["out", "W"] * bw["c1", "A"]
    )
    assert result.costs["float32"].memory_bits_total == 32 * (36 + 4 + 144 + 432 + 3 + 3)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--eps", "1.5"], "--eps"),
        (["--eps", "0"], "--eps"),
        (["--allocation", "cubic"], "--allocation"),
        (["--order", "WWA"], "--order WWA: give each of W, B, A once"),
        (["--bw0", "1", "8", "8"], "--bw0"),
        (["--layer-order", "sideways"], "--layer-order"),
    ],
)
def test_bad_settings_write_nothing(
    files: dict[str, Path], tmp_path: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "out"
    result = _run(
        "run", files["model"], "--data", files["data"], "--out", out, "--criterion", "paper",
        "--method", "paper", *args,
    )  # fmt: skip
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_refused_unless_overwrite(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _run("run", files["model"], "--data", files["data"], "--out", out, "--criterion", "paper")
    assert result.exit_code == 2 and "exists" in result.output and "--overwrite" in result.output
    assert (out / "keep.txt").read_text() == "mine"


def test_formats_file_that_does_not_match_the_model(
    finished: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    data = json.loads((finished / "formats.json").read_text())
    data["layers"][0]["name"] = "other"
    bad = tmp_path / "formats.json"
    bad.write_text(json.dumps(data))
    result = _run("evaluate", files["model"], "--data", files["data"], "--formats", bad)
    assert result.exit_code == 2 and "does not match the model" in result.output and "c1:W" in result.output
    result = _run("evaluate", files["model"], "--data", files["data"], "--formats", tmp_path / "none.json")
    assert result.exit_code == 2 and "formats file not found" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--independent", "--eps", "0.005"],
        ["--layer-order", "reverse", "--order", "AWB", "--allocation", "quadratic"],
        ["--interleave", "--budget", "A", "exponential", "0.5", "1.0", "--search-fraction", "1.0"],
    ],
)
def test_other_modes_and_orders_run(files: dict[str, Path], tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out"
    result = _run(
        "run", files["model"], "--data", files["data"], "--out", out, "--criterion", "paper",
        "--method", "paper", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "formats.json").read_text())
    assert len(data["steps"]) == 6
    if "--independent" in args:
        assert data["settings"]["independent"] and data["settings"]["bw0"] == {"W": 8, "B": 8, "A": 8}
        assert all(t["eps"] == 0.005 for layer in data["layers"] for t in layer["tensors"].values())
    if "--search-fraction" in args:
        assert "held_out" not in data["accuracy"]


def test_memory_as_the_target_counts_it_is_in_every_output(finished: Path) -> None:
    """Weights in flash (packed and as C arrays) and the activation arena's peak, beside eq. 7's sum."""
    data = json.loads((finished / "formats.json").read_text())
    for name in ("quantized", "uniform8", "float32"):
        costs = data["costs"][name]
        assert costs["weights_bytes"] <= costs["weights_bytes_aligned"]
        assert costs["peak_activation_bytes"] <= costs["peak_activation_bytes_aligned"]
        assert costs["peak_step"]
    # float32 stores every value in 4 bytes: 475 weights and biases of the tiny model.
    assert data["costs"]["float32"]["weights_bytes"] == 4 * (36 + 4 + 432 + 3)
    report = (finished / "report.md").read_text()
    assert "weights memory, packed (bytes)" in report and "peak activation memory, packed" in report
