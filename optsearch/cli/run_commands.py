"""``optsearch run``, ``optsearch check`` and ``optsearch batch``: the search, the CI gate, many runs."""

from __future__ import annotations

import contextlib
import fnmatch
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from optsearch.cli.options import (
    EXIT_REGRESSION,
    UserError,
    checked_order,
    explicit_settings,
    schema_options,
)
from optsearch.config.schema import BATCH_SETTINGS, CHECK_SETTINGS, CHECKS, RUN_SETTINGS
from optsearch.methods.knapsack import OBJECTIVES
from optsearch.model.environment import quiet_tensorflow


class _RunCommand(click.Command):
    """``run --help`` ends with how much data a budget needs, computed when the help is shown."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from optsearch.core.confidence import DEFAULT_CONFIDENCE, size_table

        rows = size_table(DEFAULT_CONFIDENCE)
        accuracies = sorted({row.accuracy for row in rows}, reverse=True)
        formatter.write_paragraph()
        formatter.write_text(
            f"How much data a budget needs: the smallest loss the guarded test certifies at "
            f"{DEFAULT_CONFIDENCE:.0%} (a candidate that flips nothing), by search samples n and float "
            "accuracy a. A budget below it cannot be certified: run refuses such an eps, and raises a "
            "layer's share below it to it (docs/budget.md)."
        )
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text("n        " + "".join(f"a = {a:<10.0%}" for a in accuracies))
            for n in sorted({row.samples for row in rows}):
                cells = {row.accuracy: row.certifiable_loss for row in rows if row.samples == n}
                formatter.write_text(f"{n:<9,d}" + "".join(f"{cells[a]:<14.3%}" for a in accuracies))


@click.command(cls=_RunCommand)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Take the settings from this YAML file: the options below without their dashes as fields "
    "(model: m.keras, eps: 0.02, search_fraction: 0.25, ...). Options given here override the file. "
    "A check: section gates the result against a baseline (see `optsearch check`).",
)
@schema_options(RUN_SETTINGS, optional=True)
@click.pass_context
def run(ctx: click.Context, config_file: Path | None, **options: Any) -> None:
    """Search the smallest format (BW, F) of every weights, biases and activations tensor of MODEL.

    By default (--method pareto) each tensor's loss is measured along OptSearchCNN's candidates
    (its diagonal (BW, F) -> (BW-1, F-1) and bitwidth reduction) with the rest float, then the
    formats that cost least within --eps are chosen, and the whole network is verified and
    repaired until its loss on the search set meets --eps by the acceptance test. --method paper
    is the paper's search (Alg. 2): per tensor, the diagonal, the reduction and a 3x3 local search
    within the tensor's share of --eps. Writes formats.json, formats.csv, report.md,
    search_log.jsonl, plots and quantized.keras into --out.

    \b
    Examples:
      optsearch run model.keras --data mnist --eps 0.01 --out runs/mnist
      optsearch run model.keras --data mnist --method paper --out runs/alg2   (the paper's search)
      optsearch run --config job.yaml --eps 0.02     (the file's settings, eps from here)
    """
    from optsearch.config.schema import load_run_file, merge_run, missing_required, run_settings

    run_file = load_run_file(config_file) if config_file is not None else None
    explicit = explicit_settings(ctx, RUN_SETTINGS)
    cli_values = {s.name: options[s.param] for s in RUN_SETTINGS}
    values = merge_run(run_file.values if run_file else {}, cli_values, explicit)
    for setting in missing_required(values):
        what = f"argument '{setting.name.upper()}'" if setting.argument else f"option '{setting.flag}'"
        raise click.UsageError(f"Missing {what} (or {setting.name}: in the --config file).", ctx)
    checked_order(values["order"])
    model = Path(values["model"])
    out = Path(values["out"]) if values["out"] else Path(f"{model.stem}_optsearch")
    values["out"] = str(out)
    try:
        settings = run_settings(values)
    except ValueError as err:
        raise UserError(str(err)) from err
    from optsearch.run.outdir import check_out_dir

    check_out_dir(out, values["overwrite"], values["resume"])
    gate = None
    if run_file is not None and run_file.check is not None:
        from optsearch.config.schema import gate_settings
        from optsearch.results.gate import read_snapshot

        gate = gate_settings(run_file.check)
        gate["baseline"] = str(gate["baseline"]).replace("{name}", out.name)
        read_snapshot(gate["baseline"])  # an unreadable baseline stops us before the search, not after
    if run_file is not None:
        given = sorted(set(explicit) & set(run_file.values))
        click.echo(
            f"settings from {config_file}"
            + (f"; from the command line instead: {', '.join(given)}" if given else "")
        )
    quiet_tensorflow()
    from optsearch.config.schema import command_line
    from optsearch.render.report import summary_lines
    from optsearch.run.runner import RunInterrupted
    from optsearch.run.runner import run as run_search

    try:
        with _sigterm_interrupts():
            result = run_search(
                settings, out, overwrite=values["overwrite"], resume=values["resume"], echo=click.echo
            )
    except RunInterrupted as err:
        again = command_line(values, resume=True, overwrite=False)
        if config_file is not None:
            again += f"  (settings from {config_file}: add --config {config_file})"
        click.echo(
            f"interrupted after {err.decided} of {err.total} tensors; resume with: {again}"
            if err.kept
            else f"interrupted before the first of {err.total} tensors was decided; "
            "nothing to resume: run the same command again",
            err=True,
        )
        ctx.exit(130)
    for line in summary_lines(result):
        click.echo(line)
    from optsearch.results.folder import FOLDED_MODEL_FILE, MODEL_FILE

    folded = f", {FOLDED_MODEL_FILE}" if (out / FOLDED_MODEL_FILE).is_file() else ""
    click.echo(
        f"wrote {out}/ (report.md, formats.json, formats.csv, search_log.jsonl, plots, {MODEL_FILE}{folded})"
    )
    if gate is not None and not _gate(out, gate, junit=None, classname=out.name):
        ctx.exit(EXIT_REGRESSION)


@click.command("pareto")
@click.argument("result_dir", type=click.Path(path_type=Path))
@click.option(
    "--eps",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    required=True,
    help="The new budget (relative accuracy loss, 0.005 = 0.5%), at most the curves' reach (2 x the "
    "result's eps).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: RESULT_DIR-epsEPS beside it).",
)
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default=None,
    help="What the allocation minimises (default: the result's): memory, weights (flash), "
    "activations or bops. The curves do not depend on it.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def pareto(result_dir: Path, eps: float, out: Path | None, objective: str | None, overwrite: bool) -> None:
    """A verified result for another budget from a --method pareto result, without measuring again.

    The result's sensitivity curves answer every budget up to twice its eps, for any --objective:
    the allocation at the new eps is verified, repaired and refined on the same search set (a few
    dozen evaluations instead of the hundreds the curves took). Run it in the folder the search ran
    in (the model and data paths are the result's).

    \b
    Examples:
      optsearch run model.keras --data mnist --eps 0.02 --out runs/m2      (method pareto, the default)
      optsearch pareto runs/m2 --eps 0.01       (writes runs/m2-eps0.01)
      optsearch pareto runs/m2 --eps 0.005 --objective weights --out runs/m05w
    """
    quiet_tensorflow()
    from optsearch.api import pareto as pareto_result
    from optsearch.render.report import summary_lines

    destination = out if out is not None else result_dir.with_name(f"{result_dir.name}-eps{eps:g}")
    from optsearch.run.outdir import check_out_dir

    check_out_dir(destination, overwrite, False)
    with _sigterm_interrupts():
        result = pareto_result(
            result_dir, eps, out=destination, objective=objective, overwrite=overwrite, echo=click.echo
        )
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {destination}/ (report.md, formats.json, pareto.csv, search_log.jsonl, plots)")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler) stops a run as Ctrl-C does: cleanly, resumable."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _gate(result: Path, gate: dict[str, Any], junit: Path | None, classname: str) -> bool:
    """Check ``result`` against ``gate["baseline"]``, print it layer by layer, maybe write JUnit XML."""
    from optsearch.results.gate import Limits, check, junit_xml, outcome_cases, write_text

    outcome = check(result, gate["baseline"], Limits(gate["max_loss"], gate["tolerance"], gate["exact"]))
    for line in outcome.lines():
        click.echo(line)
    if junit is not None:
        write_text(junit, junit_xml("optsearch check", outcome_cases(f"optsearch.{classname}", outcome)))
        click.echo(f"wrote {junit}")
    return outcome.passed


@click.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Take the settings from the check: section of this run or batch file ({name} in its baseline "
    "is RESULT's folder name). Options given here override it.",
)
@schema_options(CHECK_SETTINGS, optional=True)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the verdict as JUnit XML (one test case per check) for CI systems to display.",
)
@click.pass_context
def check(
    ctx: click.Context, result: Path, config_file: Path | None, junit: Path | None, **options: Any
) -> None:
    """Compare the run in RESULT (a folder or its formats.json) with a baseline; exit 1 on a regression.

    A regression is a held-out loss above the run's eps (or --max-loss), memory or multiply cost
    more than --tolerance above the baseline's, or, with --exact, any changed format. What changed
    is printed layer by layer. The baseline is a formats.json of an earlier run (or its folder).

    \b
    Exit codes: 0 no regression, 1 regression, 2 unreadable result, baseline or settings.
    Example:
      optsearch check runs/ci/sequential_mnist --baseline baselines/sequential_mnist.json --junit gate.xml
    """
    from optsearch.config.schema import gate_settings, load_check_section

    section = load_check_section(config_file) if config_file is not None else {}
    for name in explicit_settings(ctx, CHECK_SETTINGS):
        section[name] = CHECKS[name].canonical(options[CHECKS[name].param])
    if section.get("baseline") is None:
        raise click.UsageError("Missing option '--baseline' (or baseline: under check: in --config).", ctx)
    gate = gate_settings(section)
    name = (result.parent if result.suffix == ".json" else result).name
    gate["baseline"] = str(gate["baseline"]).replace("{name}", name)
    if not _gate(result, gate, junit, name):
        ctx.exit(EXIT_REGRESSION)


@click.command()
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--jobs",
    "-j",
    "workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Run this many jobs at a time, each in its own process (its output goes to OUT/JOB.log); with "
    "--executor dask and no --scheduler, the local cluster's number of workers.",
)
@schema_options(BATCH_SETTINGS, optional=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the job folders and the summary (default: the file's out:, else runs/CONFIG-NAME).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set a run setting in every job, over the file's values, e.g. --set search_fraction=0.1. VALUE "
    "is YAML, so --set eps=[0.01,0.02] makes a grid. Repeatable.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run only the jobs whose name matches (shell wildcards, e.g. 'sequential_*'). Repeatable.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run every job again, even one whose folder holds a result with the same settings "
    "(the old result is replaced when the new one is finished).",
)
@click.option(
    "--dry-run", is_flag=True, help="List the jobs, their folders and what would happen; run nothing."
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a JUnit XML report: per job a run case and one case per check.",
)
@click.pass_context
def batch(
    ctx: click.Context,
    config_file: Path,
    workers: int,
    out_dir: Path | None,
    overrides: tuple[str, ...],
    only: tuple[str, ...],
    force: bool,
    dry_run: bool,
    junit: Path | None,
    executor: str,
    scheduler: str | None,
) -> None:
    """Run every job of the YAML batch file CONFIG, each into its own folder, and summarise them.

    The file has defaults: (settings of every job), jobs: (a list of settings, as `run --config`
    takes them), optionally out: and check:. A list value (eps: [0.005, 0.01]) expands as a grid.
    A job whose folder holds a result with the same settings is skipped, so a rerun finishes only
    what is missing. A failing job is reported and the others go on. Writes OUT/summary.md,
    OUT/summary.csv and OUT/pareto.png (memory vs held-out loss). See docs/batch.md.

    \b
    Exit codes: 0 every job finished (and passed its check), 1 a job failed or a check found a
    regression, 2 the file is invalid or the Dask workers cannot read its files (nothing runs),
    130 interrupted.
    Examples:
      optsearch batch configs/eps_sweep.yaml --jobs 2
      optsearch batch configs/zoo.yaml --executor dask --scheduler tcp://head-node:8786
    """
    from optsearch.config.schema import load_batch, parse_overrides
    from optsearch.run.batch import decide, plan, run_batch, select, write_junit, write_summary

    config = load_batch(config_file, parse_overrides(overrides))
    given = explicit_settings(ctx, BATCH_SETTINGS)
    executor = executor if "executor" in given else config.executor
    if "scheduler" in given and executor != "dask":
        raise click.UsageError("--scheduler is the address of a Dask scheduler; add --executor dask", ctx)
    scheduler = scheduler if "scheduler" in given else config.scheduler if executor == "dask" else None
    if executor == "dask" and not dry_run:
        from optsearch.run.executors import require_dask

        require_dask()  # before anything is written: one line saying what to install
    root = out_dir or (Path(config.out) if config.out else Path("runs") / config_file.stem)
    jobs = plan(config, root)
    names = [job.name for job in jobs]
    if only and not any(fnmatch.fnmatchcase(n, pattern) for n in names for pattern in only):
        raise click.UsageError(f"--only {' '.join(only)} matches no job; the jobs: {', '.join(names)}", ctx)
    if any(job.folder.exists() for job in jobs) or (workers == 1 and executor == "local" and not dry_run):
        quiet_tensorflow()  # comparing a finished job's settings, or running here, imports it
    planned = select([decide(job, force) for job in jobs], only)
    if dry_run:
        for p in planned:
            extra = f" ({p.job.varied_text})" if p.job.varied_text else ""
            reason = f": {p.reason}" if p.reason else ""
            click.echo(
                f"[{p.job.number}/{len(jobs)}] {p.job.name}{extra} -> {p.job.folder}: {p.action}{reason}"
            )
        return
    title = config_file.stem

    def keep_summary(outcomes: Any) -> None:
        write_summary(root, title, str(config_file), outcomes)

    click.echo(f"{config_file}: {len(jobs)} job{'s' if len(jobs) != 1 else ''} into {root}/")
    with _sigterm_interrupts():
        outcomes = run_batch(
            planned,
            workers,
            echo=click.echo,
            on_change=keep_summary,
            log_dir=root if workers > 1 or executor != "local" else None,
            executor=executor,
            scheduler=scheduler,
        )
    written = write_summary(root, title, str(config_file), outcomes, plot=True)
    if junit is not None:
        from optsearch.run.batch import junit_cases

        write_junit(junit, f"optsearch batch {title}", junit_cases(outcomes))
    bad = [o for o in outcomes if not o.ok]
    tally: dict[str, int] = {}
    for o in outcomes:
        tally[o.status] = tally.get(o.status, 0) + 1
    checked = [o for o in outcomes if o.check_text != "-"]
    click.echo(
        f"wrote {', '.join(str(path) for path in written)}"
        + (f" and {junit}" if junit else "")
        + f"; {', '.join(f'{n} {status}' for status, n in tally.items())}"
        + (
            f"; checks passed: {sum(o.check_text == 'pass' for o in checked)} of {len(checked)}"
            if checked
            else ""
        )
        + (f"; not ok: {', '.join(o.job.name for o in bad)}" if bad else "")
    )
    if bad:
        ctx.exit(EXIT_REGRESSION)
