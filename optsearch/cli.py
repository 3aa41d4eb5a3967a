"""The ``optsearch`` command line (Click). Nothing imports this module; it only composes the others.

Every problem with the user's input is one line on stderr and exit code 2; nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from optsearch import __version__
from optsearch.allocation import SCHEMES
from optsearch.errors import OptsearchError
from optsearch.fixedpoint import OFFSET_RULES
from optsearch.search import LAYER_ORDERS
from optsearch.tensors import ACTIVATION_POINTS, TENSOR_KINDS

F = TypeVar("F", bound=Callable[..., Any])
EXIT_USER_ERROR = 2


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


def model_options(fn: F) -> F:
    """Options about reading the model."""
    fn = click.option(
        "--activation-point",
        type=click.Choice(ACTIVATION_POINTS),
        default="activation",
        show_default=True,
        help="Where a layer's activations are quantized: after its activation function (the paper), "
        "or at the end of the element-wise chain that follows it (e.g. after a BatchNorm).",
    )(fn)
    return click.option(
        "--unsafe-load",
        is_flag=True,
        help="Allow models whose file stores Python code (Lambda layers). This EXECUTES code from "
        "the file: use it only for files you trust.",
    )(fn)


offset_rule_option = click.option(
    "--offset-rule",
    type=click.Choice(OFFSET_RULES),
    default="paper",
    show_default=True,
    help="How F0 follows from a tensor's largest magnitude Z (eq. 8): paper = BW-1-ceil(log2 Z), which "
    "may clip Z by one LSB; noclip = the largest F that represents Z.",
)


def data_options(fn: F) -> F:
    """Options about the evaluation data and the search/held-out split (spec §4)."""
    options = [
        click.option(
            "--data",
            "data_spec",
            required=True,
            metavar="NPZ|NAME[:SPLIT]",
            help="Labelled evaluation data: a .npz file with x/y (or x_test/y_test), or a dataset name "
            "(mnist, fashion_mnist, cifar10, svhn; test split unless NAME:train). Names are read from "
            "$OPTSEARCH_DATA/<name>.npz when present, else downloaded by keras.datasets.",
        ),
        click.option(
            "--scale",
            type=float,
            default=None,
            help="Multiply the pixels by this (e.g. 0.00392156862745098 for 1/255) when the model "
            "has no Rescaling layer of its own.",
        ),
        click.option(
            "--resize",
            type=(click.IntRange(1), click.IntRange(1)),
            default=None,
            metavar="H W",
            help="Resize the images (bilinear) when the model has no Resizing layer of its own.",
        ),
        click.option(
            "--search-fraction",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            default=0.5,
            show_default=True,
            help="Share of the data the search decides on (stratified per class); the rest is held "
            "out and only reported. 1.0 = no split: search and report on all data, as the paper did.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of the search/held-out split."
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=500,
            show_default=True,
            help="Samples per forward pass. Larger is faster until memory runs out.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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
    from optsearch.graph import describe, find_quantizable_layers
    from optsearch.loading import load_model

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
    "keras.saving.load_model after `import optsearch.quantizer_layer`).",
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
    from optsearch.graph import uniform_formats
    from optsearch.inputs import DataSettings, prepare
    from optsearch.keras_evaluator import KerasEvaluator, activation_ranges

    started = time.perf_counter()
    settings = DataSettings(data_spec, scale, resize, search_fraction, seed)
    inputs = prepare(model, settings, unsafe_load=unsafe_load, activation_point=activation_point)  # type: ignore[arg-type]
    if formats_file is not None:
        from optsearch.runner import load_formats

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
        click.echo(
            f"{name:8s} {len(part):6d} samples  float {evaluator.float_accuracy:.4%}  "
            f"{label} {result.correct / result.samples:.4%}  loss {result.loss:+.4%}"
        )
    from optsearch.costs import FLOAT_BITS, network_cost, uniform_bits

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
    order = tuple(text.replace(",", "").replace(">", "").replace("-", "").replace(" ", "").upper())
    if sorted(order) != sorted(TENSOR_KINDS):
        raise UserError(f"--order {text}: give each of W, B, A once, e.g. WBA (the paper) or AWB")
    return order


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@data_options
@model_options
@click.option(
    "--eps",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="Accuracy loss budget, relative: 0.01 lets top-1 accuracy drop by 1% of itself (paper eq. 6).",
)
@click.option(
    "--independent",
    is_flag=True,
    help="Evaluate each tensor with every other tensor in float (the paper's first method; combining the "
    "results naively can lose far more than eps). Default: dependent, every decided format applied.",
)
@click.option(
    "--bw0",
    type=(click.IntRange(2, 24), click.IntRange(2, 24), click.IntRange(2, 24)),
    default=None,
    metavar="W B A",
    help="Starting bitwidths for weights, biases, activations. Default 12 8 12 (dependent) or 8 8 8 "
    "(independent); a start that loses more than the budget is raised by 4, up to 24.",
)
@click.option(
    "--delta",
    type=click.FloatRange(0.0),
    default=0.0015,
    show_default=True,
    help="The local search's result replaces the diagonal's only if its loss is lower by at least this; "
    "otherwise the one with fewer bits wins (Alg. 2, lines 25-34).",
)
@offset_rule_option
@click.option(
    "--order",
    "type_order",
    default="WBA",
    show_default=True,
    help="Order of the tensor types: any permutation of W, B, A.",
)
@click.option(
    "--layer-order",
    type=click.Choice(LAYER_ORDERS),
    default="forward",
    show_default=True,
    help="Layers first to last, or last to first.",
)
@click.option(
    "--interleave",
    is_flag=True,
    help="Search all tensors of layer 1, then of layer 2, ... (instead of all weights, then all biases).",
)
@click.option(
    "--allocation",
    type=click.Choice(("paper", *SCHEMES)),
    default=None,
    help="How eps is shared between layers (eq. 9). paper (the default for dependent search) = weights "
    "linear over (0, eps/2], biases constant eps/2, activations linear over (eps/2, eps]; a scheme name "
    "uses that growth with the same ranges. Independent search defaults to eps for every tensor.",
)
@click.option(
    "--budget",
    "budgets",
    type=(click.Choice(TENSOR_KINDS), click.Choice(SCHEMES), click.FloatRange(0.0), click.FloatRange(0.0)),
    multiple=True,
    metavar="TYPE SCHEME START END",
    help="Override one tensor type's budget: e.g. --budget A quadratic 0.5 1.0 gives activations a "
    "quadratic share from 0.5*eps to 1.0*eps. Repeatable.",
)
@click.option(
    "--input-bits",
    type=click.IntRange(1, 32),
    default=8,
    show_default=True,
    help="Bitwidth of the network input, for the bit-operations count (BOPs).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: MODEL-NAME_optsearch next to the current directory). It must not exist "
    "unless --overwrite; it appears only when the run has finished.",
)
@click.option("--overwrite", is_flag=True, help="Replace the output folder if it exists.")
@click.option(
    "--cache-mb",
    type=click.FloatRange(0.0),
    default=1024.0,
    show_default=True,
    help="Memory for the activations upstream of the tensor being searched (computed once per tensor, "
    "so each candidate runs only the rest of the network). Beyond it they are recomputed.",
)
def run(
    model: Path,
    data_spec: str,
    scale: float | None,
    resize: tuple[int, int] | None,
    search_fraction: float,
    seed: int,
    batch_size: int,
    unsafe_load: bool,
    activation_point: str,
    eps: float,
    independent: bool,
    bw0: tuple[int, int, int] | None,
    delta: float,
    offset_rule: str,
    type_order: str,
    layer_order: str,
    interleave: bool,
    allocation: str | None,
    budgets: tuple[tuple[str, str, float, float], ...],
    input_bits: int,
    out_dir: Path | None,
    overwrite: bool,
    cache_mb: float,
) -> None:
    """Search the smallest format (BW, F) of every weights, biases and activations tensor of MODEL.

    The OptSearchCNN method (Alg. 2): per tensor, a diagonal descent of (BW, F), a bitwidth
    reduction and a 3x3 local search, keeping the accuracy loss on the search set within the
    tensor's share of --eps. Writes formats.json, formats.csv, report.md, search_log.jsonl, plots
    and quantized.keras into --out.

    \b
    Example:
      optsearch run model.keras --data mnist --eps 0.01 --out runs/mnist
    """
    order = _parse_order(type_order)
    out = out_dir or Path(f"{model.stem}_optsearch")
    from optsearch.allocation import PAPER_ALLOCATION, Allocation, constant_allocation, uniform_allocation
    from optsearch.search import DEPENDENT_BW0, INDEPENDENT_BW0, SearchSettings

    if allocation is None:
        rules = constant_allocation(1.0) if independent else dict(PAPER_ALLOCATION)
    else:
        rules = dict(PAPER_ALLOCATION) if allocation == "paper" else uniform_allocation(allocation)  # type: ignore[arg-type]
    for kind, scheme, start, end in budgets:
        rules[kind] = Allocation(scheme, start, end)  # type: ignore[arg-type, index]
    bw0_map = (
        dict(zip(TENSOR_KINDS, bw0, strict=True))
        if bw0
        else dict(INDEPENDENT_BW0 if independent else DEPENDENT_BW0)
    )
    try:
        settings = SearchSettings(
            eps=eps,
            independent=independent,
            bw0=bw0_map,  # type: ignore[arg-type]
            delta=delta,
            offset_rule=offset_rule,  # type: ignore[arg-type]
            type_order=order,  # type: ignore[arg-type]
            layer_order=layer_order,  # type: ignore[arg-type]
            interleave=interleave,
            allocation=rules,  # type: ignore[arg-type]
        )
    except ValueError as err:
        raise UserError(str(err)) from err
    from optsearch.outdir import check_out_dir

    check_out_dir(out, overwrite)
    _quiet_tensorflow()
    from optsearch.inputs import DataSettings
    from optsearch.report import summary_lines
    from optsearch.runner import RunRequest
    from optsearch.runner import run as run_search

    request = RunRequest(
        model_path=model,
        data=DataSettings(data_spec, scale, resize, search_fraction, seed),
        search=settings,
        out_dir=out,
        overwrite=overwrite,
        unsafe_load=unsafe_load,
        activation_point=activation_point,  # type: ignore[arg-type]
        batch_size=batch_size,
        input_bits=input_bits,
        cache_mb=cache_mb,
    )
    result = run_search(request, echo=click.echo)
    for line in summary_lines(result):
        click.echo(line)
    click.echo(
        f"wrote {out}/ (report.md, formats.json, formats.csv, search_log.jsonl, plots, quantized.keras)"
    )


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


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="optsearch")
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
