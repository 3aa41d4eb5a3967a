"""The guarded criterion end to end (issue 20): the default of `run`, its budget floor, its refusal
when the data cannot certify eps, and the uncertainty every output carries."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner, Result

from optsearch.cli.main import cli
from optsearch.core.confidence import certifiable_loss

N = 2400


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def larger(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny model's own labels on 2,400 images, 5% of them flipped: enough to certify."""
    model = keras.saving.load_model(files["model"])
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
    y = np.argmax(model.predict(x.astype(np.float32), verbose=0), axis=1)
    flip = rng.random(N) < 0.05
    y[flip] = (y[flip] + 1) % 3
    path = tmp_path_factory.mktemp("guarded") / "larger.npz"
    np.savez_compressed(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def guarded(files: dict[str, Path], larger: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("guarded-run") / "result"
    result = _run("run", files["model"], "--data", larger, "--eps", "0.01", "--method", "paper", "--out", out)
    assert result.exit_code == 0, result.output
    assert "held-out: eps 1.00%" in result.output and "at 95%" in result.output
    return out


def test_guarded_is_the_default_and_every_decision_meets_its_budget_by_its_bound(guarded: Path) -> None:
    data = json.loads((guarded / "formats.json").read_text())
    assert (data["settings"]["criterion"], data["settings"]["confidence"]) == ("guarded", 0.95)
    search = data["accuracy"]["search"]
    floor = certifiable_loss(search["samples"], search["float_model"], 0.95)
    for layer in data["layers"]:
        for t in layer["tensors"].values():
            if t["evaluations"]:
                assert t["loss"] <= t["bound"] <= t["eps"]
            assert t["eps"] >= floor - 1e-15  # no budget below what the data can certify
    raised = [t for layer in data["layers"] for t in layer["tensors"].values() if "scheduled_eps" in t]
    assert raised and all(t["scheduled_eps"] < t["eps"] == pytest.approx(floor) for t in raised)
    log = [json.loads(line) for line in (guarded / "search_log.jsonl").read_text().splitlines()]
    assert all("bound" in e for e in log) and all(e["bound"] <= e["eps"] for e in log if e["accepted"])


def test_every_accuracy_carries_its_interval_and_sample_count(guarded: Path) -> None:
    data = json.loads((guarded / "formats.json").read_text())
    for part in ("search", "held_out"):
        acc = data["accuracy"][part]
        intervals = acc["intervals"]
        low, high = intervals["quantized_loss"]
        assert low <= acc["quantized_loss"] <= high and intervals["confidence"] == 0.95
        assert acc["float_correct"] - acc["losses"] + acc["gains"] == round(acc["quantized"] * acc["samples"])
        assert intervals["quantized_loss_upper_bound"] <= high
    report = (guarded / "report.md").read_text()
    assert "- acceptance: guarded: the one-sided 95% upper confidence bound" in report
    assert f"**Held-out** ({data['accuracy']['held_out']['samples']} samples the search never saw)" in report
    assert "## Budgets finer than the data" in report and "Raised to" in report


def test_a_search_set_that_certifies_nothing_is_one_error_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _run("run", files["model"], "--data", files["data"], "--eps", "0.02", "--out", out)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0])
    message = errors[0]
    assert "cannot certify a loss of eps 2.00%" in message
    assert "needs at least 162 search samples" in message and "--criterion paper" in message
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_the_paper_criterion_warns_when_the_data_cannot_certify_eps(
    files: dict[str, Path], tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(files["model"]),
            "--data",
            str(files["data"]),
            "--eps",
            "0.02",
            "--criterion",
            "paper",
            "--out",
            str(tmp_path / "paper"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: the search set (60 samples" in result.output


@pytest.mark.parametrize("value", ["1.2", "0.5", "1", "-0.3"])
def test_confidence_outside_the_open_interval_is_refused(files: dict[str, Path], value: str) -> None:
    result = _run("run", files["model"], "--data", files["data"], "--confidence", value)
    assert result.exit_code == 2 and "--confidence" in result.output and "0.5<x<1" in result.output


def test_run_help_says_how_much_data_a_budget_needs() -> None:
    result = _run("run", "--help")
    assert result.exit_code == 0
    assert "How much data a budget needs" in result.output
    assert "500      0.603%" in result.output and "50,000" in result.output
    assert "--criterion [guarded|losses|paper]" in result.output and "--confidence" in result.output


def test_certification_tests_the_final_network_on_samples_no_decision_saw(
    files: dict[str, Path], larger: Path, tmp_path: Path
) -> None:
    out = tmp_path / "certified"
    result = _run(
        "run", files["model"], "--data", larger, "--eps", "0.02", "--certify-fraction", "0.4",
        "--method", "paper", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "certify: the searched network on" in result.output
    data = json.loads((out / "formats.json").read_text())
    assert data["settings"]["certify_fraction"] == 0.4
    search, certify = data["accuracy"]["search"], data["accuracy"]["certify"]
    assert search["samples"] + certify["samples"] == data["data"]["search_samples"]
    assert any(line.startswith("certify: the searched network") for line in data["log"])
    for layer in data["layers"]:
        for t in layer["tensors"].values():
            assert t.get("added_bits", 0) >= 0 and t["bw"] <= t["start"][0]
    added = sum(t.get("added_bits", 0) for layer in data["layers"] for t in layer["tensors"].values())
    steps = [line for line in data["log"] if line.startswith("certify: ") and "->" in line]
    assert len(steps) == added
    if "certified" in data["log"][-1] and "NOT" not in data["log"][-1]:
        assert certify["intervals"]["quantized_loss_upper_bound"] <= 0.02


def test_a_certification_set_too_small_to_certify_is_refused(
    files: dict[str, Path], larger: Path, tmp_path: Path
) -> None:
    out = tmp_path / "small"
    args = (
        "run",
        files["model"],
        "--data",
        larger,
        "--eps",
        "0.005",
        "--certify-fraction",
        "0.2",
        "--method",
        "paper",
        "--out",
        out,
    )
    result = _run(*args)
    assert result.exit_code == 2 and "--certify-fraction 0.2 leaves 240 samples" in result.output
    assert not out.exists()


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_a_lossless_candidate_always_meets_a_floored_budget(confidence: float) -> None:
    """The floor is computed as the evaluator computes a lossless candidate's bound, to the last bit
    (a closed form was one ulp above it at 99%, and the first tensor then failed at every BW)."""
    from optsearch.core.confidence import AcceptanceTest
    from optsearch.methods.opt_search import SearchSettings
    from optsearch.run.runner import budget_floor

    for samples, correct in ((1001, 1000), (5000, 4984), (4999, 3851)):
        search = SearchSettings(eps=0.01, criterion="guarded", confidence=confidence)
        floor = budget_floor(search, samples, correct / samples)
        assert AcceptanceTest("guarded", confidence).accepts(0, 0, correct, samples, floor)


def test_evaluate_prints_each_loss_with_its_interval_at_the_confidence_asked(files: dict[str, Path]) -> None:
    result = _run("evaluate", files["model"], "--data", files["data"], "--confidence", "0.9")
    assert result.exit_code == 0, result.output
    assert "(90% CI " in result.output and "L/G " in result.output
    assert _run("evaluate", files["model"], "--data", files["data"], "--confidence", "1.5").exit_code == 2
