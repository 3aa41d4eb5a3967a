"""``optsearch run --method analytic`` (issue 23): no search, noise-gain-equalised precisions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from optsearch.cli.main import cli
from optsearch.methods.opt_search import SearchSettings
from optsearch.results.result import AnalyticRecord, RunResult


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def analytic_run(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analytic") / "result"
    result = _run(
        "run", files["model"], "--data", files["data"], "--method", "analytic", "--eps", "0.2",
        "--criterion", "paper", "--search-fraction", "1.0", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_writes_every_output_and_records_the_prediction(analytic_run: Path) -> None:
    names = {p.name for p in analytic_run.iterdir()}
    assert {"formats.json", "formats.csv", "report.md", "search_log.jsonl", "quantized.keras"} <= names
    data = json.loads((analytic_run / "formats.json").read_text())
    assert data["settings"]["method"] == "analytic"
    assert data["evaluations"] == 1
    record = data["analytic"]
    assert record["b_min"] >= 2 and record["samples"] == data["data"]["search_samples"]
    assert (
        0
        < record["bound"]
        <= record["budget"]
        == pytest.approx(0.2 * data["accuracy"]["search"]["float_model"])
    )
    # A sample turns from right to wrong only if its prediction changes: the loss is at most the
    # mismatch rate, which the bound predicts (first order; generous here).
    assert record["bound"] >= data["accuracy"]["search"]["quantized_loss"]
    log = [json.loads(line) for line in (analytic_run / "search_log.jsonl").read_text().splitlines()]
    tensors = [f"{layer['name']}:{kind}" for layer in data["layers"] for kind in layer["tensors"]]
    assert sorted(entry["tensor"] for entry in log) == sorted(tensors)
    assert sum(not entry["cached"] for entry in log) == 1
    assert any(line.startswith("analytic: B_min") for line in data["log"])
    for layer in data["layers"]:
        for tensor in layer["tensors"].values():
            assert tensor["rule"] == f"analytic: noise-gain equalised (B_min {record['b_min']})"


def test_report_shows_the_bound_beside_the_measured_loss(analytic_run: Path) -> None:
    report = (analytic_run / "report.md").read_text()
    assert "predicted mismatch bound" in report and "against the measured loss" in report


def test_result_round_trips_with_the_record(analytic_run: Path) -> None:
    data = json.loads((analytic_run / "formats.json").read_text())
    result = RunResult.from_dict(data)
    assert result.analytic is not None and result.analytic.b_min == data["analytic"]["b_min"]
    assert result.settings.search.method == "analytic"
    assert json.loads(json.dumps(result.to_dict())) == data
    searched = replace(result, analytic=None)
    assert "analytic" not in searched.to_dict()
    assert RunResult.from_dict(searched.to_dict()).analytic is None
    record = AnalyticRecord(0.01, 0.02, 5, 100)
    again = RunResult.from_dict(json.loads(json.dumps(replace(result, analytic=record).to_dict())))
    assert again.analytic == record


def test_method_is_validated() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        SearchSettings(method="exhaustive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="certify fraction"):
        SearchSettings(method="analytic", certify_fraction=0.3)


def test_cli_refuses_an_unknown_method(files: dict[str, Path], tmp_path: Path) -> None:
    result = _run(
        "run", files["model"], "--data", files["data"], "--method", "guess", "--out", tmp_path / "o"
    )
    assert result.exit_code != 0 and "analytic" in result.output


def test_cli_refuses_analytic_with_certification(files: dict[str, Path], tmp_path: Path) -> None:
    result = _run(
        "run", files["model"], "--data", files["data"], "--method", "analytic", "--certify-fraction", "0.3",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert result.exit_code == 2 and "certify fraction" in result.output
    assert not (tmp_path / "o").exists()
