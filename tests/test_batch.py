"""`optsearch batch` on a tiny model: folders, summary, resuming, failures, the gate, and `run --config`."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import optsearch.run.batch
import optsearch.run.runner
from optsearch.cli.main import cli
from optsearch.config.schema import ConfigError, check_batch_document
from optsearch.config.yamlfile import parse_yaml
from optsearch.run.batch import job_name, plan


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _summary(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "summary.csv") as stream:
        return {row["job"]: row for row in csv.DictReader(stream)}


def _no_partial_folders(root: Path) -> bool:
    return not [p for p in root.rglob(".*partial*")]


# --------------------------------------------------------------------------------------------------
# Planning (no TensorFlow)


def test_job_names_folders_and_clashes(tmp_path: Path) -> None:
    config = check_batch_document(
        parse_yaml(
            "defaults: {data: models/default_data.npz, eps: [0.005, 0.01]}\n"
            "jobs:\n"
            "  - model: models/a.keras\n"
            "    allocation: [linear, quadratic]\n"
            "    method: paper\n"
            "  - model: models/b.keras\n"
            "    name: '{model_name}-{data_name}-e{eps}'\n"
            "  - model: [models/c.keras, models/d.keras]\n"
            "    data: mnist:train\n"
            "    eps: 0.02\n",
            "zoo.yaml",
        )
    )
    jobs = plan(config, tmp_path)
    assert [job.name for job in jobs] == [
        "a-eps0.005-allocation_linear",
        "a-eps0.005-allocation_quadratic",
        "a-eps0.01-allocation_linear",
        "a-eps0.01-allocation_quadratic",
        "b-default_data-e0.005",
        "b-default_data-e0.01",
        "c",
        "d",
    ]
    assert jobs[0].folder == tmp_path / jobs[0].name and jobs[0].values["out"] == str(jobs[0].folder)
    assert jobs[-1].varied_text == "model=models/d.keras"
    with pytest.raises(ValueError, match=r"unknown placeholder \{epz\}"):
        job_name(
            check_batch_document(
                parse_yaml("jobs: [{model: m.keras, data: d.npz, name: 'x{epz}'}]", "z.yaml")
            ).jobs[0]
        )
    clash = check_batch_document(
        parse_yaml("defaults: {data: d.npz}\njobs:\n  - model: m.keras\n  - model: other/m.keras\n", "z.yaml")
    )
    with pytest.raises(ConfigError) as caught:
        plan(clash, tmp_path)
    assert "z.yaml:3 and z.yaml:4: job 1 (m) and job 2 (m) have the same folder" in str(caught.value)


# --------------------------------------------------------------------------------------------------
# End to end on the tiny model


@pytest.fixture
def zoo(files: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A batch file: an eps grid on the tiny model, and one job whose model file is missing. Alg. 2
    (method paper), whose search the interruption tests stop after a decision."""
    config = _write(
        tmp_path / "zoo.yaml",
        f"out: {tmp_path / 'runs'}\n"
        "defaults:\n"
        "  criterion: paper\n"
        "  method: paper\n"
        f"  data: {files['data']}\n"
        "jobs:\n"
        f"  - model: {files['model']}\n"
        "    eps: [0.02, 0.05]\n"
        f"  - model: {tmp_path / 'missing.keras'}\n"
        "    eps: 0.02\n",
    )
    return config, tmp_path / "runs"


def test_batch_runs_summarises_and_resumes(
    zoo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config, root = zoo
    result = _run("batch", config)
    assert result.exit_code == 1, result.output
    assert "[3/3] missing: failed: model file not found" in result.output
    rows = _summary(root)
    assert {name: row["status"] for name, row in rows.items()} == {
        "model-eps0.02": "done",
        "model-eps0.05": "done",
        "missing": "failed",
    }
    for name in ("model-eps0.02", "model-eps0.05"):
        recorded = json.loads((root / name / "formats.json").read_text())
        assert float(rows[name]["eps"]) == recorded["settings"]["eps"]
        assert float(rows[name]["held_out_loss"]) == recorded["accuracy"]["held_out"]["quantized_loss"]
        assert int(rows[name]["memory_bits"]) == recorded["costs"]["quantized"]["memory_bits_total"]
    summary = (root / "summary.md").read_text()
    assert "3 jobs: 2 done, 1 failed." in summary and "| `model-eps0.05` | done | 5.00% |" in summary
    assert "`missing` (failed): model file not found" in summary
    assert (root / "pareto.png").stat().st_size > 0 and _no_partial_folders(root)

    # A rerun runs nothing that is finished; the failing job fails again, clearly.
    calls: list[str] = []
    monkeypatch.setattr(optsearch.run.batch, "execute", lambda job, *a, **k: calls.append(job.name))
    result = _run("batch", config)
    assert result.exit_code == 1 and calls == []
    assert "[1/3] model-eps0.02: up to date" in result.output

    # Different settings in a finished job's folder: refused (exit 1, others unharmed) unless overwrite.
    result = _run("batch", config, "--set", "seed=1", "--only", "model-*")
    assert result.exit_code == 1 and calls == []
    assert "its folder holds a result with other settings: data seed 0 in the result, 1 here" in result.output
    assert _summary(root)["missing"]["status"] == "not selected"
    result = _run("batch", config, "--set", "seed=1", "--set", "overwrite=true", "--only", "model-eps0.05")
    assert calls == ["model-eps0.05"]


def test_the_gate_in_a_batch_passes_on_the_baseline_and_fails_on_a_regression(
    zoo: tuple[Path, Path], tmp_path: Path
) -> None:
    config, root = zoo
    text = config.read_text().replace(f"  - model: {tmp_path / 'missing.keras'}\n    eps: 0.02\n", "")
    baselines = tmp_path / "baselines"
    text += f"check:\n  baseline: {baselines}/{{name}}.json\n  max_loss: 0.5\n"
    config.write_text(text)
    first = _run("batch", config, "--junit", tmp_path / "gate.xml")
    assert (
        first.exit_code == 1
        and "check error" in first.output
        and "to make this result the baseline" in first.output
    )
    baselines.mkdir()
    for name in ("model-eps0.02", "model-eps0.05"):
        shutil.copy(root / name / "formats.json", baselines / f"{name}.json")
    result = _run("batch", config, "--junit", tmp_path / "gate.xml")
    assert result.exit_code == 0, result.output
    assert "checks passed: 2 of 2" in result.output
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("10", "0", "0")

    # The planted regression: the baseline needed 20% less memory and one format differed.
    planted = json.loads((baselines / "model-eps0.05.json").read_text())
    planted["costs"]["quantized"]["memory_bits_total"] = int(
        planted["costs"]["quantized"]["memory_bits_total"] * 0.8
    )
    planted["layers"][0]["tensors"]["W"]["bw"] += 1
    (baselines / "model-eps0.05.json").write_text(json.dumps(planted))
    result = _run("batch", config, "--junit", tmp_path / "gate.xml")
    assert result.exit_code == 1 and "model-eps0.05: up to date" in result.output
    assert "check FAIL: memory" in result.output
    summary = (root / "summary.md").read_text()
    assert "FAIL  memory" in summary and "c1: W" in summary
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    assert suite.get("failures") == "1"
    failure = next(suite.iter("failure"))
    assert "vs the baseline's" in failure.get("message", "") and "c1: W" in (failure.text or "")


def test_an_interrupted_batch_leaves_no_half_folder_and_a_rerun_finishes_it(
    zoo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, root = zoo
    real_search = optsearch.run.runner.opt_search
    searches: list[int] = []

    def interrupt_the_second(*args: Any, **kwargs: Any) -> Any:
        searches.append(1)
        if len(searches) == 2:
            raise KeyboardInterrupt
        return real_search(*args, **kwargs)

    monkeypatch.setattr(optsearch.run.runner, "opt_search", interrupt_the_second)
    result = _run("batch", config, "--only", "model-*")
    assert result.exit_code == 130 and "interrupted" in result.output
    assert sorted(p.name for p in root.iterdir()) == ["model-eps0.02", "summary.csv", "summary.md"]
    rows = _summary(root)
    assert rows["model-eps0.02"]["status"] == "done" and rows["model-eps0.05"]["status"] == "not run"
    assert "interrupted; rerun the batch to finish it" in rows["model-eps0.05"]["message"]
    monkeypatch.setattr(optsearch.run.runner, "opt_search", real_search)
    ran: list[str] = []
    real_execute = optsearch.run.batch.execute
    monkeypatch.setattr(
        optsearch.run.batch,
        "execute",
        lambda job, *a, **k: (ran.append(job.name), real_execute(job, *a, **k))[1],
    )
    result = _run("batch", config, "--only", "model-*")
    assert result.exit_code == 0 and ran == ["model-eps0.05"], result.output
    assert _no_partial_folders(root)


def test_parallel_jobs(zoo: tuple[Path, Path]) -> None:
    """--jobs 2: two spawned processes, each job's output in its own log, the same summary."""
    config, root = zoo
    result = _run("batch", config, "--jobs", "2", "--only", "model-*")
    assert result.exit_code == 0, result.output
    assert {row["status"] for row in _summary(root).values()} == {"done", "not selected"}
    for name in ("model-eps0.02", "model-eps0.05"):
        assert (root / name / "formats.json").exists()
        assert "quantizable layers" in (root / f"{name}.log").read_text()


def test_dry_run_lists_and_runs_nothing(zoo: tuple[Path, Path]) -> None:
    config, root = zoo
    result = _run("batch", config, "--dry-run")
    assert result.exit_code == 0 and not root.exists()
    assert "[1/3] model-eps0.02 (eps=0.02) -> " in result.output and ": run" in result.output
    assert "[3/3] missing -> " in result.output and "blocked: model file not found" in result.output
    result = _run("batch", config, "--only", "nothing*")
    assert result.exit_code == 2 and "matches no job" in result.output


def test_run_config_with_an_override_and_a_check(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "single"
    job = _write(
        tmp_path / "job.yaml",
        f"model: {files['model']}\ndata: {files['data']}\neps: 0.05\nseed: 1\nout: {out}\ncriterion: paper\n"
        f"check:\n  baseline: {tmp_path}/base.json\n  max_loss: 0.5\n",
    )
    (tmp_path / "base.json").write_text("{}")
    result = _run("run", "--config", job, "--eps", "0.02")
    assert result.exit_code == 2 and "base.json is not a formats.json the gate can read" in result.output
    assert not out.exists()  # checked before the search
    job.write_text(job.read_text().split("check:")[0])
    result = _run("run", "--config", job, "--eps", "0.02")
    assert result.exit_code == 0 and "from the command line instead: eps" in result.output, result.output
    recorded = json.loads((out / "formats.json").read_text())
    assert recorded["settings"]["eps"] == 0.02 and recorded["data"]["seed"] == 1
    shutil.copy(out / "formats.json", tmp_path / "base.json")
    job.write_text(job.read_text() + f"check:\n  baseline: {tmp_path}/base.json\n  max_loss: 0.5\n")
    result = _run("run", "--config", job, "--eps", "0.02", "--overwrite")
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    planted = json.loads((out / "formats.json").read_text())
    planted["costs"]["quantized"]["multiply_cost"] //= 2
    (tmp_path / "base.json").write_text(json.dumps(planted))
    result = _run("run", "--config", job, "--eps", "0.02", "--overwrite")
    assert result.exit_code == 1 and "FAIL  multiply cost" in result.output
