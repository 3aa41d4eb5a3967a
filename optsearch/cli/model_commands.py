"""``optsearch inspect`` and ``optsearch evaluate``: what would be quantized, and how accurate it is."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click

from optsearch.cli.options import UserError, data_options, model_options, offset_rule_option, schema_options
from optsearch.core.tensors import FOLD_MODES, FoldMode
from optsearch.model.environment import quiet_tensorflow
from optsearch.render.report import less_than


@click.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@model_options
def inspect(model: Path, unsafe_load: bool, activation_point: str) -> None:
    """List the layers of MODEL that optsearch quantizes, with sizes and multiply-accumulates.

    MODEL is a .keras file or a legacy Keras .h5 file (Keras 2.x files included).
    """
    quiet_tensorflow()
    from optsearch.run.evaluation import inspect_model

    summary = inspect_model(model, unsafe_load=unsafe_load, activation_point=activation_point)  # type: ignore[arg-type]
    rows = summary.rows
    click.echo(f"{model}: {len(rows)} quantizable layers, input {summary.input_shape}")
    header = ("l", "layer", "type", "activations quantized at", "weights", "biases", "acts/sample", "MACs")
    keys = ("index", "layer", "type", "activation_at", "weights", "biases", "activations", "macs")
    table = [header] + [tuple(str(r[k]) for k in keys) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    click.echo(f"total: {summary.parameters:,} weights and biases, {summary.macs:,} MACs per sample")


@click.command()
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
@schema_options(["confidence"])
@click.option(
    "--fold-bn",
    "fold_bn",
    type=click.Choice(FOLD_MODES),
    default=None,
    help="Fold BatchNorm layers as `run --fold-bn` does before quantizing. Default: as the run that "
    "wrote --formats folded them (its formats name the folded model's tensors), else off.",
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
    confidence: float,
    fold_bn: FoldMode | None,
    save_quantized: Path | None,
) -> None:
    """Accuracy of MODEL in float and quantized, on the search and held-out data.

    Quantized means every weight, bias and activation at (BW, F0(BW)), or the formats of a
    formats.json (--formats). Accuracy is top-1; the loss is relative, da = (a - a_q) / a (eq. 6).
    """
    if save_quantized is not None and save_quantized.suffix != ".keras":
        raise UserError(f"--save-quantized {save_quantized}: the file name must end in .keras")
    quiet_tensorflow()
    from optsearch.run.evaluation import evaluate_formats
    from optsearch.settings import DataSettings

    started = time.perf_counter()
    evaluation, inputs = evaluate_formats(
        model,
        DataSettings(data_spec, scale, resize, search_fraction, seed),
        bw=bw,
        formats_file=formats_file,
        offset_rule=offset_rule,  # type: ignore[arg-type]
        activation_point=activation_point,  # type: ignore[arg-type]
        fold_bn=fold_bn,
        unsafe_load=unsafe_load,
        batch_size=batch_size,
        confidence=confidence,
    )
    label = evaluation.label
    for part in evaluation.parts:
        if part.warning is not None:
            click.echo(part.warning, err=True)
        low, high = part.loss_interval
        click.echo(
            f"{part.part:8s} {part.samples:6d} samples  float {part.float_accuracy:.4%}  "
            f"{label} {part.quantized_accuracy:.4%}  loss {part.loss:+.4%} "
            f"({part.confidence:.0%} CI {low:+.2%} .. {high:+.2%}, L/G {part.losses}/{part.gains})"
        )
    for cost in evaluation.costs:
        saving = cost.saving
        click.echo(
            f"{label}: memory {cost.memory_bytes:,.0f} bytes ({less_than(saving['memory'], cost.baseline)}), "
            f"multiply cost {less_than(saving['multiply_cost'], cost.baseline)}"
        )
    if save_quantized is not None:
        with _atomic_path(save_quantized) as tmp:
            inputs.qmodel.save(str(tmp))
        click.echo(f"saved the {label} model to {save_quantized}")
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
