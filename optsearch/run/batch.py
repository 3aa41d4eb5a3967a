"""Batch jobs: name and plan the jobs of a batch file, run each into its own folder, resume, summarise.

A job whose folder already holds a result with the same settings is skipped, so a rerun of an
interrupted batch finishes only what is missing. A failing job is reported and the others go on.
Every job runs through ``optsearch.run.runner.run`` (here, in ``--jobs N`` spawned processes, or on the
workers of a Dask cluster: ``run.executors``), which writes its folder atomically: no half-written job
folder is ever left behind, even when a worker dies mid-job.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from optsearch.config.schema import BatchConfig, JobConfig, format_value, run_settings
from optsearch.config.yamlfile import ConfigError, Problem
from optsearch.core.errors import OptsearchError
from optsearch.core.files import sha256
from optsearch.render.batch_summary import Row, plot_pareto, summary_csv, summary_markdown
from optsearch.render.report import less_than
from optsearch.results.folder import FORMATS_FILE, ResultFolder
from optsearch.results.gate import (
    Case,
    CheckOutcome,
    GateError,
    Limits,
    junit_xml,
    outcome_cases,
    write_text,
)
from optsearch.results.gate import check as gate_check
from optsearch.results.result import RunResult
from optsearch.run.executors import JobPool, open_pool
from optsearch.run.outdir import partial_dir
from optsearch.settings import RunSettings

Action = Literal["run", "skip", "replace", "blocked", "unselected"]
Status = Literal["done", "up to date", "failed", "not run", "not selected"]
Echo = Callable[[str], None]

SUMMARY_MD, SUMMARY_CSV, PARETO_PNG = "summary.md", "summary.csv", "pareto.png"


@dataclass(frozen=True)
class Job:
    """One job of a batch: its name, its own folder, and every run setting (``out`` is the folder)."""

    number: int
    name: str
    folder: Path
    values: dict[str, Any]
    varied: dict[str, Any]
    where: str
    check: dict[str, Any] | None
    """The gate's settings with ``{name}`` in the baseline filled in, or None."""

    @property
    def varied_text(self) -> str:
        return ", ".join(f"{key}={format_value(value)}" for key, value in self.varied.items())


@dataclass(frozen=True)
class Planned:
    """What the batch will do with a job, and why."""

    job: Job
    action: Action
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    """What happened to a job: its status, the result it left (if any) and the gate's verdict."""

    job: Job
    status: Status
    message: str = ""
    seconds: float | None = None
    result: RunResult | None = None
    gate: CheckOutcome | None = None
    gate_error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished (now or before) and, if checked, passed."""
        gate_ok = self.gate_error is None and (self.gate is None or self.gate.passed)
        return self.status in ("done", "up to date", "not selected") and gate_ok

    @property
    def check_text(self) -> str:
        if self.gate_error is not None:
            return "error"
        return "-" if self.gate is None else self.gate.verdict()


# --------------------------------------------------------------------------------------------------
# Planning: names, folders, what to skip


def plan(config: BatchConfig, root: Path) -> list[Job]:
    """Every job with its name and folder; a ``ConfigError`` if two jobs would share a folder."""
    jobs = []
    problems: list[Problem] = []
    for number, job in enumerate(config.jobs, start=1):
        try:
            name = job_name(job)
        except ValueError as err:
            problems.append(Problem(job.where, "name", str(err)))
            continue
        folder = Path(job.values["out"]) if job.values["out"] else root / name
        check = None
        if job.check is not None:
            check = {**job.check, "baseline": str(job.check["baseline"]).replace("{name}", name)}
        try:
            run_settings(job.values)
        except ValueError as err:
            varied = ", ".join(f"{key}={format_value(value)}" for key, value in job.varied.items())
            problems.append(Problem(job.where, "", f"{varied or name}: {err}"))
        jobs.append(
            Job(number, name, folder, {**job.values, "out": str(folder)}, dict(job.varied), job.where, check)
        )
    problems += _clashes(jobs, lambda job: os.path.normcase(os.path.abspath(job.folder)), "folder") or (
        _clashes(jobs, lambda job: job.name, "name")  # logs and the summary are keyed by name
    )
    if problems:
        raise ConfigError(problems)
    return [replace(job, number=i) for i, job in enumerate(jobs, start=1)]


def _clashes(jobs: Sequence[Job], key: Callable[[Job], str], what: str) -> list[Problem]:
    """A problem for every job whose ``key`` (folder or name) an earlier job already has."""
    first: dict[str, Job] = {}
    problems = []
    for job in jobs:
        other = first.setdefault(key(job), job)
        if other is not job:
            same = f"folder {job.folder}" if what == "folder" else f"name {job.name!r}"
            problems.append(
                Problem(
                    other.where if other.where == job.where else f"{other.where} and {job.where}",
                    "",
                    f"job {other.number} ({other.varied_text or other.name}) and job {job.number} "
                    f"({job.varied_text or job.name}) have the same {same}; give each its own "
                    "name: (a template such as '{model_name}-eps{eps}' works) or out:",
                )
            )
    return problems


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def job_name(job: JobConfig) -> str:
    """The job's folder name: its ``name:`` template filled in, else the model's name and its grid values."""
    fields = {key: format_value(value) for key, value in job.values.items()}
    fields["model_name"] = Path(str(job.values["model"])).stem
    fields["data_name"] = _data_name(str(job.values["data"]))
    if job.name is not None:
        unknown = sorted({m for m in _PLACEHOLDER.findall(job.name) if m not in fields})
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} in {job.name!r}; valid: "
                + ", ".join(f"{{{key}}}" for key in fields)
            )
        text = _PLACEHOLDER.sub(lambda m: fields[m.group(1)], job.name)
    else:
        parts = [fields["model_name"]]
        for key, value in job.varied.items():
            if key == "model":
                continue
            shown = format_value(value).replace(" ", "")
            glue = "" if shown[:1].isdigit() and not key[-1].isdigit() else "_"  # eps0.01, bw0_8x8x8
            parts.append(fields["data_name"] if key == "data" else f"{key}{glue}{shown}")
        text = "-".join(parts)
    clean = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("._") or "job"
    return clean[:120]


def _data_name(spec: str) -> str:
    return Path(spec).stem if spec.endswith(".npz") or "/" in spec else spec.replace(":", "_")


def decide(job: Job, force: bool = False) -> Planned:
    """Run, skip (its folder holds a result with the same settings), replace, or blocked (and why)."""
    model = Path(job.values["model"])
    if not model.exists():
        return Planned(job, "blocked", f"model file not found: {model}")
    folder = job.folder
    if not folder.exists():
        work = partial_dir(folder)
        return Planned(job, "run", f"resumes the interrupted run in {work}" if work.is_dir() else "")
    if not folder.is_dir():
        return Planned(job, "blocked", f"{folder} is a file, not a folder; move it or choose another name:")
    if force:
        return Planned(job, "replace", "--force")
    overwrite = bool(job.values["overwrite"])
    try:
        differences = result_differences(job.values, ResultFolder.at(folder).read())
    except OptsearchError as err:
        why = f"{folder} exists but holds no readable {FORMATS_FILE} ({type(err).__name__})"
        if overwrite:
            return Planned(job, "replace", why)
        return Planned(job, "blocked", f"{why}; delete it, or set overwrite: true to replace it")
    if not differences:
        return Planned(job, "skip", "its folder holds a result with these settings")
    why = "its folder holds a result with other settings: " + "; ".join(differences[:4])
    if overwrite:
        return Planned(job, "replace", why)
    return Planned(job, "blocked", f"{why}. Delete {folder}, or set overwrite: true to replace it")


def result_differences(values: Mapping[str, Any], recorded: RunResult) -> list[str]:
    """How the settings a result recorded differ from a job's (empty: the result is this job's).

    Both sides are ``RunSettings``, so a setting added there is compared here without a second
    list; speed-only settings are left out. A changed model file counts (by sha256).
    """
    expected = run_settings(values)
    out = expected.differences(recorded.settings)
    if recorded.settings.model != expected.model:
        out.append(f"model {str(recorded.settings.model)!r} in the result, {str(values['model'])!r} here")
    elif recorded.model.sha256 != sha256(expected.model):
        out.append("the model file changed since the result was written (sha256)")
    return out


def resume_differences(settings: RunSettings, out: Path) -> list[str]:
    """How the interrupted run in ``out``'s work folder differs from ``settings`` (empty: resumable)."""
    from optsearch.run.resume import fingerprint_differences, read_request
    from optsearch.run.runner import run_fingerprint

    try:
        recorded = read_request(partial_dir(out))
    except OptsearchError as err:
        return [str(err)]
    return fingerprint_differences(recorded, run_fingerprint(settings))


def select(planned: Sequence[Planned], patterns: Sequence[str]) -> list[Planned]:
    """Keep the jobs whose name matches one of ``patterns`` (shell-style); the others are only listed."""
    if not patterns:
        return list(planned)
    out = []
    for p in planned:
        if any(fnmatch.fnmatchcase(p.job.name, pattern) for pattern in patterns):
            out.append(p)
        else:  # listed with its numbers when its result is there, but neither run nor checked
            out.append(
                Planned(
                    p.job,
                    "unselected",
                    "not selected (--only)" + ("; up to date" if p.action == "skip" else ""),
                )
            )
    return out


# --------------------------------------------------------------------------------------------------
# Running


def execute(
    job: Job, overwrite: bool, log: str | None = None, echo: Echo | None = None
) -> tuple[str, str, float]:
    """Run one job through the runner: ``("done" | "failed", message, seconds)``; never raises but Ctrl-C.

    With ``log``, everything the run prints (progress bars, TensorFlow's own lines) goes to that file:
    parallel jobs would otherwise write over each other.
    """
    started = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _output_to(log) as logged:
        try:
            from optsearch.run.pareto_run import reusable_curves
            from optsearch.run.runner import run

            settings = run_settings(job.values)
            resume = False
            if not overwrite and partial_dir(job.folder).is_dir():
                # An interrupted run of this job: resume it when it was started with these settings,
                # else start again (the work folder is no result; it is replaced, not resumed).
                resume = resume_differences(settings, job.folder) == []
                overwrite = not resume
                (echo or logged)(
                    f"resuming the interrupted run in {partial_dir(job.folder)}"
                    if resume
                    else f"discarding {partial_dir(job.folder)}: it was started with other settings"
                )
            stored = None if resume else reusable_curves(settings, job.folder)
            if stored is not None:
                (echo or logged)(
                    f"--method pareto: the curves of {stored.source} answer eps {job.values['eps']:g}"
                )
            run(settings, job.folder, overwrite=overwrite, resume=resume, echo=echo or logged, stored=stored)
            return "done", "", time.perf_counter() - started
        except OptsearchError as err:
            return "failed", str(err), time.perf_counter() - started
        except Exception as err:
            if log is not None or os.environ.get("OPTSEARCH_DEBUG"):
                traceback.print_exc()
            first = (str(err).strip().splitlines() or [""])[0]
            where = (
                f"; the traceback is in {log}" if log else "; rerun with OPTSEARCH_DEBUG=1 for the traceback"
            )
            return (
                "failed",
                f"internal error: {type(err).__name__}: {first}{where}",
                time.perf_counter() - started,
            )


@contextlib.contextmanager
def _output_to(log: str | None) -> Iterator[Echo]:
    """Send this process's stdout and stderr (file descriptors too) to ``log`` for the block."""
    if log is None:
        yield print
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with open(log, "a", encoding="utf-8") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        try:
            yield lambda line: print(line, flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_batch(
    planned: Sequence[Planned],
    workers: int = 1,
    echo: Echo = print,
    on_change: Callable[[list[Outcome]], None] | None = None,
    log_dir: Path | None = None,
    executor: str = "local",
    scheduler: str | None = None,
) -> list[Outcome]:
    """Run the jobs that need it, in order or ``workers`` at a time; one failing does not stop the rest.

    ``executor``: ``local`` runs them here (``workers`` 1) or in ``workers`` spawned processes;
    ``dask`` on the Dask cluster at ``scheduler``, else on a ``LocalCluster`` of ``workers``
    processes. Before anything runs, a Dask cluster's workers must reach every model and data file
    (an ``OptsearchError`` otherwise). ``on_change`` gets every job's outcome so far after each change
    (to keep the summary current). Ctrl-C stops the batch: jobs not finished are ``not run``,
    ``on_change`` sees that, and the KeyboardInterrupt goes on to the caller. A rerun picks up where
    this one stopped.
    """
    todo = [p for p in planned if p.action in ("run", "replace")]
    with contextlib.ExitStack() as stack:
        pool = None
        if todo and (executor != "local" or (workers > 1 and len(todo) > 1)):
            pool = stack.enter_context(open_pool(executor, workers, scheduler, echo))
            pool.check_access(*_job_files(todo))
            if executor != "local":
                echo(f"running on the {pool.where}")
        return _run_jobs(planned, todo, pool, echo, on_change, log_dir)


def _run_jobs(
    planned: Sequence[Planned],
    todo: Sequence[Planned],
    pool: JobPool | None,
    echo: Echo,
    on_change: Callable[[list[Outcome]], None] | None,
    log_dir: Path | None,
) -> list[Outcome]:
    """The outcome of every job: the planned ones at once, ``todo`` here in order or on ``pool``."""
    outcomes: dict[int, Outcome] = {}
    for p in planned:
        if p.action == "skip":
            outcomes[p.job.number] = finish(p.job, "up to date", p.reason)
        elif p.action == "blocked":
            outcomes[p.job.number] = Outcome(p.job, "failed", p.reason)
        elif p.action == "unselected":
            done = finish(p.job, "up to date", check=False) if p.reason.endswith("up to date") else None
            result = done.result if done is not None else None
            outcomes[p.job.number] = Outcome(p.job, "not selected", p.reason, None, result)
        else:
            outcomes[p.job.number] = Outcome(p.job, "not run", "waiting")
    total = len(planned)

    def update(outcome: Outcome) -> None:
        outcomes[outcome.job.number] = outcome
        echo(_outcome_line(outcome, total))
        if on_change:
            on_change(_ordered(outcomes))

    if on_change:
        on_change(_ordered(outcomes))
    for p in planned:
        if p.action in ("skip", "blocked"):
            echo(_outcome_line(outcomes[p.job.number], total))
    try:
        if pool is None:
            for p in todo:
                echo(f"[{p.job.number}/{total}] {p.job.name}: running -> {p.job.folder}")
                log = None if log_dir is None else str(log_dir / f"{p.job.name}.log")
                status, message, seconds = execute(
                    p.job, p.action == "replace", log, echo=None if log else _indented(echo)
                )
                update(finish(p.job, status, message, seconds))  # type: ignore[arg-type]
        else:
            _run_parallel(todo, pool, total, echo, update, log_dir)
    except KeyboardInterrupt:
        for number, outcome in outcomes.items():
            if outcome.status == "not run" and outcome.message == "waiting":
                outcomes[number] = replace(outcome, message="interrupted; rerun the batch to finish it")
        if on_change:
            on_change(_ordered(outcomes))
        raise
    return _ordered(outcomes)


def _job_files(todo: Sequence[Planned]) -> tuple[list[Path], list[Path]]:
    """The files the jobs read (models, data files) and the folders their results go into."""
    read: dict[Path, None] = {}
    write: dict[Path, None] = {}
    for p in todo:
        read[Path(p.job.values["model"])] = None
        data = str(p.job.values["data"]).strip()
        if _is_data_file(data):
            read[Path(data)] = None
        write[p.job.folder.parent] = None
    return list(read), list(write)


def _is_data_file(spec: str) -> bool:
    """True when a data spec names a file rather than a dataset (``data.load_data``'s rule)."""
    return spec.lower().endswith(".npz") or any(s and s in spec for s in ("/", os.sep, os.altsep))


def _run_parallel(
    todo: Sequence[Planned],
    pool: JobPool,
    total: int,
    echo: Echo,
    update: Callable[[Outcome], None],
    log_dir: Path | None,
) -> None:
    """The jobs on ``pool``, each job's output in its own log; an outcome as each one finishes."""
    futures: dict[Future[tuple[str, str, float]], Planned] = {}
    for p in todo:
        log_folder = log_dir or p.job.folder.parent
        log_folder.mkdir(parents=True, exist_ok=True)
        log = log_folder / f"{p.job.name}.log"
        log.write_text("")
        futures[pool.submit(execute, p.job, p.action == "replace", str(log))] = p
        echo(f"[{p.job.number}/{total}] {p.job.name}: queued -> {p.job.folder} (log {log})")
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                p = futures[future]
                try:
                    status, message, seconds = future.result()
                except Exception as err:  # the worker died (killed, out of memory, lost)
                    status, message, seconds = "failed", pool.failure(err), 0.0
                update(finish(p.job, status, message, seconds))  # type: ignore[arg-type]
    except KeyboardInterrupt:
        for future in pending:
            future.cancel()
        raise


def finish(
    job: Job, status: Status, message: str = "", seconds: float | None = None, check: bool = True
) -> Outcome:
    """The outcome of a job that ran or was up to date: its result read back and, if asked, checked."""
    if status not in ("done", "up to date"):
        return Outcome(job, status, message, seconds)
    try:
        result = ResultFolder.at(job.folder).read()
    except OptsearchError as err:
        return Outcome(job, "failed", f"cannot read {job.folder / FORMATS_FILE}: {err}", seconds)
    if seconds is None:
        seconds = result.timings.get("total_seconds")
    if job.check is None or not check:
        return Outcome(job, status, message, seconds, result)
    limits = Limits(job.check["max_loss"], job.check["tolerance"], job.check["exact"])
    baseline = Path(job.check["baseline"])
    try:
        outcome = gate_check(job.folder, baseline, limits)
    except GateError as err:
        hint = (
            f"; to make this result the baseline: mkdir -p {baseline.parent} && "
            f"cp {job.folder / FORMATS_FILE} {baseline}"
            if not baseline.exists()
            else ""
        )
        return Outcome(job, status, message, seconds, result, gate_error=f"check: {err}{hint}")
    return Outcome(job, status, message, seconds, result, gate=outcome)


def _ordered(outcomes: Mapping[int, Outcome]) -> list[Outcome]:
    return [outcomes[number] for number in sorted(outcomes)]


def _indented(echo: Echo) -> Echo:
    return lambda line: echo(f"    {line}")


def _outcome_line(outcome: Outcome, total: int) -> str:
    """``[2/5] name: done in 41 s, held-out loss 0.80%, memory 15.1 KiB (-71% vs 8-bit); check pass``."""
    job, r = outcome.job, outcome.result
    text = f"[{job.number}/{total}] {job.name}: {outcome.status}"
    if outcome.status == "done" and outcome.seconds is not None:
        text += f" in {outcome.seconds:,.0f} s"
    if r is not None:
        held = r.accuracy.get("held_out", r.accuracy["search"])
        text += (
            f", {'held-out' if 'held_out' in r.accuracy else 'search'} loss {held.quantized_loss:.2%}, "
            f"memory {r.costs['quantized'].memory_bytes:,.0f} bytes "
            f"({less_than(r.savings('uniform8')['memory'], '8-bit', '.1%')})"
        )
    if outcome.gate is not None or outcome.gate_error is not None:
        text += f"; check {outcome.check_text}"
    if outcome.message and outcome.status != "up to date":
        text += f": {outcome.message}"
    if outcome.gate_error:
        text += f" ({outcome.gate_error})"
    return text


# --------------------------------------------------------------------------------------------------
# Reports


def rows(outcomes: Sequence[Outcome]) -> list[Row]:
    """The summary's rows."""
    out = []
    for o in outcomes:
        message = o.message if o.status != "up to date" else ""
        if o.gate_error:
            message = f"{message}; {o.gate_error}" if message else o.gate_error
        out.append(
            Row(
                job=o.job.name,
                status=o.status,
                folder=str(o.job.folder),
                model=Path(o.job.values["model"]).stem,
                data=_data_name(str(o.job.values["data"])),
                eps=o.job.values["eps"],
                varied=o.job.varied_text,
                result=o.result,
                seconds=o.seconds,
                check=o.check_text,
                message=message,
                details=tuple(o.gate.lines()) if o.gate is not None else (),
            )
        )
    return out


def write_summary(
    root: Path, title: str, source: str, outcomes: Sequence[Outcome], plot: bool = False
) -> list[Path]:
    """summary.md and summary.csv in ``root`` (each replaced whole), and with ``plot`` the Pareto plot
    (none, and an old one removed, when no job has a result). The files written."""
    table = rows(outcomes)
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / SUMMARY_MD, summary_markdown(title, source, table))
    write_text(root / SUMMARY_CSV, summary_csv(table))
    written = [root / SUMMARY_MD, root / SUMMARY_CSV]
    if plot:
        if plot_pareto(table, root / PARETO_PNG):
            written.append(root / PARETO_PNG)
        else:
            (root / PARETO_PNG).unlink(missing_ok=True)
    return written


def junit_cases(outcomes: Sequence[Outcome]) -> list[Case]:
    """One ``run`` case per job (an error when it failed), then one case per check of its gate."""
    cases = []
    for o in outcomes:
        classname = f"optsearch.{o.job.name}"
        if o.status == "failed":
            cases.append(Case(classname, "run", error=o.message or "failed", seconds=o.seconds or 0.0))
        elif o.status == "not run":
            cases.append(Case(classname, "run", error=f"not run: {o.message}"))
        elif o.status == "not selected":
            cases.append(Case(classname, "run", skipped=o.message))
        else:
            cases.append(
                Case(classname, "run", output=f"{o.status}: {o.job.folder}", seconds=o.seconds or 0.0)
            )
        if o.gate is not None:
            cases += outcome_cases(classname, o.gate)
        elif o.gate_error is not None:
            cases.append(Case(classname, "check", error=o.gate_error))
    return cases


def write_junit(path: Path, suite: str, cases: Sequence[Case]) -> None:
    """A JUnit XML report at ``path`` (replaced whole)."""
    write_text(path, junit_xml(suite, cases))
