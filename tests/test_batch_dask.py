"""`optsearch batch --executor dask` on two-worker Dask clusters bound to 127.0.0.1 (the tiny model).

The same batch gives the same summary as the local pool (timings aside); skip-if-done, failure
isolation and resume work as there; the workers' file check refuses before anything runs; a worker
that dies mid-job leaves no half-written folder, and its job is run again (resumed) or reported
failed with the reason. Without Dask distributed, the dask tests skip and the command says what to
install.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import optsearch.run.batch
from optsearch.cli.main import cli
from optsearch.config.schema import BATCH_SETTINGS, ConfigError, check_batch_document, schema_table
from optsearch.config.yamlfile import parse_yaml

INSTALL = "pip install 'optsearch[dask]'"
TIMING = ("seconds",)


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _rows(root: Path) -> dict[str, dict[str, str]]:
    """summary.csv by job, without its timings and with the folder relative to the batch's folder."""
    with open(root / "summary.csv") as stream:
        rows = {row["job"]: row for row in csv.DictReader(stream)}
    for row in rows.values():
        for column in TIMING:
            row.pop(column)
        row["folder"] = os.path.relpath(row["folder"], root) if row["folder"] else ""
    return rows


def _half_written(root: Path) -> list[Path]:
    """Job folders without a formats.json (a result is renamed into place whole, or not at all)."""
    return [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.endswith(".partial") and not (p / "formats.json").is_file()
    ]


def _batch_file(path: Path, model: str, data: str, bad_data: str) -> Path:
    """An eps grid, a job whose model is missing, and one whose data do not fit the model. Alg. 2
    (method paper): the lost-worker test kills a worker after its search's second decision."""
    path.write_text(
        "defaults:\n"
        "  criterion: paper\n"
        "  method: paper\n"
        f"  data: {data}\n"
        "jobs:\n"
        f"  - model: {model}\n"
        "    eps: [0.02, 0.05]\n"
        "  - model: missing.keras\n"
        "    eps: 0.02\n"
        f"  - model: {model}\n"
        "    name: bad-data\n"
        f"    data: {bad_data}\n"
    )
    return path


@pytest.fixture(scope="module")
def distributed() -> Any:
    return pytest.importorskip("distributed", reason=f"needs Dask distributed: {INSTALL}")


@pytest.fixture(scope="module")
def local_batch(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The batch file (absolute paths) and the folder of its run on the local pool."""
    folder = tmp_path_factory.mktemp("local")
    config = _batch_file(
        folder / "jobs.yaml", str(files["model"]), str(files["data"]), str(files["wrong_shape"])
    )
    root = folder / "runs"
    result = _run("batch", config, "--out", root)
    assert result.exit_code == 1, result.output  # the two broken jobs
    return config, root


# --------------------------------------------------------------------------------------------------
# Without a cluster


def test_executor_and_scheduler_are_batch_file_fields() -> None:
    def config(head: str) -> Any:
        return check_batch_document(parse_yaml(head + "jobs: [{model: m.keras, data: d.npz}]\n", "b.yaml"))

    assert (config("").executor, config("").scheduler) == ("local", None)
    dask = config("executor: dask\nscheduler: tcp://head:8786\n")
    assert (dask.executor, dask.scheduler) == ("dask", "tcp://head:8786")
    with pytest.raises(ConfigError) as caught:
        config("executor: spark\n")
    assert "b.yaml:1: executor: got 'spark'; valid: one of local, dask, e.g. dask" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        config("scheduler: tcp://head:8786\n")
    assert "scheduler: is the address of a Dask scheduler; add executor: dask" in str(caught.value)


def test_the_docs_list_the_executor_fields_as_the_schema_declares_them() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "batch.md").read_text()
    assert schema_table(BATCH_SETTINGS) in doc


def test_without_dask_the_executor_says_what_to_install(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    config = tmp_path / "b.yaml"
    config.write_text(f"jobs: [{{model: {files['model']}, data: {files['data']}}}]\n")
    result = _run("batch", config, "--out", tmp_path / "runs", "--executor", "dask")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --executor dask needs Dask distributed, which is not installed: {INSTALL}"
    ]
    assert not (tmp_path / "runs").exists()
    result = _run("batch", config, "--scheduler", "tcp://127.0.0.1:8786")
    assert result.exit_code == 2 and "add --executor dask" in result.output


# --------------------------------------------------------------------------------------------------
# On a LocalCluster


def test_dask_gives_the_local_pools_summary_and_skips_what_is_done(
    distributed: Any, local_batch: tuple[Path, Path], tmp_path: Path
) -> None:
    config, local_root = local_batch
    root = tmp_path / "runs"
    result = _run("batch", config, "--out", root, "--executor", "dask", "--jobs", "2")
    assert result.exit_code == 1, result.output
    assert "running on the Dask LocalCluster on 127.0.0.1: 2 workers" in result.output
    rows = _rows(root)
    assert {name: row["status"] for name, row in rows.items()} == {
        "model-eps0.02": "done",
        "model-eps0.05": "done",
        "missing": "failed",
        "bad-data": "failed",
    }
    assert rows == _rows(local_root)
    assert "quantizable layers" in (root / "model-eps0.02.log").read_text()
    assert _half_written(root) == [] and not list(root.glob("*.partial"))

    # A rerun finds the results up to date and runs only the failing job again, as the local pool does.
    result = _run("batch", config, "--out", root, "--executor", "dask", "--jobs", "2")
    assert result.exit_code == 1 and "model-eps0.05: up to date" in result.output
    assert "[4/4] bad-data: queued" in result.output and "model-eps0.02: queued" not in result.output
    assert [row["status"] for row in _rows(root).values()] == ["up to date", "up to date", "failed", "failed"]
    # With nothing to run, no cluster is started.
    result = _run("batch", config, "--out", root, "--executor", "dask", "--only", "model-*")
    assert result.exit_code == 0 and "Dask" not in result.output, result.output


def test_ctrl_c_cancels_the_dask_jobs_and_closes_the_cluster(
    distributed: Any, local_batch: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(optsearch.run.batch, "wait", interrupted)
    root = tmp_path / "runs"
    result = _run("batch", local_batch[0], "--out", root, "--executor", "dask", "--only", "model-*")
    assert result.exit_code == 130, result.output
    rows = _rows(root)
    assert [rows[name]["status"] for name in ("model-eps0.02", "model-eps0.05")] == ["not run", "not run"]
    assert "interrupted; rerun the batch to finish it" in rows["model-eps0.05"]["message"]
    assert _half_written(root) == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_files_the_workers_cannot_read_are_refused_before_anything_runs(
    distributed: Any, files: dict[str, Path], tmp_path: Path
) -> None:
    # /proc/self/fd/N names a file only in the process that opened it: here, not on a worker.
    with open(files["data"], "rb") as stream:
        private = os.dup2(stream.fileno(), 900)
        try:
            config = tmp_path / "b.yaml"
            config.write_text(f"jobs: [{{model: {files['model']}, data: /proc/self/fd/{private}}}]\n")
            result = _run("batch", config, "--out", tmp_path / "runs", "--executor", "dask")
        finally:
            os.close(private)
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and f"cannot read /proc/self/fd/{private}: " in error[0]
    assert "Dask workers need the batch's files on a shared filesystem" in error[0]
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------------
# A worker lost mid-job

#: Loaded by each worker at start: the first job to record two decisions kills its worker process.
DYING_WORKER = """
import os
import optsearch.run.runner as runner

MARKER = {marker!r}
search = getattr(runner.opt_search, "real", runner.opt_search)  # a worker may load this twice


def dying_search(*args, on_decision, **kwargs):
    decisions = []

    def decided(decision):
        on_decision(decision)
        decisions.append(decision)
        if len(decisions) == 2 and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            os._exit(1)  # as kill -9: no cleanup, the work folder stays as it is

    return search(*args, on_decision=decided, **kwargs)


dying_search.real = search
runner.opt_search = dying_search
"""


@pytest.fixture
def dying_cluster(distributed: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A two-worker LocalCluster whose workers die once mid-job; ``request.param``: allowed failures."""
    preload = tmp_path / "dying_worker.py"
    preload.write_text(DYING_WORKER.format(marker=str(tmp_path / "killed")))
    import dask

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": request.param}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=0,
            preload=[str(preload)],
            silence_logs=50,
        ) as cluster,
    ):
        yield cluster.scheduler_address


@pytest.mark.parametrize("dying_cluster", [3, 0], ids=["rerun", "reported"], indirect=True)
def test_a_worker_lost_mid_job_reruns_or_reports_it_and_leaves_no_half_folder(
    dying_cluster: str,
    local_batch: tuple[Path, Path],
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Relative paths, run from another folder than the workers': each job runs in the batch's folder.
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(files["model"], work / "model.keras")
    shutil.copy(files["data"], work / "data.npz")
    monkeypatch.chdir(work)
    config = _batch_file(Path("jobs.yaml"), "model.keras", "data.npz", "data.npz")
    args = ("batch", config, "--out", "runs", "--only", "model-eps0.02", "--executor", "dask")
    result = _run(*args, "--scheduler", dying_cluster)
    root = work / "runs"
    assert (tmp_path / "killed").exists(), result.output
    assert _half_written(root) == []
    log = (root / "model-eps0.02.log").read_text()
    if result.exit_code == 1:  # allowed failures 0: the job is reported failed, its work folder kept
        assert "model-eps0.02: failed: its Dask worker died 1 time while running it" in result.output
        assert _rows(root)["model-eps0.02"]["status"] == "failed"
        assert (root / "model-eps0.02.partial" / "request.json").is_file()
        result = _run(*args, "--scheduler", dying_cluster)  # the rerun resumes it
        log = (root / "model-eps0.02.log").read_text()
    assert result.exit_code == 0, result.output
    assert "resuming the interrupted run" in log and "2 of 6 tensors decided before" in log
    assert _half_written(root) == [] and not list(root.glob("*.partial"))
    # The resumed job's numbers are the uninterrupted local run's.
    assert _rows(root)["model-eps0.02"] == _rows(local_batch[1])["model-eps0.02"]
