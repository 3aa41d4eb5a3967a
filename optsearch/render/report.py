"""Text renderings of a ``RunResult``: formats.csv, report.md and the terminal summary (no numbers computed
here beyond formatting)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping

from optsearch.core.tensors import TENSOR_KINDS
from optsearch.results.result import RunResult, TensorResult

CSV_COLUMNS = (
    "index",
    "layer",
    "type",
    "tensor",
    "bw",
    "f",
    "ap_fixed",
    "eps",
    "loss",
    "z",
    "bw0",
    "evaluations",
)


def formats_csv(result: RunResult) -> str:
    """One row per tensor: the found format, its hls4ml type, budget and loss."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for layer in result.layers:
        for kind, t in layer.tensors.items():
            writer.writerow(
                [
                    layer.index,
                    layer.name,
                    layer.type,
                    kind,
                    t.bw,
                    t.f,
                    t.ap_fixed,
                    t.eps,
                    t.loss,
                    t.z,
                    t.bw0,
                    t.evaluations,
                ]
            )
    return out.getvalue()


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _cell(layer_tensors: Mapping[str, TensorResult], kind: str, attr: str) -> str:
    t = layer_tensors.get(kind)
    if t is None:
        return "-"
    if attr == "format":
        return str(t.format)
    if attr == "ap_fixed":
        return f"`{t.ap_fixed}`"
    return _pct(getattr(t, attr))


def report_markdown(result: RunResult) -> str:
    """report.md: settings, the per-layer formats, accuracy on search and held-out data, and costs."""
    s = result.settings.search
    data = result.settings.data
    lines = [
        f"# optsearch report: {result.model.name}",
        "",
        f"- model: `{result.settings.model}` (sha256 `{result.model.sha256[:16]}...`), "
        f"{len(result.layers)} quantizable layers",
        f"- data: {result.data.source}; search set {result.data.search_samples} samples, "
        f"held-out {result.data.held_out_samples} (search fraction {data.search_fraction}, "
        f"seed {data.seed})",
        f"- search: {'independent' if s.independent else 'dependent'}, eps {_pct(s.eps)}, "
        f"order {'/'.join(s.type_order)} layers {s.layer_order}"
        f"{', interleaved' if s.interleave else ''}, "
        f"BW0 W {s.bw0['W']} / B {s.bw0['B']} / A {s.bw0['A']}, delta {s.delta}, "
        f"offset rule {s.offset_rule}",
        "- allocation: "
        + ", ".join(f"{k} {v.scheme} ({v.start}, {v.end}] x eps" for k, v in s.allocation.items()),
        f"- {result.evaluations} evaluations, {result.timings['total_seconds']:.1f} s in total",
        *_fold_lines(result),
        "",
        "## Formats",
        "",
        "`(BW, F)`: BW bits with the sign, F fractional bits; `(1, F)` is pruned (all zeros). "
        "Losses are relative: `da = (a - a_q) / a`, measured when the tensor was decided.",
        "",
        "| l | layer | type | W | B | A | eps W | eps B | eps A | da W | da B | da A |",
        "|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for layer in result.layers:
        t = layer.tensors
        lines.append(
            f"| {layer.index} | {layer.name} | {layer.type} | "
            + " | ".join(_cell(t, k, "format") for k in TENSOR_KINDS)
            + " | "
            + " | ".join(_cell(t, k, "eps") for k in TENSOR_KINDS)
            + " | "
            + " | ".join(_cell(t, k, "loss") for k in TENSOR_KINDS)
            + " |"
        )
    lines += [
        "",
        "hls4ml / Vivado HLS types (`ap_fixed<W,I>` with `W = BW`, `I = BW - F`; round half to even, "
        "symmetric saturation):",
        "",
        "| layer | weights | biases | activations (at) |",
        "|---|---|---|---|",
    ]
    for layer in result.layers:
        t = layer.tensors
        lines.append(
            f"| {layer.name} | {_cell(t, 'W', 'ap_fixed')} | {_cell(t, 'B', 'ap_fixed')} | "
            f"{_cell(t, 'A', 'ap_fixed')} ({layer.activation_at}) |"
        )
    lines += [
        "",
        "## Accuracy",
        "",
        "| data | samples | float | found formats | loss | uniform 8-bit | loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for part, acc in result.accuracy.items():
        lines.append(
            f"| {part.replace('_', '-')} | {acc.samples} | {_pct(acc.float_model)} | {_pct(acc.quantized)} | "
            f"{_pct(acc.quantized_loss)} | {_pct(acc.uniform8)} | {_pct(acc.uniform8_loss)} |"
        )
    if "held_out" in result.accuracy:
        lines += ["", "The held-out data took no part in the search: its loss is the honest estimate."]
    lines += _float_input_lines(result)
    found, eight, f32 = (result.costs[k] for k in ("quantized", "uniform8", "float32"))
    vs8, vs32 = result.savings("uniform8"), result.savings("float32")
    lines += [
        "",
        "## Costs",
        "",
        "Memory: bits of all weights and biases plus the activations of one sample. Multiply cost as the "
        "paper reports it: sum of MACs x BW_W x BW_A(output). BOPs: sum of MACs x BW_W x BW_A(input), "
        f"network input at {result.settings.input_bits} bits.",
        "",
        "| measure | found | uniform 8-bit | float32 | saving vs 8-bit | saving vs float32 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in TENSOR_KINDS:
        lines.append(
            f"| memory {kind} (bits) | {found.memory_bits.get(kind, 0):,} | "
            f"{eight.memory_bits.get(kind, 0):,} | {f32.memory_bits.get(kind, 0):,} | | |"
        )
    lines += [
        f"| memory total (bytes) | {found.memory_bytes:,.0f} | {eight.memory_bytes:,.0f} | "
        f"{f32.memory_bytes:,.0f} | {_pct(vs8['memory'])} | {_pct(vs32['memory'])} |",
        f"| multiply cost | {found.multiply_cost:,} | {eight.multiply_cost:,} | {f32.multiply_cost:,} | "
        f"{_pct(vs8['multiply_cost'])} | {_pct(vs32['multiply_cost'])} |",
        f"| BOPs | {found.bops:,} | {eight.bops:,} | {f32.bops:,} | {_pct(vs8['bops'])} | "
        f"{_pct(vs32['bops'])} |",
        "",
        "Plots: `bitwidths.png` (bits per layer and tensor type), `loss_steps.png` (loss as the network is "
        "quantized tensor by tensor).",
        "",
    ]
    return "\n".join(lines)


def _float_input_lines(result: RunResult) -> list[str]:
    """Which layers read a real-valued input, and what that means for the accuracies above."""
    causes = result.model.float_inputs or {}
    if not causes:
        return []
    listed = ", ".join(f"{layer} ({cause})" for layer, cause in causes.items())
    return [
        "",
        f"**Float between quantizers.** {len(causes)} of {len(result.layers)} quantizable layers read a "
        f"real-valued input, not fixed-point codes: {listed}. Hardware computes those steps in float "
        "or approximates them. Where an exact value sits on a rounding boundary of the next quantizer, "
        "float32 (which measured the accuracies above) and exact arithmetic round apart, and with "
        "few-bit activations such a difference can carry on to the prediction. "
        "`optsearch verify` on this folder measures the exact network's accuracy (docs/deployment.md); "
        "`--fold-bn all` folds the BatchNorms into the weights.",
    ]


def summary_lines(result: RunResult) -> list[str]:
    """The short summary the terminal ends with."""
    vs8, vs32 = result.savings("uniform8"), result.savings("float32")
    lines = []
    for part, acc in result.accuracy.items():
        lines.append(
            f"{part.replace('_', '-'):9s} accuracy {_pct(acc.float_model)} float -> "
            f"{_pct(acc.quantized)} found "
            f"(loss {_pct(acc.quantized_loss)}); uniform 8-bit {_pct(acc.uniform8)} "
            f"(loss {_pct(acc.uniform8_loss)})"
        )
    lines.append(
        f"memory {result.costs['quantized'].memory_bytes:,.0f} bytes: {_pct(vs8['memory'])} less than 8-bit, "
        f"{_pct(vs32['memory'])} less than float32"
    )
    lines.append(
        f"multiply cost {_pct(vs8['multiply_cost'])} less than 8-bit, "
        f"{_pct(vs32['multiply_cost'])} less than float32"
    )
    lines.append(f"{result.evaluations} evaluations in {result.timings['total_seconds']:.1f} s")
    causes = result.model.float_inputs or {}
    if causes:
        lines.append(
            f"note: {len(causes)} of {len(result.layers)} layers read a float input (e.g. a BatchNorm "
            "after the quantizer): exact fixed-point accuracy can differ, `optsearch verify` measures it"
        )
    return lines


def _fold_lines(result: RunResult) -> list[str]:
    """The --fold-bn section: where every BatchNorm went, and the float accuracy it cost."""
    folds = result.model.batchnorm_folds
    if not folds:
        return []
    before = result.model.float_accuracy_before_folding or {}
    lines = [
        "",
        f"## BatchNorm folding (--fold-bn {result.settings.fold_bn})",
        "",
        "The search ran on the folded network; its float accuracy is the reference of every loss. "
        "Float accuracy of the model as given, then folded:",
        "",
    ]
    for part, accuracy in result.accuracy.items():
        if part in before:
            name, folded = part.replace("_", "-"), _pct(accuracy.float_model)
            lines.append(f"- {name}: {_pct(before[part])} as given, {folded} folded")
    lines += ["", "| BatchNorm | folded | into | exact | note |", "|---|---|---|---|---|"]
    for fold in folds:
        lines.append(
            f"| {fold['batchnorm']} | {fold['how']} | {', '.join(fold['into']) or '-'} "
            f"| {'yes' if fold['exact'] else 'no'} | {fold['note']} |"
        )
    return lines
