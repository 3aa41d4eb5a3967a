"""``optsearch export`` and ``optsearch verify``: hand a result to hardware, and prove the hand-off.

Registered on the main ``cli`` group by cli.py. Errors are ``OptsearchError``s: one line, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from optsearch.model.environment import quiet_tensorflow

if TYPE_CHECKING:  # for annotations only: the verify code is imported when the command runs
    from optsearch.deploy.integer_ref import LayerAgreement

TARGETS = ("hls4ml", "c", "qonnx")
"""The names of ``optsearch.deploy.exporters.EXPORTERS`` (kept here so that --help imports no exporter)."""


def _load(result_dir: Path) -> Any:
    quiet_tensorflow()
    from optsearch.run.deployed import load_result

    return load_result(result_dir)


@click.command("export")
@click.argument("result_dir", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "targets",
    type=click.Choice(TARGETS),
    multiple=True,
    required=True,
    help="hls4ml: the per-layer hls4ml configuration (JSON, YAML and a Python helper). c: a C header "
    "with the integer weights and formats, and a reference C inference (sequential models). qonnx: "
    "model.onnx, the network with a QONNX Quant node at every format (needs pip install "
    "'optsearch[qonnx]'; docs/qonnx.md). Repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: RESULT_DIR/export). Each target writes into its own subfolder.",
)
@click.option("--overwrite", is_flag=True, help="Replace the target subfolders if they exist.")
@click.option(
    "--input-format",
    type=(click.IntRange(2, 64), int),
    default=None,
    metavar="BW F",
    help="hls4ml: the input type (BW, F) = ap_fixed<BW, BW-F, AP_RND_CONV, AP_SAT_SYM>. The tool never "
    "quantizes the input; hls4ml must. Default: the finest --input-bits format holding --input-range.",
)
@click.option(
    "--input-range",
    type=click.FloatRange(0.0, min_open=True),
    default=None,
    help="hls4ml: the largest input magnitude the hls4ml model sees (default: 0..255 pixels through the "
    "model's leading Rescaling, e.g. 1.0 for Rescaling(1/255)).",
)
@click.option(
    "--input-bits",
    type=click.IntRange(2, 64),
    default=16,
    show_default=True,
    help="hls4ml: bits of the default input type.",
)
def export_command(
    result_dir: Path,
    targets: tuple[str, ...],
    out_dir: Path | None,
    overwrite: bool,
    input_format: tuple[int, int] | None,
    input_range: float | None,
    input_bits: int,
) -> None:
    """Export the formats of RESULT_DIR (a folder written by `optsearch run`) for deployment.

    \b
    --to hls4ml  hls4ml_config.json / .yml / .py: every weight, bias and activation precision is
                 ap_fixed<BW, BW-F, AP_RND_CONV, AP_SAT_SYM>, accumulators exact.
    --to c       MODEL_model.h (integer weights, shifts, formats), MODEL_ref.c + optsearch_ref.h.
    --to qonnx   model.onnx: QONNX Quant nodes (scale 2^-F, BW bits, signed, narrow, ROUND) at every
                 format (needs pip install 'optsearch[qonnx]'; docs/qonnx.md).

    See docs/deployment.md. Check the result with `optsearch verify RESULT_DIR`.
    """
    from optsearch.deploy.exporters import exporter
    from optsearch.run.outdir import atomic_dir, check_out_dir

    base = out_dir or result_dir / "export"
    for target in targets:
        check_out_dir(base / target, overwrite)
    result = _load(result_dir)
    for target in dict.fromkeys(targets):
        destination = base / target
        with atomic_dir(destination, overwrite) as tmp:
            written = exporter(target).write(
                result.netlist,
                tmp,
                result.name,
                str(result_dir),
                result.recorded,
                input_format=input_format,
                input_range=input_range,
                input_bits=input_bits,
            )
        files, notes = written.files, written.notes
        click.echo(f"wrote {destination}/ ({', '.join(files)})")
        for note in notes:
            click.echo(f"  note: {note}")


PARTS = ("all", "search", "held-out")


@click.command("verify")
@click.argument("result_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_spec",
    default=None,
    metavar="NPZ|NAME[:SPLIT]",
    help="Data to compare on (default: the data of the run, all samples).",
)
@click.option(
    "--part",
    type=click.Choice(PARTS),
    default="all",
    show_default=True,
    help="Which part of the run's data: all of it, or the search or held-out part of its split "
    "(the same samples the run used; held-out is what the search never saw).",
)
@click.option(
    "--samples", type=click.IntRange(1), default=None, help="Only the first N samples (of the part)."
)
@click.option("--batch-size", type=click.IntRange(1), default=250, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the agreement as JSON to this file.",
)
def verify_command(
    result_dir: Path,
    data_spec: str | None,
    part: str,
    samples: int | None,
    batch_size: int,
    json_path: Path | None,
) -> None:
    """Run the integer reference of RESULT_DIR and compare it with the Keras quantized model.

    The integer reference computes the network from integer codes, shifts and wide accumulators
    (docs/deployment.md). Layer by layer, each activation quantizer is computed from the Keras
    model's own inputs: codes must agree, except one LSB where the exact value sits on a rounding
    boundary that Keras' float32 arithmetic lands on the other side of; the logits so computed must
    give the same argmax on every sample and differ by at most one LSB. Exit code 0 when they do,
    1 otherwise. End to end (the reference alone from the input, where a difference carries on
    into later layers) is reported too.
    """
    if part != "all" and data_spec is not None:
        raise click.UsageError(f"--part {part} picks from the run's own data; leave out --data")
    result = _load(result_dir)
    from optsearch.run.deployed import verify_result

    verification = verify_result(result, data_spec, part, samples, batch_size)
    agreement, spec = verification.agreement, verification.spec
    weighted, causes = verification.weighted_layers, verification.float_causes
    floats = ", ".join(f"{name} ({count})" for name, count in causes.items())
    integer = weighted - sum(causes.values())
    click.echo(
        f"{result_dir}: {verification.samples} samples of {spec}"
        f"{'' if part == 'all' else f' ({part} part)'}; "
        f"{integer} of {weighted} weighted layers "
        "have a fixed-point input (integer-only)"
        + (f", the others read the float output of: {floats}" if causes else "")
    )
    click.echo("layer by layer (each quantizer computed from the Keras model's own inputs):")
    for layer in agreement.layers:
        status = (
            "identical"
            if layer.differ == 0
            else (
                f"{layer.differ} differ by <= {layer.max_diff} LSB, within "
                f"{layer.max_boundary_distance:.1e} LSB of a rounding boundary" + _unexplained(layer)
            )
        )
        click.echo(f"  {layer.name:28s} {layer.codes:>12,d} codes  {status}")
    for label, logits in (
        ("layer by layer, logits", agreement.layer_logits),
        ("end to end (the reference alone from the input)", agreement.end_to_end),
    ):
        diff = agreement.in_lsb(logits.max_diff)
        diff_text = f"{diff:g} LSB" if diff is not None else f"{logits.max_diff:g}"
        click.echo(
            f"{label}: argmax identical on {logits.argmax_equal}/{logits.samples} samples, logits identical "
            f"on {logits.identical}/{logits.samples}, max logit difference {diff_text}"
        )
        if logits.flipped_margins:
            margins = ", ".join(f"{agreement.in_lsb(m) or m:g}" for m in logits.flipped_margins[:10])
            click.echo(f"  argmax differs where the model's top two logits are {margins} LSB apart")
    if agreement.end_to_end.correct is not None:
        reference, model = (100 * c / agreement.samples for c in agreement.end_to_end.correct)
        click.echo(
            f"top-1 accuracy on these samples: integer reference (what fixed-point hardware computes) "
            f"{reference:.2f}%, Keras quantized model {model:.2f}%"
        )
    if json_path is not None:
        json_path.write_text(json.dumps(_as_dict(agreement), indent=2) + "\n")
    if agreement.ok:
        click.echo("verify: OK")
    else:
        click.echo("verify: DISAGREEMENT (see above)")
        raise click.exceptions.Exit(1)


def _unexplained(layer: LayerAgreement) -> str:
    """What float32 rounding does not explain in one quantizer's differing codes (empty: nothing)."""
    if layer.explained:
        return ""
    if layer.max_diff > 1:
        return f"  <-- NOT explained by float32 rounding: codes {layer.max_diff} LSB apart"
    return (
        f"  <-- NOT explained by float32 rounding: {layer.beyond_bound} lie farther from a rounding "
        "boundary than float32 can move them"
    )


def _as_dict(agreement: Any) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(agreement)
    out["samples"] = agreement.samples
    out["ok"] = agreement.ok
    return out
