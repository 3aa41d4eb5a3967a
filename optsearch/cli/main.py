"""The ``optsearch`` command line (Click). Nothing imports this module; it only composes the others.

Every problem with the user's input is one line on stderr and exit code 2; nothing is written.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from optsearch import __version__
from optsearch.config.schema import (
    CHECK_SETTINGS,
    CHECKS,
    DATA_SETTINGS,
    MODEL_SETTINGS,
    RUN_SETTINGS,
    SETTINGS,
    Setting,
    Value,
    parse_order,
)
from optsearch.core.errors import OptsearchError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_REGRESSION = 1
"""A check found a regression, or a batch job failed."""
EXIT_USER_ERROR = 2
"""Invalid input (file, model, data, settings, config): nothing ran or was written."""


class UserError(click.ClickException):
    """An ``OptsearchError`` shown the Click way: ``Error: <message>``, exit code 2."""

    exit_code = EXIT_USER_ERROR


class _Group(click.Group):
    """Turns tool errors into one-line messages; a traceback only with OPTSEARCH_DEBUG=1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OptsearchError as err:
            raise UserError(str(err)) from err
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, BrokenPipeError):
            raise
        except Exception as err:
            if os.environ.get("OPTSEARCH_DEBUG"):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise click.ClickException(
                f"internal error: {type(err).__name__}: {first} "
                "(this is a bug in optsearch; rerun with OPTSEARCH_DEBUG=1 to see the traceback)"
            ) from err


def _quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up chatter (absl, oneDNN notices) sent to /dev/null."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                import keras  # noqa: F401
                import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    import tensorflow

    # One traced function per searched tensor is by design: no "retracing" notices.
    tensorflow.get_logger().setLevel("ERROR")


def _click_type(setting: Setting) -> Any:
    """The click type of a setting, from its schema entry (ranges and choices included)."""

    def scalar(value: Value) -> Any:
        if value.kind in ("int", "float"):
            if value.low is None and value.high is None:
                return int if value.kind == "int" else float
            kind = click.IntRange if value.kind == "int" else click.FloatRange
            return kind(value.low, value.high, min_open=value.low_open, max_open=value.high_open)  # type: ignore[arg-type]
        if value.kind == "choice":
            return click.Choice(value.choices)
        if value.kind == "path":
            return click.Path(file_okay=setting.cli_type != "dir", path_type=Path)
        return str

    if isinstance(setting.value, tuple):
        return tuple(scalar(v) for v in setting.value)
    return scalar(setting.value)


def _param(setting: Setting, optional: bool) -> Callable[[F], F]:
    """The click argument or option of one schema entry; ``optional`` when a --config file may give it."""
    required = setting.required and not optional
    if setting.argument:
        return click.argument(setting.param, type=_click_type(setting), required=required)
    if setting.values[0].kind == "bool":
        flags = f"{setting.flag}/{setting.off_flag}" if setting.off_flag else setting.flag
        return click.option(flags, setting.param, default=bool(setting.default), help=setting.help)
    return click.option(
        setting.flag,
        setting.param,
        type=_click_type(setting),
        default=() if setting.multiple else setting.default,
        show_default=setting.show_default and setting.default is not None,
        required=required,
        multiple=setting.multiple,
        metavar=setting.metavar,
        help=setting.help,
    )


def schema_options(names: Iterable[str] | Iterable[Setting], *, optional: bool = False) -> Callable[[F], F]:
    """The options (and MODEL argument) of these schema entries, in order: the CLI's only declaration."""
    settings = [SETTINGS[n] if isinstance(n, str) else n for n in names]

    def decorate(fn: F) -> F:
        for setting in reversed(settings):
            fn = _param(setting, optional)(fn)
        return fn

    return decorate


model_options = schema_options(MODEL_SETTINGS)
"""Options about reading the model."""
data_options = schema_options(DATA_SETTINGS)
"""Options about the evaluation data and the search/held-out split (spec §4)."""
offset_rule_option = schema_options(["offset_rule"])


def _explicit(ctx: click.Context, settings: Iterable[Setting]) -> list[str]:
    """The settings given on the command line (not left at their defaults): these override a file."""
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    return [s.name for s in settings if ctx.get_parameter_source(s.param) not in defaults]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="optsearch")
def cli() -> None:
    """Find the smallest fixed-point format (BW, F) for every layer of a trained Keras CNN.

    optsearch quantizes the weights, biases and activations of every Dense and convolution layer
    without retraining, keeping the top-1 accuracy loss within a budget (the OptSearchCNN method).

    \b
    Start with:
      optsearch inspect model.keras                    what would be quantized
      optsearch run model.keras --data mnist --eps 0.01   the search (writes a report folder)
      optsearch evaluate model.keras --data mnist      float and uniform 8-bit accuracy
    """


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@model_options
def inspect(model: Path, unsafe_load: bool, activation_point: str) -> None:
    """List the layers of MODEL that optsearch quantizes, with sizes and multiply-accumulates.

    MODEL is a .keras file or a legacy Keras .h5 file (Keras 2.x files included).
    """
    _quiet_tensorflow()
    from optsearch.model.graph import describe, find_quantizable_layers
    from optsearch.model.loading import load_model

    loaded = load_model(model, unsafe=unsafe_load)
    try:
        layers = find_quantizable_layers(loaded, activation_point)  # type: ignore[arg-type]
    except OptsearchError as err:
        raise UserError(f"{model}: {err}") from err
    rows = describe(layers)
    click.echo(f"{model}: {len(rows)} quantizable layers, input {tuple(loaded.inputs[0].shape[1:])}")
    header = ("l", "layer", "type", "activations quantized at", "weights", "biases", "acts/sample", "MACs")
    keys = ("index", "layer", "type", "activation_at", "weights", "biases", "activations", "macs")
    table = [header] + [tuple(str(r[k]) for k in keys) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    total_macs = sum(r["macs"] for r in rows)
    total_params = sum(r["weights"] + r["biases"] for r in rows)
    click.echo(f"total: {total_params:,} weights and biases, {total_macs:,} MACs per sample")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@data_options
@model_options
@click.option(
    "--bw",
    type=click.IntRange(2, 32),
    default=8,
    show_default=True,
    help="Bitwidth of the uniform baseline: every weight, bias and activation at (BW, F0(BW)).",
)
@offset_rule_option
@click.option(
    "--formats",
    "formats_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Apply the formats of this formats.json (written by `optsearch run`, or edited by hand) "
    "instead of the uniform --bw formats, and report accuracy and costs.",
)
@click.option(
    "--save-quantized",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also save the uniformly quantized model as a .keras file (loads with "
    "keras.saving.load_model after `import optsearch.model.quantizer_layer`).",
)
def evaluate(
    model: Path,
    data_spec: str,
    scale: float | None,
    resize: tuple[int, int] | None,
    search_fraction: float,
    seed: int,
    batch_size: int,
    unsafe_load: bool,
    activation_point: str,
    bw: int,
    offset_rule: str,
    formats_file: Path | None,
    save_quantized: Path | None,
) -> None:
    """Accuracy of MODEL in float and quantized, on the search and held-out data.

    Quantized means every weight, bias and activation at (BW, F0(BW)), or the formats of a
    formats.json (--formats). Accuracy is top-1; the loss is relative, da = (a - a_q) / a (eq. 6).
    """
    if save_quantized is not None and save_quantized.suffix != ".keras":
        raise UserError(f"--save-quantized {save_quantized}: the file name must end in .keras")
    _quiet_tensorflow()
    from optsearch.evaluate.keras import KerasEvaluator, activation_ranges, below_chance_warning
    from optsearch.model.graph import uniform_formats
    from optsearch.run.inputs import DataSettings, prepare

    started = time.perf_counter()
    settings = DataSettings(data_spec, scale, resize, search_fraction, seed)
    inputs = prepare(model, settings, unsafe_load=unsafe_load, activation_point=activation_point)  # type: ignore[arg-type]
    if formats_file is not None:
        from optsearch.run.runner import load_formats

        formats = load_formats(formats_file, inputs.qmodel)
        label = f"{formats_file.name}"
    else:
        ranges = activation_ranges(inputs.qmodel, inputs.search, inputs.preprocess, batch_size)
        formats = uniform_formats(inputs.qmodel, bw, ranges, offset_rule)  # type: ignore[arg-type]
        label = f"uniform {bw}-bit"
    parts = [("search", inputs.search)] + ([("held-out", inputs.held_out)] if inputs.held_out else [])
    for name, part in parts:
        evaluator = KerasEvaluator(inputs.qmodel, part, inputs.preprocess, batch_size)
        result = evaluator.evaluate(formats)
        warning = below_chance_warning(evaluator.float_accuracy, inputs.num_classes, f"{name} set")
        if warning is not None:
            click.echo(warning, err=True)
        click.echo(
            f"{name:8s} {len(part):6d} samples  float {evaluator.float_accuracy:.4%}  "
            f"{label} {result.correct / result.samples:.4%}  loss {result.loss:+.4%}"
        )
    from optsearch.core.costs import FLOAT_BITS, network_cost, uniform_bits

    layers = inputs.qmodel.layers
    found = network_cost(layers, {t: f.bw for t, f in formats.items()})
    for name, base in (
        ("8-bit", network_cost(layers, uniform_bits(layers, 8))),
        ("float32", network_cost(layers, uniform_bits(layers, FLOAT_BITS), FLOAT_BITS)),
    ):
        saving = found.saving(base)
        click.echo(
            f"{label}: memory {found.memory_bytes:,.0f} bytes ({saving['memory']:.2%} less than {name}), "
            f"multiply cost {saving['multiply_cost']:.2%} less than {name}"
        )
    if save_quantized is not None:
        inputs.qmodel.set_formats(formats)
        with _atomic_path(save_quantized) as tmp:
            inputs.qmodel.save(str(tmp))
        click.echo(f"saved the {label} model to {save_quantized}")
    click.echo(f"done in {time.perf_counter() - started:.1f} s")


def _parse_order(text: str) -> tuple[str, ...]:
    try:
        return parse_order(text)
    except ValueError as err:
        raise UserError(f"--order {text}: {err}") from err


@cli.command()
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

    The OptSearchCNN method (Alg. 2): per tensor, a diagonal descent of (BW, F), a bitwidth
    reduction and a 3x3 local search, keeping the accuracy loss on the search set within the
    tensor's share of --eps. Writes formats.json, formats.csv, report.md, search_log.jsonl, plots
    and quantized.keras into --out.

    \b
    Examples:
      optsearch run model.keras --data mnist --eps 0.01 --out runs/mnist
      optsearch run --config job.yaml --eps 0.02     (the file's settings, eps from here)
    """
    from optsearch.config.schema import load_run_file, merge_run, missing_required, search_settings

    run_file = load_run_file(config_file) if config_file is not None else None
    explicit = _explicit(ctx, RUN_SETTINGS)
    cli_values = {s.name: options[s.param] for s in RUN_SETTINGS}
    values = merge_run(run_file.values if run_file else {}, cli_values, explicit)
    for setting in missing_required(values):
        what = f"argument '{setting.name.upper()}'" if setting.argument else f"option '{setting.flag}'"
        raise click.UsageError(f"Missing {what} (or {setting.name}: in the --config file).", ctx)
    _parse_order(values["order"])
    model = Path(values["model"])
    out = Path(values["out"]) if values["out"] else Path(f"{model.stem}_optsearch")
    values["out"] = str(out)
    try:
        search_settings(values)
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
    _quiet_tensorflow()
    from optsearch.config.schema import command_line
    from optsearch.render.report import summary_lines
    from optsearch.run.batch import request_for
    from optsearch.run.runner import RunInterrupted
    from optsearch.run.runner import run as run_search

    try:
        with _sigterm_interrupts():
            result = run_search(request_for(values), echo=click.echo)
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
    from optsearch.run.outdir import FOLDED_MODEL_FILE, MODEL_FILE

    folded = f", {FOLDED_MODEL_FILE}" if (out / FOLDED_MODEL_FILE).is_file() else ""
    click.echo(
        f"wrote {out}/ (report.md, formats.json, formats.csv, search_log.jsonl, plots, {MODEL_FILE}{folded})"
    )
    if gate is not None and not _gate(out, gate, junit=None, classname=out.name):
        ctx.exit(EXIT_REGRESSION)


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


@cli.command()
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
    for name in _explicit(ctx, CHECK_SETTINGS):
        section[name] = CHECKS[name].canonical(options[CHECKS[name].param])
    if section.get("baseline") is None:
        raise click.UsageError("Missing option '--baseline' (or baseline: under check: in --config).", ctx)
    gate = gate_settings(section)
    name = (result.parent if result.suffix == ".json" else result).name
    gate["baseline"] = str(gate["baseline"]).replace("{name}", name)
    if not _gate(result, gate, junit, name):
        ctx.exit(EXIT_REGRESSION)


@cli.command()
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--jobs",
    "-j",
    "workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Run this many jobs at a time, each in its own process (its output goes to OUT/JOB.log).",
)
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
) -> None:
    """Run every job of the YAML batch file CONFIG, each into its own folder, and summarise them.

    The file has defaults: (settings of every job), jobs: (a list of settings, as `run --config`
    takes them), optionally out: and check:. A list value (eps: [0.005, 0.01]) expands as a grid.
    A job whose folder holds a result with the same settings is skipped, so a rerun finishes only
    what is missing. A failing job is reported and the others go on. Writes OUT/summary.md,
    OUT/summary.csv and OUT/pareto.png (memory vs held-out loss). See docs/batch.md.

    \b
    Exit codes: 0 every job finished (and passed its check), 1 a job failed or a check found a
    regression, 2 the file is invalid (nothing runs), 130 interrupted.
    Example:
      optsearch batch configs/eps_sweep.yaml --jobs 2
    """
    from optsearch.config.schema import load_batch, parse_overrides
    from optsearch.run.batch import decide, plan, run_batch, select, write_junit, write_summary

    config = load_batch(config_file, parse_overrides(overrides))
    root = out_dir or (Path(config.out) if config.out else Path("runs") / config_file.stem)
    jobs = plan(config, root)
    names = [job.name for job in jobs]
    if only and not any(fnmatch.fnmatchcase(n, pattern) for n in names for pattern in only):
        raise click.UsageError(f"--only {' '.join(only)} matches no job; the jobs: {', '.join(names)}", ctx)
    if any(job.folder.exists() for job in jobs) or (workers == 1 and not dry_run):
        _quiet_tensorflow()  # comparing a finished job's settings, or running here, imports it
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
            planned, workers, echo=click.echo, on_change=keep_summary, log_dir=root if workers > 1 else None
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


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


from optsearch.cli.deploy import export_command, verify_command  # noqa: E402

cli.add_command(export_command)
cli.add_command(verify_command)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="optsearch")
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
