"""Every run's prediction (issue 23): Sakr & Shanbhag's predicted bits beside the found bits, and
Thm. 1's bound of the found formats beside the measured mismatch, in formats.json, report.md and
the terminal summary; ``--predict-samples 0`` skips it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from optsearch.cli.main import cli
from optsearch.render.report import report_markdown, summary_lines
from optsearch.results.result import AnalyticRecord, RunResult


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _search(files: dict[str, Path], out: Path, *extra: object) -> Result:
    return _run(
        "run", files["model"], "--data", files["data"], "--eps", "0.2", "--criterion", "paper",
        "--search-fraction", "0.5", "--out", out, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def default_run(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("predicted") / "result"
    result = _search(files, out)
    assert result.exit_code == 0, result.output
    return out, result


def test_the_default_run_predicts_every_tensor(default_run: tuple[Path, Result]) -> None:
    out, _ = default_run
    data = json.loads((out / "formats.json").read_text())
    record = data["analytic"]
    tensors = {f"{layer['name']}:{kind}" for layer in data["layers"] for kind in layer["tensors"]}
    assert set(record["bits"]) == tensors
    assert all(1 <= bits <= 32 for bits in record["bits"].values())
    assert record["samples"] == min(500, data["data"]["search_samples"])
    assert 0 < record["bound"] <= record["budget"]
    assert record["found_bound"] > 0
    assert data["settings"]["predict_samples"] == 500
    for part in ("search", "held_out"):
        acc = data["accuracy"][part]
        # A sample is lost or gained only when its top-1 class changes: L + G <= mismatches <= n.
        assert acc["losses"] + acc["gains"] <= acc["mismatches"] <= acc["samples"]


def test_report_and_summary_set_the_prediction_beside_the_found_formats(
    default_run: tuple[Path, Result],
) -> None:
    out, cli_result = default_run
    result = RunResult.from_dict(json.loads((out / "formats.json").read_text()))
    report = (out / "report.md").read_text()
    assert report == report_markdown(result)
    assert "## Predicted without search (Sakr & Shanbhag)" in report
    record = result.analytic
    assert record is not None and record.bits is not None
    for layer in result.layers:
        row = next(
            line for line in report.splitlines() if line.startswith(f"| {layer.name} | ") and "/" in line
        )
        for kind, tensor in layer.tensors.items():
            assert f"{tensor.bw} / {record.bits[f'{layer.name}:{kind}']}" in row
    search = result.accuracy["search"]
    assert f"({search.mismatches} of {search.samples})" in report
    summary = summary_lines(result)
    assert any(line.startswith("predicted (Sakr & Shanbhag): mismatch bound") for line in summary)
    assert "predicted (Sakr & Shanbhag)" in cli_result.output


def test_predict_samples_zero_skips_it(files: dict[str, Path], tmp_path: Path) -> None:
    result = _search(files, tmp_path / "r", "--predict-samples", "0")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "formats.json").read_text())
    assert "analytic" not in data and "predict_samples" not in data["settings"]
    assert "Predicted without search" not in (tmp_path / "r" / "report.md").read_text()
    assert "prediction: noise gains" not in result.output


def test_predict_samples_is_validated(files: dict[str, Path], tmp_path: Path) -> None:
    result = _search(files, tmp_path / "r", "--predict-samples", "-1")
    assert result.exit_code == 2 and "predict" in result.output
    assert not (tmp_path / "r").exists()


def test_the_analytic_method_predicts_its_own_formats(files: dict[str, Path], tmp_path: Path) -> None:
    result = _search(files, tmp_path / "r", "--method", "analytic", "--predict-samples", "0")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "formats.json").read_text())
    record = data["analytic"]  # the method's own gains: --predict-samples 0 does not drop it
    found = {
        f"{layer['name']}:{kind}": t["bw"] for layer in data["layers"] for kind, t in layer["tensors"].items()
    }
    assert record["bits"] == found
    assert record["found_bound"] == pytest.approx(record["bound"])


def test_a_record_without_a_prediction_renders(default_run: tuple[Path, Result]) -> None:
    """No B_min within the budget: the bound of the found formats, and why there are no bits."""
    out, _ = default_run
    result = RunResult.from_dict(json.loads((out / "formats.json").read_text()))
    record = AnalyticRecord(None, 0.01, None, 100, found_bound=0.5, note="no B_min up to 24 brings it")
    report = report_markdown(replace(result, analytic=record))
    assert "50.00% for the found formats" in report and "No predicted precisions: no B_min" in report
    again = RunResult.from_dict(json.loads(json.dumps(replace(result, analytic=record).to_dict())))
    assert again.analytic == record


def test_session_9_analytic_records_read_without_a_prediction(default_run: tuple[Path, Result]) -> None:
    out, _ = default_run
    data = json.loads((out / "formats.json").read_text())
    data["analytic"] = {"bound": 0.004, "budget": 0.0099, "b_min": 5, "samples": 2000}
    result = RunResult.from_dict(data)
    assert result.analytic == AnalyticRecord(0.004, 0.0099, 5, 2000)
    assert "Predicted without search" not in report_markdown(result)
    assert json.loads(json.dumps(result.to_dict()))["analytic"] == data["analytic"]


def _no_constants(name: str) -> None:
    raise AssertionError(f"formats.json holds {name}, which strict JSON readers refuse")


def test_formats_json_is_strict_json(default_run: tuple[Path, Result]) -> None:
    out, _ = default_run
    data = json.loads((out / "formats.json").read_text(), parse_constant=_no_constants)
    assert data["timings"]["prediction_seconds"] > 0
    assert data["timings"]["total_seconds"] >= data["timings"]["prediction_seconds"]


def test_pruned_tensors_are_counted_beside_the_bound(default_run: tuple[Path, Result]) -> None:
    """A pruned tensor of non-zero values is no small rounding noise: the bound leaves it out and
    says so (it was ``inf%`` before)."""
    out, _ = default_run
    result = RunResult.from_dict(json.loads((out / "formats.json").read_text()))
    assert result.analytic is not None
    record = replace(result.analytic, found_bound=0.004, pruned=["c1:W", "c2:W"])
    report = report_markdown(replace(result, analytic=record))
    assert "0.40% for the found formats (without the 2 pruned tensors, c1:W, c2:W:" in report
    assert any("without 2 pruned tensors" in line for line in summary_lines(replace(result, analytic=record)))
    again = RunResult.from_dict(json.loads(json.dumps(replace(result, analytic=record).to_dict())))
    assert again.analytic == record
