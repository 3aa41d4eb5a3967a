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
from optsearch.errors import OptsearchError
from optsearch.fixedpoint import OFFSET_RULES
from optsearch.tensors import ACTIVATION_POINTS

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
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
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
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
@click.option(
    "--offset-rule",
    type=click.Choice(OFFSET_RULES),
    default="paper",
    show_default=True,
    help="How F0 is chosen from a tensor's largest magnitude Z: paper = BW-1-ceil(log2 Z) (may clip "
    "Z by one LSB), noclip = the largest F that represents Z.",
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
    save_quantized: Path | None,
) -> None:
    """Float accuracy of MODEL and of its uniform fixed-point version on the search and held-out data.

    Accuracy is top-1; the loss is relative, da = (a - a_q) / a (paper eq. 6).
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
    ranges = activation_ranges(inputs.qmodel, inputs.search, inputs.preprocess, batch_size)
    formats = uniform_formats(inputs.qmodel, bw, ranges, offset_rule)  # type: ignore[arg-type]
    parts = [("search", inputs.search)] + ([("held-out", inputs.held_out)] if inputs.held_out else [])
    for name, part in parts:
        evaluator = KerasEvaluator(inputs.qmodel, part, inputs.preprocess, batch_size)
        result = evaluator.evaluate(formats)
        click.echo(
            f"{name:8s} {len(part):6d} samples  float {evaluator.float_accuracy:.4%}  "
            f"uniform {bw}-bit {result.correct / result.samples:.4%}  loss {result.loss:+.4%}"
        )
    if save_quantized is not None:
        inputs.qmodel.set_formats(formats)
        with _atomic_path(save_quantized) as tmp:
            inputs.qmodel.save(str(tmp))
        click.echo(f"saved the uniform {bw}-bit model to {save_quantized}")
    click.echo(f"done in {time.perf_counter() - started:.1f} s")


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
    cli(prog_name="optsearch")
