"""Per-channel weight ranges of trained models, and what one power-of-two format per tensor costs (issue 19).

For each model (default: the zoo's trained MobileNetV1-0.25 and, as the control without depthwise
layers, ResNet-8, both on CIFAR-10) and each BatchNorm folding mode (``--fold-bn exact``, what the
search sees with folding on, and ``off``, the default of ``optsearch run``), it measures:

1. per quantizable layer, the per-output-channel largest magnitudes ``Z_c`` of its weights: their
   spread ``max_c Z_c / min_c Z_c`` (and log2), and at ``(BW, F0(BW, Z))`` per tensor how many
   channels keep at most ``LOW_BITS`` magnitude bits in their largest code, and which share of the
   tensor's codes are zero (all of them, those in such low channels, and with per-channel F);
2. the relative loss ``da = (a - a_q) / a`` on the held-out half (``--search-fraction 0.5 --seed 0``,
   as docs/results.md) with only that layer's weights at ``(BW, F0)`` per tensor, the rest float;
   and of the whole network at uniform BW (all W, B, A: ``optsearch evaluate MODEL --bw BW``), with
   the weights only, weights and biases only, and activations only;
3. an EMULATION of the proposed per-channel F (not a feature of optsearch): each output channel's
   kernel quantized with its own ``F0(BW, Z_c)`` (``optsearch.core.fixedpoint.quantize``) and
   written into the quantized model's kernel variables for the evaluation, per layer and for the
   whole network (weights only; and with biases and activations per tensor as in step 2).

Activation ranges come from the search half, losses from the held-out half, through
``KerasEvaluator`` (the project's evaluator), with two-sided 95% intervals (``core.confidence``).

    OPTSEARCH_DATA=/work/shared/datasets .venv/bin/python scripts/per_channel_ranges.py

writes docs/models/per_channel.json (every number, versions, command) and docs/models/per_channel.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from optsearch.core.confidence import DEFAULT_CONFIDENCE, loss_interval
from optsearch.core.fixedpoint import Format, OffsetRule, largest_magnitude, quantize, start_format
from optsearch.core.tensors import FoldMode, TensorId
from optsearch.evaluators.keras import KerasEvaluator, activation_ranges
from optsearch.model.graph import QuantizableLayer, QuantizedModel, uniform_formats
from optsearch.run.inputs import Inputs, prepare
from optsearch.settings import DataSettings

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("models/mobilenet_v1_cifar10.keras", "models/resnet8_cifar10.keras")
FOLDS: tuple[FoldMode, ...] = ("exact", "off")
BITS = (8, 6, 4)
#: A channel whose largest code has at most this many magnitude bits (sign not counted) is "low".
LOW_BITS = 2
RULE: OffsetRule = "paper"
JSON_OUT = ROOT / "docs" / "models" / "per_channel.json"
MD_OUT = ROOT / "docs" / "models" / "per_channel.md"


# --- Channels ------------------------------------------------------------------------------------


def is_depthwise(class_name: str, variable_name: str) -> bool:
    """Whether a kernel's output channels are its last two axes (input channel x depth multiplier)."""
    return class_name.startswith("Depthwise") or variable_name.endswith("depthwise_kernel")


def channel_columns(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """``kernel`` as ``(values per channel, output channels)``: one column per output channel."""
    channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
    return kernel.reshape(-1, channels)


def channel_maxima(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """``Z_c = max |w|`` of every output channel."""
    maxima: np.ndarray = np.max(np.abs(channel_columns(kernel, depthwise)), axis=0)
    return maxima


def quantize_per_channel(kernel: np.ndarray, bw: int, depthwise: bool, rule: OffsetRule = RULE) -> np.ndarray:
    """``kernel`` with every output channel at its own ``(bw, F0(bw, Z_c))`` (zero channels stay zero)."""
    columns = channel_columns(kernel, depthwise)
    out = np.empty_like(columns)
    for c in range(columns.shape[1]):
        fmt = start_format(largest_magnitude(columns[:, c]), bw, rule)
        out[:, c] = quantize(columns[:, c], fmt)
    return out.reshape(kernel.shape)


def magnitude_bits(codes: np.ndarray) -> np.ndarray:
    """Bits of ``|code|`` (0 for 0): how much of the format a channel's largest code uses."""
    magnitudes = np.abs(codes).astype(np.int64)
    bits = np.zeros(magnitudes.shape, dtype=np.int64)
    positive = magnitudes > 0
    bits[positive] = np.floor(np.log2(magnitudes[positive])).astype(np.int64) + 1
    return bits


@dataclass(frozen=True)
class RangeStats:
    """Per-channel ranges of one layer's weights against one format per tensor at ``bw`` bits."""

    channels: int
    zero_channels: int
    """Channels whose weights are all exactly zero (left out of the spread)."""
    spread: float
    """``max_c Z_c / min_c Z_c`` over the non-zero channels."""
    log2_spread: float
    tensor_format: str
    """``(bw, F0(bw, Z))`` of the whole tensor."""
    low_channels: float
    """Share of channels whose largest code at the tensor's format has at most ``LOW_BITS`` bits."""
    median_channel_bits: float
    """Median over channels of the bits of the channel's largest code (``bw - 1`` available)."""
    zero_codes: float
    """Share of the tensor's weights that quantize to 0 at the tensor's format."""
    zero_codes_low: float
    """Share of the tensor's weights that quantize to 0 and lie in low channels."""
    zero_codes_per_channel: float
    """Share of the tensor's weights that quantize to 0 with per-channel F."""
    worst_sqnr_db: float
    """The lowest over channels of the channel's signal to quantization noise at the tensor's format,
    ``10 log10(|w_c|^2 / |w_c - Q(w_c)|^2)`` (a whole-tensor SQNR would hide small channels)."""
    worst_sqnr_db_per_channel: float
    """The same with per-channel F."""


def range_stats(kernels: Sequence[tuple[np.ndarray, bool]], bw: int, rule: OffsetRule = RULE) -> RangeStats:
    """``RangeStats`` of a layer's kernels (``(values, depthwise)`` each; one format over all of them)."""
    z = max(largest_magnitude(k) for k, _ in kernels)
    fmt = start_format(z, bw, rule)
    maxima = np.concatenate([channel_maxima(k, d) for k, d in kernels])
    scale = 2.0**fmt.f
    zero_codes = low_zero = per_channel_zero = total = 0
    sqnr: list[np.ndarray] = []
    sqnr_per_channel: list[np.ndarray] = []
    low_count = 0
    bits_per_channel: list[np.ndarray] = []
    for kernel, depthwise in kernels:
        columns = channel_columns(kernel.astype(np.float64), depthwise)
        codes = quantize(columns, fmt) * scale
        bits = magnitude_bits(np.max(np.abs(codes), axis=0))
        low = bits <= LOW_BITS
        zero = codes == 0
        zero_codes += int(np.sum(zero))
        low_zero += int(np.sum(zero[:, low]))
        low_count += int(np.sum(low))
        per_channel = quantize_per_channel(columns, bw, False, rule)
        per_channel_zero += int(np.sum(per_channel == 0))
        sqnr.append(channel_sqnr_db(columns, codes / scale))
        sqnr_per_channel.append(channel_sqnr_db(columns, per_channel))
        total += columns.size
        bits_per_channel.append(bits)
    nonzero = maxima[maxima > 0]
    spread = float(np.max(nonzero) / np.min(nonzero)) if nonzero.size else float("nan")
    return RangeStats(
        channels=int(maxima.size),
        zero_channels=int(np.sum(maxima == 0)),
        spread=spread,
        log2_spread=float(np.log2(spread)),
        tensor_format=str(fmt),
        low_channels=low_count / maxima.size,
        median_channel_bits=float(np.median(np.concatenate(bits_per_channel))),
        zero_codes=zero_codes / total,
        zero_codes_low=low_zero / total,
        zero_codes_per_channel=per_channel_zero / total,
        worst_sqnr_db=_worst(sqnr),
        worst_sqnr_db_per_channel=_worst(sqnr_per_channel),
    )


def channel_sqnr_db(columns: np.ndarray, quantized: np.ndarray) -> np.ndarray:
    """Per column: ``10 log10(|w|^2 / |w - Q(w)|^2)`` (inf without noise, nan for an all-zero column)."""
    signal = np.sum(columns.astype(np.float64) ** 2, axis=0)
    noise = np.sum((columns.astype(np.float64) - quantized) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        db: np.ndarray = 10.0 * np.log10(signal / noise)
    return db


def _worst(values: list[np.ndarray]) -> float:
    """The lowest of the non-NaN values (NaN: all-zero channels only)."""
    joined = np.concatenate(values)
    return float(np.nanmin(joined)) if np.any(~np.isnan(joined)) else float("nan")


# --- Evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """One evaluation on the held-out samples: ``da`` with its paired counts and interval."""

    loss: float
    losses: int
    gains: int
    float_correct: int
    samples: int
    low: float
    high: float


def kernel_variables(qmodel: QuantizedModel, layer: QuantizableLayer) -> list[Any]:
    """The Keras kernel variables of ``layer`` in the quantized model (as ``set_formats`` assigns them)."""
    target = qmodel.keras_model.get_layer(layer.name)
    return [w for w in target.weights if w.name in layer.kernel_names]


def per_channel_values(qmodel: QuantizedModel, layer: QuantizableLayer, bw: int) -> list[np.ndarray]:
    """``layer``'s float kernels quantized with per-channel F at ``bw`` bits (the emulation)."""
    floats = qmodel.float_values(TensorId(layer.name, "W"))
    names = [v.name for v in kernel_variables(qmodel, layer)]
    return [
        quantize_per_channel(values, bw, is_depthwise(layer.class_name, name))
        for values, name in zip(floats, names, strict=True)
    ]


@contextlib.contextmanager
def per_channel_weights(
    qmodel: QuantizedModel, layers: Sequence[QuantizableLayer], bw: int, others: Mapping[TensorId, Format]
) -> Iterator[None]:
    """EMULATION of per-channel F: ``others`` applied per tensor, ``layers``' kernels per channel.

    The kernels are written into the model's variables after ``set_formats(others)`` (which must
    not name them, so that the evaluator's own ``set_formats(others)`` leaves them alone) and put
    back to float on exit.
    """
    clash = [q.name for q in layers if TensorId(q.name, "W") in others]
    if clash:
        raise ValueError(f"per-channel kernels also given a per-tensor format: {', '.join(clash)}")
    qmodel.set_formats(others)
    try:
        for q in layers:
            for variable, values in zip(
                kernel_variables(qmodel, q), per_channel_values(qmodel, q, bw), strict=True
            ):
                variable.assign(values)
        yield
    finally:
        for q in layers:
            floats = qmodel.float_values(TensorId(q.name, "W"))
            for variable, values in zip(kernel_variables(qmodel, q), floats, strict=True):
                variable.assign(values)


def measure(evaluator: KerasEvaluator, formats: Mapping[TensorId, Format]) -> Loss:
    """``da`` of ``formats`` (the rest float, or per channel inside ``per_channel_weights``)."""
    result = evaluator.evaluate(formats)
    losses, gains = result.losses or 0, result.gains or 0
    low, high = loss_interval(losses, gains, evaluator.float_correct, result.samples, DEFAULT_CONFIDENCE)
    return Loss(result.loss, losses, gains, evaluator.float_correct, result.samples, low, high)


def measure_per_channel(
    evaluator: KerasEvaluator,
    layers: Sequence[QuantizableLayer],
    bw: int,
    others: Mapping[TensorId, Format] | None = None,
) -> Loss:
    """``da`` with ``layers``' kernels per channel at ``bw`` bits and ``others`` per tensor."""
    others = dict(others or {})
    with per_channel_weights(evaluator.qmodel, layers, bw, others):
        return measure(evaluator, others)


def of_kinds(formats: Mapping[TensorId, Format], kinds: str) -> dict[TensorId, Format]:
    """The formats of the tensors whose kind (W, B, A) is in ``kinds``."""
    return {t: f for t, f in formats.items() if t.kind in kinds}


def whole_network(
    evaluator: KerasEvaluator, uniform: Mapping[TensorId, Format], bw: int
) -> dict[str, dict[str, Any]]:
    """The whole network's losses at uniform ``bw``: per tensor, per kind, and with per-channel W."""
    layers = evaluator.qmodel.layers
    rows = {
        "all": measure(evaluator, uniform),
        "W": measure(evaluator, of_kinds(uniform, "W")),
        "WB": measure(evaluator, of_kinds(uniform, "WB")),
        "A": measure(evaluator, of_kinds(uniform, "A")),
        "W_per_channel": measure_per_channel(evaluator, layers, bw),
        "all_per_channel_W": measure_per_channel(evaluator, layers, bw, of_kinds(uniform, "BA")),
    }
    return {name: asdict(loss) for name, loss in rows.items()}


def layer_rows(
    inputs: Inputs, evaluator: KerasEvaluator, bits: Sequence[int], layer_bits: Sequence[int]
) -> list[dict[str, Any]]:
    """Per quantizable layer: its channel ranges at each of ``bits`` and ``layer_bits`` and, at each
    of ``layer_bits``, the loss with only its weights quantized, per tensor and per channel."""
    qmodel = inputs.qmodel
    rows = []
    for q in qmodel.layers:
        tensor = TensorId(q.name, "W")
        names = [v.name for v in kernel_variables(qmodel, q)]
        kernels = [
            (values, is_depthwise(q.class_name, name))
            for values, name in zip(qmodel.float_values(tensor), names, strict=True)
        ]
        z = qmodel.largest_magnitude(tensor)
        row: dict[str, Any] = {
            "layer": q.name,
            "type": q.class_name,
            "weights": q.weight_count,
            "Z": z,
            "ranges": {
                str(bw): asdict(range_stats(kernels, bw)) for bw in sorted({*bits, *layer_bits}, reverse=True)
            },
            "per_tensor": {},
            "per_channel": {},
        }
        for bw in layer_bits:
            row["per_tensor"][str(bw)] = asdict(measure(evaluator, {tensor: start_format(z, bw, RULE)}))
            row["per_channel"][str(bw)] = asdict(measure_per_channel(evaluator, [q], bw))
        rows.append(row)
        print(f"  {q.name}: {_summary(row, layer_bits[0])}", flush=True)
    return rows


def _summary(row: dict[str, Any], bw: int) -> str:
    r = row["ranges"][str(bw)]
    t, c = row["per_tensor"][str(bw)], row["per_channel"][str(bw)]
    return (
        f"spread 2^{r['log2_spread']:.1f}, low {r['low_channels']:.0%}, "
        f"{bw}-bit per tensor {t['loss']:+.2%}, per channel {c['loss']:+.2%}"
    )


def measure_model(
    path: str,
    fold: FoldMode,
    data: DataSettings,
    bits: Sequence[int],
    layer_bits: Sequence[int],
    samples: int,
) -> dict[str, Any]:
    """Every measurement of one model under one folding mode."""
    started = time.perf_counter()
    inputs = prepare(ROOT / path, data, fold_bn=fold)
    held_out = inputs.held_out
    assert held_out is not None
    if samples:
        held_out = held_out.subset(np.arange(min(samples, len(held_out))), f" [first {samples}]")
    ranges = activation_ranges(inputs.qmodel, inputs.search, inputs.preprocess)
    evaluator = KerasEvaluator(inputs.qmodel, held_out, inputs.preprocess)
    print(f"{path} --fold-bn {fold}: float {evaluator.float_accuracy:.2%} on {len(held_out)}", flush=True)
    networks = {
        str(bw): whole_network(evaluator, uniform_formats(inputs.qmodel, bw, ranges, RULE), bw) for bw in bits
    }
    layers = layer_rows(inputs, evaluator, bits, layer_bits)
    inputs.qmodel.set_formats({})
    return {
        "model": path,
        "sha256": hashlib.sha256((ROOT / path).read_bytes()).hexdigest(),
        "fold_bn": fold,
        "folds": [f.batchnorm for f in inputs.folds if f.into],
        "search_source": inputs.search.source,
        "held_out_source": held_out.source,
        "samples": len(held_out),
        "float_correct": evaluator.float_correct,
        "float_accuracy": evaluator.float_accuracy,
        "network": networks,
        "layers": layers,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- Report --------------------------------------------------------------------------------------


def _pct(loss: Mapping[str, Any]) -> str:
    return f"{loss['loss']:.2%}"


def _pct_ci(loss: Mapping[str, Any]) -> str:
    return f"{loss['loss']:.2%} ({loss['low']:.2%} .. {loss['high']:.2%})"


def render_network(results: Sequence[Mapping[str, Any]], bits: Sequence[int]) -> list[str]:
    """The whole-network table: one row per model, folding mode and bitwidth."""
    lines = [
        "| model | --fold-bn | BW | float acc. | all W, B, A | W only | W, B | A only "
        "| W only, per-channel F (emulated) | all, per-channel W (emulated) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        name = Path(r["model"]).stem
        for bw in bits:
            n = r["network"][str(bw)]
            lines.append(
                f"| `{name}` | {r['fold_bn']} | {bw} | {r['float_accuracy']:.2%} | {_pct_ci(n['all'])} "
                f"| {_pct_ci(n['W'])} | {_pct(n['WB'])} | {_pct(n['A'])} | {_pct_ci(n['W_per_channel'])} "
                f"| {_pct_ci(n['all_per_channel_W'])} |"
            )
    return lines


def render_layers(result: Mapping[str, Any], bits: Sequence[int], layer_bits: Sequence[int]) -> list[str]:
    """Per-layer table of one model and folding mode."""
    head = f"### `{Path(result['model']).stem}`, `--fold-bn {result['fold_bn']}`"
    bw0 = bits[0]
    columns = " | ".join(f"{bw}-bit per tensor | {bw}-bit per channel" for bw in layer_bits)
    lines = [
        head,
        "",
        f"{result['samples']} held-out samples, float accuracy {result['float_accuracy']:.2%}. "
        f"Channel statistics at {bw0} bits per tensor; losses with only that layer's weights quantized.",
        "",
        f"| layer | type | channels | Z | spread (log2) | format | low channels (<= {LOW_BITS} bits) "
        "| median bits | zero codes (in low ch.) | zero codes per channel "
        f"| worst channel SQNR dB (tensor / channel F) | {columns} |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(layer_bits)),
    ]
    for row in result["layers"]:
        s = row["ranges"][str(bw0)]
        losses = " | ".join(
            f"{_pct(row['per_tensor'][str(bw)])} | {_pct(row['per_channel'][str(bw)])}" for bw in layer_bits
        )
        lines.append(
            f"| {row['layer']} | {row['type']} | {s['channels']} | {row['Z']:.3g} "
            f"| {s['spread']:.1f} ({s['log2_spread']:.1f}) | {s['tensor_format']} | {s['low_channels']:.0%} "
            f"| {s['median_channel_bits']:g} | {s['zero_codes']:.1%} ({s['zero_codes_low']:.1%}) "
            f"| {s['zero_codes_per_channel']:.1%} "
            f"| {s['worst_sqnr_db']:.1f} / {s['worst_sqnr_db_per_channel']:.1f} | {losses} |"
        )
    return [*lines, ""]


def render(report: Mapping[str, Any]) -> str:
    """The Markdown page of ``report`` (what ``main`` writes to JSON)."""
    bits, layer_bits = report["settings"]["bits"], report["settings"]["layer_bits"]
    results = report["results"]
    lines = [
        "# Per-channel weight ranges and per-tensor formats (issue 19)",
        "",
        "Written by `scripts/per_channel_ranges.py`; every number is in `per_channel.json`. Command:",
        "",
        f"    {report['command']}",
        "",
        "Loss is `da = (a - a_q) / a` on the held-out half (two-sided 95% interval, "
        "`optsearch.core.confidence`); negative: the quantized network is right more often. "
        "Per-channel F is an emulation in the script (each output channel's kernel at its own "
        "`F0(BW, Z_c)`), not a feature of optsearch.",
        "",
        "## Whole network, uniform BW per tensor",
        "",
        *render_network(results, bits),
        "",
        "## Per layer",
        "",
    ]
    for result in results:
        lines.extend(render_layers(result, bits, layer_bits))
    return "\n".join(lines)


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--fold-bn", nargs="+", default=list(FOLDS), choices=FOLDS)
    parser.add_argument("--bits", nargs="+", type=int, default=list(BITS), help="whole-network bitwidths")
    parser.add_argument("--layer-bits", nargs="+", type=int, default=list(BITS), help="per-layer bitwidths")
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--samples", type=int, default=0, help="first N held-out samples (0: all)")
    parser.add_argument("--json", type=Path, default=JSON_OUT)
    parser.add_argument("--md", type=Path, default=MD_OUT)
    args = parser.parse_args(argv)
    data = DataSettings(args.data, search_fraction=0.5, seed=0)
    started = time.perf_counter()
    results = [
        measure_model(path, fold, data, args.bits, args.layer_bits, args.samples)
        for path in args.models
        for fold in args.fold_bn
    ]
    report = {
        "command": " ".join(
            [
                "OPTSEARCH_DATA=/work/shared/datasets .venv/bin/python scripts/per_channel_ranges.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "machine": {"cpu_count": os.cpu_count(), "load_average_end": list(os.getloadavg())},
        "settings": {
            "data": args.data,
            "search_fraction": 0.5,
            "seed": 0,
            "offset_rule": RULE,
            "low_bits": LOW_BITS,
            "bits": args.bits,
            "layer_bits": args.layer_bits,
            "samples": args.samples or "all held-out",
            "confidence": DEFAULT_CONFIDENCE,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    args.md.write_text(render(report) + "\n")
    print(f"wrote {args.json} and {args.md} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
