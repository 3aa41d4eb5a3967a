"""``--method pareto`` end to end on the tiny model (issue 21): the run writes its curves, front and
steps; ``optsearch pareto`` answers another budget from them without measuring a curve; a run
interrupted during the curves resumes without measuring them again; bad input is refused in one line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import optsearch.run.pareto_run as pareto_run
from optsearch.cli.main import cli
from optsearch.methods.sensitivity import CURVE_REACH


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _pareto_run(files: dict[str, Path], out: Path, *extra: object) -> Result:
    """A run of the default method (pareto: docs/allocation.md says why), which is not named."""
    return _run(
        "run", files["model"], "--data", files["data"], "--criterion", "paper", "--search-fraction", "1.0",
        "--eps", "0.1", "--out", out, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def result(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pareto") / "run"
    ran = _pareto_run(files, out)
    assert ran.exit_code == 0, ran.output
    return out


def test_run_records_curves_front_and_steps(result: Path) -> None:
    data = json.loads((result / "formats.json").read_text())
    record = data["pareto"]
    tensors = {f"{layer['name']}:{kind}" for layer in data["layers"] for kind in layer["tensors"]}
    assert {c["tensor"] for c in record["curves"]} == tensors
    assert record["reach"] == pytest.approx(CURVE_REACH * 0.1)
    assert record["curve_evaluations"] == sum(c["evaluations"] for c in record["curves"]) > 0
    assert data["evaluations"] == record["curve_evaluations"] + len(record["steps"])
    assert record["steps"][0]["action"] == "front"
    assert data["settings"]["method"] == "pareto" and data["settings"]["objective"] == "memory"
    assert data["accuracy"]["search"]["quantized_loss"] <= 0.1
    rows = list(csv.DictReader((result / "pareto.csv").open()))
    assert rows and {"memory_saving_vs_8bit", "measured_statistic"} <= set(rows[0])
    assert sum(bool(r["measured_statistic"]) for r in rows) == sum(
        s["action"] == "front" for s in record["steps"]
    )
    assert (result / "pareto.png").stat().st_size > 0
    assert "method pareto (not Alg. 2)" in (result / "report.md").read_text()
    log = [json.loads(line) for line in (result / "search_log.jsonl").read_text().splitlines()]
    assert {line["stage"] for line in log} >= {"sensitivity", "front"}


def test_another_budget_from_the_stored_curves(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "tighter"
    ran = _run("pareto", result, "--eps", "0.05", "--out", out)
    assert ran.exit_code == 0, ran.output
    data = json.loads((out / "formats.json").read_text())
    first = json.loads((result / "formats.json").read_text())
    assert data["pareto"]["curve_evaluations"] == 0 and data["pareto"]["curves_from"] == str(result)
    assert data["pareto"]["curves"] == first["pareto"]["curves"]
    assert data["settings"]["eps"] == 0.05
    assert data["evaluations"] == len(data["pareto"]["steps"]) < first["evaluations"]
    assert data["accuracy"]["search"]["quantized_loss"] <= 0.05
    assert "curves from" in (out / "report.md").read_text()


def test_another_objective_from_the_stored_curves(result: Path, tmp_path: Path) -> None:
    out = tmp_path / "flash"
    ran = _run("pareto", result, "--eps", "0.1", "--objective", "weights", "--out", out)
    assert ran.exit_code == 0, ran.output
    data = json.loads((out / "formats.json").read_text())
    first = json.loads((result / "formats.json").read_text())
    assert data["settings"]["objective"] == data["pareto"]["objective"] == "weights"
    assert data["pareto"]["curve_evaluations"] == 0 and data["pareto"]["curves"] == first["pareto"]["curves"]
    assert data["accuracy"]["search"]["quantized_loss"] <= 0.1
    bad = _run("pareto", result, "--eps", "0.1", "--objective", "speed", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--objective" in bad.output and not (tmp_path / "bad").exists()


def test_pareto_refuses_what_it_cannot_answer(result: Path, files: dict[str, Path], tmp_path: Path) -> None:
    beyond = _run("pareto", result, "--eps", "0.5", "--out", tmp_path / "x")
    assert beyond.exit_code == 2 and "reach" in beyond.output and "Traceback" not in beyond.output
    assert not (tmp_path / "x").exists()
    searched = tmp_path / "alg2"
    ran = _run(
        "run", files["model"], "--data", files["data"], "--criterion", "paper", "--search-fraction", "1.0",
        "--eps", "0.1", "--method", "paper", "--out", searched,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    other = _run("pareto", searched, "--eps", "0.05", "--out", tmp_path / "y")
    assert other.exit_code == 2 and "--method pareto` first" in other.output


def test_objective_and_method_are_checked(files: dict[str, Path], tmp_path: Path) -> None:
    alone = _run(
        "run", files["model"], "--data", files["data"], "--objective", "bops", "--method", "paper",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert alone.exit_code == 2 and "use --method pareto" in alone.output
    for alg2_only in (["--allocation", "constant"], ["--bw0", "8", "8", "8"], ["--delta", "0.001"]):
        refused = _run("run", files["model"], "--data", files["data"], *alg2_only, "--out", tmp_path / "o")
        assert refused.exit_code == 2 and "add --method paper" in refused.output, alg2_only
        assert "Traceback" not in refused.output and not (tmp_path / "o").exists()
    certify = _pareto_run(files, tmp_path / "c", "--certify-fraction", "0.3")
    assert certify.exit_code == 2 and "certify fraction" in certify.output


def test_bops_objective_runs(files: dict[str, Path], tmp_path: Path) -> None:
    ran = _pareto_run(files, tmp_path / "bops", "--objective", "bops")
    assert ran.exit_code == 0, ran.output
    data = json.loads((tmp_path / "bops" / "formats.json").read_text())
    assert data["pareto"]["objective"] == "bops" and data["settings"]["objective"] == "bops"


def test_resume_after_an_interruption_keeps_the_measured_curves(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "resumed"
    original = pareto_run.append_line
    written = [0]

    def interrupt_after_two(stream, line):  # type: ignore[no-untyped-def]
        original(stream, line)
        written[0] += 1
        if written[0] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pareto_run, "append_line", interrupt_after_two)
    first = _pareto_run(files, out)
    assert first.exit_code == 130 and "resume with" in first.output
    monkeypatch.setattr(pareto_run, "append_line", original)
    again = _pareto_run(files, out, "--resume")
    assert again.exit_code == 0, again.output
    data = json.loads((out / "formats.json").read_text())
    measured = [c for c in data["pareto"]["curves"] if c["evaluations"]]
    assert data["pareto"]["curve_evaluations"] == sum(c["evaluations"] for c in measured)
    assert "2 of" in again.output  # the two curves of the first attempt were not measured again


def test_a_batch_eps_sweep_measures_the_curves_once(files: dict[str, Path], tmp_path: Path) -> None:
    jobs = tmp_path / "sweep.yaml"
    jobs.write_text(
        f"out: {tmp_path / 'runs'}\n"
        "defaults: {criterion: paper, search_fraction: 1.0, method: pareto}\n"
        f"jobs:\n  - model: {files['model']}\n    data: {files['data']}\n    eps: [0.1, 0.05]\n"
    )
    ran = _run("batch", jobs)
    assert ran.exit_code == 0, ran.output
    results = {
        p.name: json.loads((p / "formats.json").read_text())
        for p in (tmp_path / "runs").iterdir()
        if (p / "formats.json").is_file()
    }
    assert len(results) == 2
    first, second = sorted(results.values(), key=lambda r: -r["settings"]["eps"])
    assert first["pareto"]["curve_evaluations"] > 0 and first["pareto"]["curves_from"] is None
    assert second["pareto"]["curve_evaluations"] == 0 and second["pareto"]["curves_from"]
    assert second["pareto"]["curves"] == first["pareto"]["curves"]


def test_sensitivity_analytic_predicts_the_curves(files: dict[str, Path], tmp_path: Path) -> None:
    ran = _pareto_run(files, tmp_path / "analytic", "--sensitivity", "analytic")
    assert ran.exit_code == 0, ran.output
    data = json.loads((tmp_path / "analytic" / "formats.json").read_text())
    assert data["settings"]["sensitivity"] == "analytic"
    assert data["pareto"]["curve_evaluations"] == 0 and data["pareto"]["curves_from"].startswith("analytic:")
    assert data["evaluations"] == len(data["pareto"]["steps"]) > 0
    assert data["accuracy"]["search"]["quantized_loss"] <= 0.1
    assert "curves predicted, not measured" in (tmp_path / "analytic" / "report.md").read_text()
    alone = _run(
        "run", files["model"], "--data", files["data"], "--sensitivity", "analytic", "--method", "paper",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert alone.exit_code == 2 and "use --method pareto" in alone.output
