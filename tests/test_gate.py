"""The CI gate: passes on its baseline, fails on planted regressions, says what changed, writes JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from optsearch.cli.main import cli
from optsearch.cli.options import EXIT_REGRESSION, EXIT_USER_ERROR
from optsearch.methods.opt_search import SearchSettings
from optsearch.results.gate import (
    GateError,
    Limits,
    compare,
    junit_xml,
    outcome_cases,
    read_snapshot,
    snapshot,
)
from optsearch.results.result import (
    Accuracy,
    Costs,
    DataInfo,
    LayerResult,
    ModelInfo,
    RunResult,
    TensorResult,
)
from optsearch.settings import DataSettings, RunSettings

SIZES = {"c1": (36, 4, 144, 1296), "out": (432, 3, 3, 432)}
"""weights, biases, activations per sample, MACs of the two layers."""


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _formats(
    bits: dict[str, dict[str, tuple[int, int]]] | None = None,
    held_out_loss: float | None = 0.004,
    eps: float = 0.01,
) -> dict[str, Any]:
    """A formats.json as `optsearch run` writes it (through RunResult.to_dict), for chosen formats."""
    bits = bits or {
        "c1": {"W": (6, 7), "B": (1, 0), "A": (8, 7)},
        "out": {"W": (4, 5), "B": (1, 0), "A": (7, 7)},
    }
    layers, memory, multiply = [], 0, 0
    for index, (name, tensors) in enumerate(bits.items(), start=1):
        weights, biases, activations, macs = SIZES[name]
        counts = {"W": weights, "B": biases, "A": activations}
        memory += sum(counts[k] * bw for k, (bw, _) in tensors.items())
        multiply += macs * tensors["W"][0] * tensors["A"][0]
        results = {
            k: TensorResult(bw, f, eps / 2, 0.0, 1.0, 8, (8, 4), (bw, f), (bw, f), "diagonal", 5)
            for k, (bw, f) in tensors.items()
        }
        layers.append(LayerResult(index, name, "Dense", "own", weights, biases, activations, macs, results))
    accuracy = {"search": Accuracy(60, 0.9, 0.9, 0.002, 0.9, 0.0)}
    if held_out_loss is not None:
        accuracy["held_out"] = Accuracy(60, 0.9, 0.9 * (1 - held_out_loss), held_out_loss, 0.9, 0.0)
    costs = {
        "quantized": Costs({"W": 0, "B": 0, "A": 0}, memory, multiply, multiply),
        "uniform8": Costs({"W": 0, "B": 0, "A": 0}, 8 * 622, 8 * 8 * 1728, 8 * 8 * 1728),
        "float32": Costs({"W": 0, "B": 0, "A": 0}, 32 * 622, 32 * 32 * 1728, 32 * 32 * 1728),
    }
    result = RunResult(
        model=ModelInfo(name="m", sha256="abc", input_shape=[12, 12, 1], classes=3),
        data=DataInfo(source="d.npz", search_samples=60, held_out_samples=60),
        settings=RunSettings(Path("m.keras"), DataSettings("d.npz"), SearchSettings(eps=eps)),
        layers=layers,
        accuracy=accuracy,
        costs=costs,
        steps=[],
        evaluations=10,
        timings={"total_seconds": 1.0},
        versions={},
    )
    return json.loads(json.dumps(result.to_dict()))


def _write(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "formats.json").write_text(json.dumps(data))
    return folder


def _worse(data: dict[str, Any]) -> dict[str, Any]:
    """The planted regression: c1's activations one bit wider (memory and multiply cost up)."""
    bits = {
        layer["name"]: {k: (t["bw"], t["f"]) for k, t in layer["tensors"].items()} for layer in data["layers"]
    }
    bits["c1"]["A"] = (9, 7)
    return _formats(bits)


def test_the_baseline_passes_against_itself() -> None:
    base = snapshot(_formats(), "base.json")
    outcome = compare(snapshot(_formats(), "run.json"), base, Limits())
    assert outcome.passed and outcome.verdict() == "pass" and not outcome.changes
    assert [f.name for f in outcome.findings] == ["held-out loss", "memory", "multiply cost", "formats"]
    assert "identical to the baseline (6 tensors)" in "\n".join(outcome.lines())


def test_a_planted_memory_regression_fails_layer_by_layer() -> None:
    outcome = compare(snapshot(_worse(_formats()), "run.json"), snapshot(_formats(), "base.json"), Limits())
    assert not outcome.passed and outcome.verdict() == "FAIL: memory, multiply cost"
    text = "\n".join(outcome.lines())
    assert "FAIL  memory: 408 bytes, +4.61% vs the baseline's 390 (tolerance 1.00%)" in text
    assert "c1: A (8, 7) -> (9, 7); memory 1,372 -> 1,516 bits (+144)" in text
    assert "1 of 6 tensors changed format (allowed; --exact fails on any change)" in text
    assert compare(snapshot(_worse(_formats()), "r"), snapshot(_formats(), "b"), Limits(tolerance=0.2)).passed


def test_held_out_loss_above_eps_or_the_set_limit() -> None:
    base = snapshot(_formats(), "b")
    lossy = snapshot(_formats(held_out_loss=0.015), "r")
    outcome = compare(lossy, base, Limits())
    assert outcome.verdict() == "FAIL: held-out loss"
    assert "1.500% > 1.000% (the run's eps); baseline 0.400%" in outcome.failures[0].message
    assert compare(lossy, base, Limits(max_loss=0.02)).passed
    assert not compare(snapshot(_formats(), "r"), base, Limits(max_loss=0.001)).passed
    no_split = compare(snapshot(_formats(held_out_loss=None), "r"), base, Limits())
    assert no_split.findings[0].name == "search loss (no held-out set)" and no_split.passed


def test_exact_fails_on_any_changed_format_even_a_cheaper_one() -> None:
    bits = {"c1": {"W": (5, 6), "B": (1, 0), "A": (8, 7)}, "out": {"W": (4, 5), "B": (1, 0), "A": (7, 7)}}
    cheaper = snapshot(_formats(bits), "r")
    base = snapshot(_formats(), "b")
    assert compare(cheaper, base, Limits()).passed
    exact = compare(cheaper, base, Limits(exact=True))
    assert exact.verdict() == "FAIL: formats" and "c1: W (6, 7) -> (5, 6)" in "\n".join(exact.lines())


def test_a_different_model_is_noted() -> None:
    other = _formats()
    other["layers"][1]["name"] = "logits"
    other["model"]["sha256"] = "def"
    outcome = compare(snapshot(other, "r"), snapshot(_formats(), "b"), Limits())
    text = "\n".join(outcome.lines())
    assert "model file differs" in text and "layers differ" in text
    assert (
        "logits: not in the baseline (new layer)" in text
        and "out: in the baseline but not in this result" in text
    )


def test_unreadable_baselines_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="not found"):
        read_snapshot(tmp_path / "none.json")
    with pytest.raises(GateError, match=r"has no formats\.json"):
        read_snapshot(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(GateError, match="not a JSON file"):
        read_snapshot(tmp_path / "bad.json")
    data = _formats()
    del data["costs"]["quantized"]["multiply_cost"]
    with pytest.raises(GateError, match="missing field 'multiply_cost'"):
        snapshot(data, "x.json")


def test_a_minimal_hand_written_baseline_is_enough() -> None:
    """The documented subset of formats.json: what the gate reads and nothing else."""
    minimal = {
        "settings": {"eps": 0.01},
        "accuracy": {"search": {"quantized_loss": 0.0}, "held_out": {"quantized_loss": 0.004}},
        "costs": {"quantized": {"memory_bits_total": 2624, "multiply_cost": 89280}},
        "layers": [
            {"name": n, "weights": w, "biases": b, "activations": a, "tensors": {"W": {"bw": 6, "f": 7}}}
            for n, (w, b, a, _) in SIZES.items()
        ],
    }
    assert snapshot(minimal, "hand.json").memory_bits == 2624


def test_junit_xml_lists_every_check_and_its_failure() -> None:
    outcome = compare(snapshot(_worse(_formats()), "run.json"), snapshot(_formats(), "base.json"), Limits())
    root = ET.fromstring(junit_xml("optsearch check", outcome_cases("optsearch.m", outcome)))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "2"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"held-out loss", "memory", "multiply cost", "formats"}
    failure = cases["memory"].find("failure")
    assert failure is not None and "+4.61%" in failure.get("message", "")
    assert "c1: A (8, 7) -> (9, 7)" in (failure.text or "")
    assert cases["held-out loss"].find("failure") is None


def test_check_command_exit_codes_and_junit(tmp_path: Path) -> None:
    base = _write(tmp_path / "base", _formats())
    good = _write(tmp_path / "good", _formats())
    bad = _write(tmp_path / "bad", _worse(_formats()))
    junit = tmp_path / "gate.xml"
    result = _run("check", good, "--baseline", base / "formats.json", "--junit", junit)
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    assert ET.parse(junit).getroot().get("failures") == "0"
    result = _run("check", bad, "--baseline", base, "--junit", junit)
    assert result.exit_code == EXIT_REGRESSION == 1, result.output
    assert "FAIL  memory" in result.output and "c1: A (8, 7) -> (9, 7)" in result.output
    assert ET.parse(junit).getroot().get("failures") == "2"
    assert _run("check", bad, "--baseline", base, "--tolerance", "0.2").exit_code == 0
    result = _run("check", good, "--baseline", tmp_path / "none.json")
    assert result.exit_code == EXIT_USER_ERROR == 2 and "none.json not found" in result.output
    result = _run("check", good, "--baseline", base, "--tolerance", "-1")
    assert result.exit_code == 2 and "--tolerance" in result.output


def test_check_section_of_a_job_file(tmp_path: Path) -> None:
    _write(tmp_path / "baselines" / "bad", _formats())
    bad = _write(tmp_path / "runs" / "bad", _worse(_formats()))
    job = tmp_path / "job.yaml"
    job.write_text(f"check:\n  baseline: {tmp_path}/baselines/{{name}}\n  tolerance: 0.2\n")
    assert _run("check", bad, "--config", job).exit_code == 0
    result = _run("check", bad, "--config", job, "--tolerance", "0")
    assert result.exit_code == 1 and "tolerance 0.00%" in result.output
    job.write_text("check:\n  tolerance: -1\n")
    result = _run("check", bad, "--config", job)
    assert result.exit_code == 2 and f"{job}:2: check.tolerance: got -1" in result.output
