"""Interrupted searches resume: killed at random evaluations (SIGKILL, SIGTERM, SIGINT), then resumed,
they end with exactly the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner, Result

import optsearch.run.runner
from optsearch.cli.main import cli
from optsearch.results.result import without_timings
from optsearch.run.resume import DECISIONS_FILE, LOG_FILE, read_lines

L = keras.layers
TENSORS = 9


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A three-layer model (9 tensors, about 95 evaluations), its data and an uninterrupted run."""
    root = tmp_path_factory.mktemp("resume")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Rescaling(1 / 255, name="scale"),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.Conv2D(4, 3, activation="relu", name="c2"),
            L.Flatten(name="flat"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(400, 8, 8, 1), dtype=np.uint8)
    y = np.argmax(model.predict(x.astype(np.float32), verbose=0), axis=1)
    y[:30] = (y[:30] + 1) % 3
    model.save(root / "model.keras")
    np.savez_compressed(root / "data.npz", x=x, y=y)
    args = [
        "run",
        "model.keras",
        "--data",
        "data.npz",
        "--eps",
        "0.02",
        "--criterion",
        "paper",
        "--method",
        "paper",
    ]
    cwd = os.getcwd()
    os.chdir(root)  # the same relative paths in every run: model.path and data.spec are in the result
    try:
        result = _run(*args, "--out", "reference")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    reference = json.loads((root / "reference" / "formats.json").read_text())
    return {"root": root, "args": args, "reference": reference}


def _comparable(folder: Path) -> str:
    return json.dumps(without_timings(json.loads((folder / "formats.json").read_text())), indent=2)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _niced_with_default_sigint() -> None:
    os.nice(10)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(
    command: list[str], cwd: Path, watch: Path, threshold: int, sig: signal.Signals
) -> subprocess.CompletedProcess[str]:
    """Start ``command``, send ``sig`` once ``watch`` has ``threshold`` lines, and wait for it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # The run is niced so that on a loaded machine this watcher still gets the CPU as soon as the
    # threshold line is written: otherwise the run may finish before the signal lands.
    # SIGINT back to its default in the child: started from a background job of a script, the test
    # inherits it ignored, and so would the run (which then never sees the Ctrl-C sent here).
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_niced_with_default_sigint,
    )
    deadline = time.monotonic() + 120
    while _lines(watch) < threshold and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.003)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_killed_three_ways_then_resumed_gives_the_uninterrupted_result(job: dict[str, Any]) -> None:
    root, args = job["root"], job["args"]
    seed = int(os.environ.get("OPTSEARCH_RESUME_SEED") or random.randrange(10**6))  # to replay a failure
    rng = random.Random(seed)
    work = root / "out.partial"
    python = [sys.executable, "-m", "optsearch"]

    # kill -9 at a random evaluation: nothing runs after it, the log may end in a cut line.
    first = rng.randint(3, 40)
    killed = _interrupt([*python, *args, "--out", "out"], root, work / LOG_FILE, first, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, (seed, killed.stderr)
    assert not (root / "out").exists() and work.is_dir()
    decided = len(read_lines(work / DECISIONS_FILE))
    with open(work / DECISIONS_FILE, "a") as stream:  # a write cut short by the kill
        stream.write('{"decision": {"tensor": "c')
    with open(work / LOG_FILE, "a") as stream:
        stream.write('{"tensor": "c1:W", "bw"')

    # Without --resume the work folder is not touched: the user is told how to resume or discard it.
    refused = _run(*args, "--out", root / "out")
    assert refused.exit_code == 2 and "--resume" in refused.output and "--overwrite" in refused.output

    # SIGTERM once the resumed run has decided one more tensor: exit 130 and the command to resume.
    termed = _interrupt(
        [*python, *args, "--out", "out", "--resume"], root, work / DECISIONS_FILE, decided + 1, signal.SIGTERM
    )
    assert termed.returncode == 130, (seed, termed.stderr)
    message = termed.stderr.strip().splitlines()[-1]
    assert message.startswith("interrupted after ") and f"of {TENSORS} tensors; resume with: " in message
    again = shlex.split(message.split("resume with: ")[1])
    assert again[:2] == ["optsearch", "run"] and again[-1] == "--resume"
    assert not (root / "out").exists()

    # Ctrl-C (SIGINT) during the command it printed, once it has decided one more tensor: with two
    # or more left, a whole tensor's search is still to come when the signal is sent. (The search log
    # is no clock here: it may hold lines of the tensor in progress, which the resumed run drops.)
    decided = len(read_lines(work / DECISIONS_FILE))
    if decided < TENSORS - 1:
        target = _lines(work / DECISIONS_FILE) + 1
        inted = _interrupt([*python, *again[1:]], root, work / DECISIONS_FILE, target, signal.SIGINT)
        assert inted.returncode == 130, (seed, inted.stderr)
        assert "interrupted after" in inted.stderr and "Traceback" not in inted.stderr
        assert not (root / "out").exists()

    cwd = os.getcwd()
    os.chdir(root)
    try:
        resumed = _run(*again[1:])
    finally:
        os.chdir(cwd)
    assert resumed.exit_code == 0, (seed, resumed.output)
    assert "resuming" in resumed.output
    assert not work.exists()
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted(
        p.name for p in (root / "reference").iterdir()
    )
    assert _comparable(root / "out") == _comparable(root / "reference"), seed
    # The log holds each evaluation once, as an uninterrupted run's does (timings aside).
    strip = [
        {k: v for k, v in line.items() if k != "seconds"} for line in read_lines(root / "out" / LOG_FILE)
    ]
    ref = [
        {k: v for k, v in line.items() if k != "seconds"}
        for line in read_lines(root / "reference" / LOG_FILE)
    ]
    assert strip == ref
    # The search time counts the decisions made before the resumes, as one run's would.
    timings = json.loads((root / "out" / "formats.json").read_text())["timings"]
    assert 0 < timings["search_seconds_before_resume"] <= timings["search_seconds"]
    assert timings["total_seconds"] >= timings["search_seconds"]


def test_resume_refuses_other_settings_and_nothing_to_resume(job: dict[str, Any], tmp_path: Path) -> None:
    root, args = job["root"], job["args"]
    nothing = _run(
        *[a if a != "model.keras" else root / a for a in args], "--out", tmp_path / "x", "--resume"
    )
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.output
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_process_keeps_the_work_folder_and_overwrite_discards_it(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_search = optsearch.run.runner.opt_search

    def interrupt_after_two(*args: Any, **kwargs: Any) -> Any:
        decisions: list[object] = []
        inner = kwargs["on_decision"]

        def on_decision(decision: Any) -> None:
            inner(decision)
            decisions.append(decision)
            if len(decisions) == 2:
                raise KeyboardInterrupt

        return real_search(*args, **{**kwargs, "on_decision": on_decision})

    monkeypatch.setattr(optsearch.run.runner, "opt_search", interrupt_after_two)
    out = tmp_path / "out"
    base = [
        "run",
        files["model"],
        "--data",
        files["data"],
        "--eps",
        "0.02",
        "--criterion",
        "paper",
        "--method",
        "paper",
    ]
    result = _run(*base, "--out", out)
    assert result.exit_code == 130
    lines = [line for line in result.output.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "interrupted after 2 of 6 tensors; resume with: optsearch run" in lines[0]
    assert not out.exists() and (tmp_path / "out.partial").is_dir()
    monkeypatch.setattr(optsearch.run.runner, "opt_search", real_search)

    other = _run(*base, "--out", out, "--resume", "--seed", "3")
    assert other.exit_code == 2 and "data.seed 0 in the interrupted run, 3 now" in other.output
    fresh = _run(*base, "--out", out, "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert not (tmp_path / "out.partial").exists() and (out / "formats.json").exists()


def test_an_interrupted_batch_job_resumes(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "b.yaml"
    config.write_text(
        f"out: {tmp_path / 'runs'}\ndefaults:\n  data: {files['data']}\njobs:\n"
        f"  - model: {files['model']}\n    eps: 0.02\n    criterion: paper\n    method: paper\n"
    )
    real_search = optsearch.run.runner.opt_search

    def interrupt_after_three(*args: Any, **kwargs: Any) -> Any:
        inner, count = kwargs["on_decision"], [0]

        def on_decision(decision: Any) -> None:
            inner(decision)
            count[0] += 1
            if count[0] == 3:
                raise KeyboardInterrupt

        return real_search(*args, **{**kwargs, "on_decision": on_decision})

    monkeypatch.setattr(optsearch.run.runner, "opt_search", interrupt_after_three)
    assert _run("batch", config).exit_code == 130
    assert (tmp_path / "runs" / "model.partial").is_dir()
    monkeypatch.setattr(optsearch.run.runner, "opt_search", real_search)
    dry = _run("batch", config, "--dry-run")
    assert "resumes the interrupted run" in dry.output
    result = _run("batch", config)
    assert result.exit_code == 0, result.output
    assert (
        "resuming the interrupted run" in result.output and "3 of 6 tensors decided before" in result.output
    )
    assert not (tmp_path / "runs" / "model.partial").exists()
    direct = _run(
        "run",
        files["model"],
        "--data",
        files["data"],
        "--eps",
        "0.02",
        "--out",
        tmp_path / "direct",
        "--criterion",
        "paper",
        "--method",
        "paper",
    )
    assert direct.exit_code == 0
    assert _comparable(tmp_path / "runs" / "model") == _comparable(tmp_path / "direct").replace(
        str(tmp_path / "direct"), str(tmp_path / "runs" / "model")
    )


def test_a_log_cut_short_is_read_up_to_its_last_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_lines(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": 2}')  # the last line complete but its newline not written yet
    assert read_lines(path) == [{"a": 1}]
    assert read_lines(tmp_path / "none.jsonl") == []
