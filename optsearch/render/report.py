"""Text renderings of a ``RunResult``: formats.csv, report.md and the terminal summary (no numbers computed
here beyond formatting)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping

from optsearch.core.confidence import METHOD
from optsearch.core.tensors import TENSOR_KINDS
from optsearch.results.result import Costs, RunResult, TensorResult

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


def less_than(saving: float, baseline: str, spec: str = ".2%") -> str:
    """A saving in words: ``54.49% less than 8-bit``, or ``182.04% more than 8-bit`` when negative."""
    return f"{abs(saving):{spec}} {'less' if saving >= 0 else 'more'} than {baseline}"


def _total_time(result: RunResult) -> str:
    """The run's time; a resumed run's counts the search before the resume, and says so."""
    t = result.timings
    before = t.get("search_seconds_before_resume")
    resumed = f" ({before:.1f} s of it before the resume)" if before else ""
    return f"{t['total_seconds']:.1f} s in total{resumed}"


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
        f"offset rule {s.offset_rule}"
        f"{', warm start: analytic (not Alg. 2)' if s.warm_start == 'analytic' else ''}",
        "- allocation: "
        + ", ".join(f"{k} {v.scheme} ({v.start}, {v.end}] x eps" for k, v in s.allocation.items()),
        f"- acceptance: {s.acceptance.describe()}",
        f"- {result.evaluations} evaluations, {_total_time(result)}",
        *_analytic_lines(result),
        *_pareto_lines(result),
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
    lines += _accuracy_lines(result)
    lines += _prediction_lines(result)
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
        *_hardware_rows(found, eight, f32),
        "",
        "Plots: `bitwidths.png` (bits per layer and tensor type), `loss_steps.png` (loss as the network is "
        "quantized tensor by tensor).",
        "",
    ]
    return "\n".join(lines)


def _interval(bounds: tuple[float, float] | None) -> str:
    return "" if bounds is None else f"{_pct(bounds[0])} .. {_pct(bounds[1])}"


VERDICTS = {
    "holds": "the budget holds: its upper bound is within eps",
    "within, not certified": "within eps as observed, but not certified: the upper bound is above eps "
    "(more samples would tell)",
    "over": "over budget: the observed loss is above eps",
}


def _accuracy_lines(result: RunResult) -> list[str]:
    """The accuracy table with each figure's interval and sample count, and the held-out verdict."""
    conf = result.settings.search.confidence
    eps = result.eps
    counted = all(acc.counted for acc in result.accuracy.values())
    if not counted:  # a formats.json of 0.1.0: rates only
        lines = [
            "",
            "## Accuracy",
            "",
            "| data | samples | float | found formats | loss | uniform 8-bit | loss |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for part, acc in result.accuracy.items():
            lines.append(
                f"| {part.replace('_', '-')} | {acc.samples} | {_pct(acc.float_model)} | "
                f"{_pct(acc.quantized)} | {_pct(acc.quantized_loss)} | {_pct(acc.uniform8)} | "
                f"{_pct(acc.uniform8_loss)} |"
            )
        return lines
    lines = [
        "",
        "## Accuracy",
        "",
        f"Intervals are two-sided at {conf:.0%}: exact Clopper-Pearson for accuracies, {METHOD} for the "
        f"paired loss; the upper bound is one-sided at {conf:.0%}. Losses are relative, "
        "`da = (a - a_q) / a`; L / G count the samples the float model gets right and the found formats "
        "wrong / the other way round.",
        "",
        "| data | samples | float | found formats | loss | loss interval | upper bound | L / G "
        "| uniform 8-bit loss | its interval |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for part, acc in result.accuracy.items():
        lines.append(
            f"| {part.replace('_', '-')} | {acc.samples} | {_pct(acc.float_model)} "
            f"({_interval(acc.accuracy_interval('float', conf))}) | {_pct(acc.quantized)} "
            f"({_interval(acc.accuracy_interval('quantized', conf))}) | {_pct(acc.quantized_loss)} | "
            f"{_interval(acc.loss_interval(conf))} | {_pct(acc.loss_bound(conf) or 0.0)} | "
            f"{acc.losses} / {acc.gains} | {_pct(acc.uniform8_loss)} | "
            f"{_interval(acc.uniform8_loss_interval(conf))} |"
        )
    held = result.accuracy.get("held_out")
    if held is not None:
        lines += [
            "",
            f"**Held-out** ({held.samples} samples the search never saw): loss {_pct(held.quantized_loss)}, "
            f"upper bound {_pct(held.loss_bound(conf) or 0.0)} at {conf:.0%}; eps {_pct(eps)}: "
            f"{VERDICTS[held.budget_verdict(eps, conf)]}.",
        ]
    return lines + _budget_lines(result)


def _mismatch_cells(result: RunResult) -> str:
    """The measured mismatch (top-1 differs from the float model's) per data part, with counts."""
    cells = [
        f"{part.replace('_', '-')} {_pct(acc.mismatches / acc.samples)} ({acc.mismatches} of {acc.samples})"
        for part, acc in result.accuracy.items()
        if acc.mismatches is not None
    ]
    return ", ".join(cells) or "not counted"


def _against_prediction(result: RunResult, bits: Mapping[str, int]) -> tuple[int, int, int]:
    """Tensors found with more bits than predicted, with fewer, and all tensors."""
    found = {str(t): f.bw for t, f in result.formats.items()}
    above = sum(bw > bits[t] for t, bw in found.items() if t in bits)
    below = sum(bw < bits[t] for t, bw in found.items() if t in bits)
    return above, below, len(found)


def _pruned_note(pruned: list[str] | None) -> str:
    """The found tensors the bound leaves out: pruning is no small rounding noise."""
    if not pruned:
        return ""
    shown = ", ".join(pruned[:3]) + (", ..." if len(pruned) > 3 else "")
    return f" (without the {len(pruned)} pruned tensors, {shown}: their error is no small rounding noise)"


def _prediction_lines(result: RunResult) -> list[str]:
    """Sakr & Shanbhag beside what the run found (issue 23): each tensor's predicted bits next to its
    found bits, and Thm. 1's bound of the found formats next to the measured mismatch."""
    a = result.analytic
    if a is None or a.found_bound is None:
        return []
    lines = [
        "",
        "## Predicted without search (Sakr & Shanbhag)",
        "",
        f"Noise gains on {a.samples} search samples (`--predict-samples`; docs/algorithm.md). Thm. 1 "
        "bounds the probability that quantization changes a prediction (the mismatch): "
        f"{_pct(a.found_bound)} for the found formats{_pruned_note(a.pruned)}, against the measured "
        f"mismatch {_mismatch_cells(result)}. A first-order bound: above 100%, or where a format clips, "
        "it says nothing.",
    ]
    if a.bits is None or a.b_min is None or a.bound is None:
        return [*lines, "", f"No predicted precisions: {a.note}."]
    above, below, total = _against_prediction(result, a.bits)
    lines += [
        "",
        f"Predicted bits: the noise-gain-equalised precisions `--method analytic` chooses at eps "
        f"(B_min {a.b_min}: bound {_pct(a.bound)} within the mismatch budget {_pct(a.budget)} = eps x "
        f"float accuracy). The search found more bits than predicted on {above} of {total} tensors "
        f"and fewer on {below}. Cells: found / predicted bits.",
        "",
        "| layer | W | B | A |",
        "|---|---:|---:|---:|",
    ]
    for layer in result.layers:
        cells = []
        for kind in TENSOR_KINDS:
            t, bits = layer.tensors.get(kind), a.predicted_bits(layer.name, kind)
            cells.append("-" if t is None else f"{t.bw} / {'-' if bits is None else bits}")
        lines.append(f"| {layer.name} | " + " | ".join(cells) + " |")
    return lines


def _analytic_lines(result: RunResult) -> list[str]:
    """``--method analytic``: the predicted mismatch bound beside the loss measured on the search set."""
    a = result.analytic
    if a is None or result.settings.search.method != "analytic" or a.bound is None:
        return []
    return [
        f"- method analytic (no search, noise-gain equalised; {a.samples} samples for the noise gains): "
        f"predicted mismatch bound {_pct(a.bound)} (budget {_pct(a.budget)}, B_min {a.b_min}) against "
        f"the measured loss {_pct(result.accuracy['search'].quantized_loss)} on the search set"
    ]


def _pareto_lines(result: RunResult) -> list[str]:
    """``--method pareto``: where the curves came from, the front points measured against their
    prediction, and what refinement changed."""
    p = result.pareto
    if p is None:
        return []
    front = [s for s in p.steps if s["action"] == "front"]
    refines = [s for s in p.steps if s["action"] == "refine"]
    if p.curves_from and p.curves_from.startswith("analytic:"):
        curves = f"curves predicted, not measured ({p.curves_from})"
    elif p.curves_from:
        curves = f"curves from `{p.curves_from}` (not measured again)"
    else:
        curves = f"{len(p.curves)} curves measured ({p.curve_evaluations} evaluations)"
    measured = ", ".join(
        f"{_flips(p.scale, s['predicted'])} -> {'>= ' if not s['exact'] else ''}{_pct(s['statistic'])}"
        for s in front
    )
    chosen = "?" if p.predicted is None else f"{p.predicted:.1f}"
    return [
        f"- method pareto (not Alg. 2): {curves}, reach {_pct(p.reach)}; minimising {p.objective}; eps "
        f"lets {p.capacity} flipped samples through; front points measured (predicted flips -> "
        f"statistic): {measured}; the cheapest passing one predicted at {chosen}; "
        f"{sum(s['accepted'] for s in refines)} of {len(refines)} refinements kept "
        f"(pareto.csv: the predicted front)"
    ]


def _flips(scale: float | None, power: float) -> str:
    """A noise power as the flips it predicts, ``?`` without a scale."""
    return "?" if scale is None else f"{scale * power**0.5:.1f}"


def pareto_csv(result: RunResult) -> str | None:
    """``--method pareto``: one row per point of the predicted front (None for other methods), with
    the statistic measured where the verification evaluated it; memory saving against uniform 8-bit."""
    p = result.pareto
    if p is None:
        return None
    base = result.costs["uniform8"].memory_bits_total
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "capacity_power",
            "predicted_power",
            "predicted_flips",
            "predicted_loss",
            "predicted_statistic",
            "objective",
            "cost",
            "memory_bits",
            "memory_saving_vs_8bit",
            "measured_statistic",
        ]
    )
    for point in p.front:
        measured = point["measured_statistic"]
        writer.writerow(
            [
                f"{point['capacity']:.6g}",
                f"{point['predicted_power']:.6g}",
                _number(point["predicted_flips"], ".4g"),
                _number(point["predicted_loss"], ".6g"),
                _number(point["predicted_statistic"], ".6g"),
                p.objective,
                f"{point['cost']:.8g}",
                f"{point['memory_bits']:.8g}",
                f"{1 - point['memory_bits'] / base:.6g}",
                _number(measured, ".6g"),
            ]
        )
    return out.getvalue()


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _budget_lines(result: RunResult) -> list[str]:
    """Tensors whose eq. 9 budget is finer than the search data can resolve (one sample) or certify."""
    limits = result.search_limits()
    if limits is None:
        return []
    resolution, certifiable = limits
    raised = [
        (layer.name, kind, t)
        for layer in result.layers
        for kind, t in layer.tensors.items()
        if t.scheduled_eps is not None
    ]
    fine = [
        (layer.name, kind, t)
        for layer in result.layers
        for kind, t in layer.tensors.items()
        if t.scheduled_eps is None and t.eps < resolution
    ]
    if not raised and not fine:
        return []
    conf = result.settings.search.confidence
    lines = [
        "",
        "## Budgets finer than the data",
        "",
        f"On the search set one sample is {_pct(resolution)} of relative loss, and the smallest loss the "
        f"guarded test certifies at {conf:.0%} is {_pct(certifiable)}.",
    ]
    if raised:
        lines += [
            "",
            f"Raised to {_pct(certifiable)} (their eq. 9 budgets would demand a loss the data cannot "
            "certify, that is: no flip at all, at many bits); the difference comes out of the later "
            "tensors' budgets, which are cumulative: "
            + ", ".join(f"{name}:{kind} ({_pct(t.scheduled_eps or 0.0)})" for name, kind, t in raised)
            + ".",
        ]
    if fine:
        lines += [
            "",
            "Below one sample (these must not lose a sample net): "
            + ", ".join(f"{name}:{kind} ({_pct(t.eps)})" for name, kind, t in fine)
            + ".",
        ]
    return lines


HARDWARE_ROWS = {
    "weights": "weights memory, packed (bytes)",
    "weights_aligned": "weights memory, C arrays int8/16/32 (bytes)",
    "peak_activations": "peak activation memory, packed (bytes)",
    "peak_activations_aligned": "peak activation memory, C arrays (bytes)",
}


def _hardware_rows(found: Costs, eight: Costs, f32: Costs) -> list[str]:
    """Memory as the target counts it: flash for the weights, the activation arena's peak in RAM."""
    sizes = [c.hardware_bytes for c in (found, eight, f32)]
    vs8, vs32 = found.hardware_saving(eight), found.hardware_saving(f32)
    if any(s is None for s in sizes) or vs8 is None or vs32 is None:
        return []
    rows = []
    for key, label in HARDWARE_ROWS.items():
        cells = " | ".join(f"{s[key]:,}" for s in sizes if s is not None)
        rows.append(f"| {label} | {cells} | {_pct(vs8[key])} | {_pct(vs32[key])} |")
    return [*rows, f"| (activation peak at) | {found.peak_step} | {eight.peak_step} | {f32.peak_step} | | |"]


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
    conf = result.settings.search.confidence
    lines = []
    if result.data.labels_from_model:
        lines.append("labels: the float model's own predictions (accuracy = agreement with the float model)")
    for part, acc in result.accuracy.items():
        interval = acc.loss_interval(conf)
        within = "" if interval is None else f", {conf:.0%} CI {_interval(interval)}"
        lines.append(
            f"{part.replace('_', '-'):9s} accuracy {_pct(acc.float_model)} float -> "
            f"{_pct(acc.quantized)} found "
            f"(loss {_pct(acc.quantized_loss)}{within}, n = {acc.samples}); uniform 8-bit "
            f"{_pct(acc.uniform8)} (loss {_pct(acc.uniform8_loss)})"
        )
    held = result.accuracy.get("held_out")
    if held is not None and held.counted:
        lines.append(
            f"held-out: eps {_pct(result.eps)} {held.budget_verdict(result.eps, conf)} at {conf:.0%} "
            f"(upper bound {_pct(held.loss_bound(conf) or 0.0)})"
        )
    lines.append(
        f"memory {result.costs['quantized'].memory_bytes:,.0f} bytes: {less_than(vs8['memory'], '8-bit')}, "
        f"{less_than(vs32['memory'], 'float32')}"
    )
    lines.append(
        f"multiply cost {less_than(vs8['multiply_cost'], '8-bit')}, "
        f"{less_than(vs32['multiply_cost'], 'float32')}"
    )
    found = result.costs["quantized"]
    sizes, hw8 = found.hardware_bytes, found.hardware_saving(result.costs["uniform8"])
    if sizes is not None and hw8 is not None:
        lines.append(
            f"on the target: weights {sizes['weights']:,} bytes packed ({sizes['weights_aligned']:,} as C "
            f"arrays), {less_than(hw8['weights'], '8-bit')}; peak activations "
            f"{sizes['peak_activations']:,} bytes (at {found.peak_step}), "
            f"{less_than(hw8['peak_activations'], '8-bit')}"
        )
    lines += _prediction_summary(result)
    lines.append(f"{result.evaluations} evaluations, {_total_time(result)}")
    causes = result.model.float_inputs or {}
    if causes:
        lines.append(
            f"note: {len(causes)} of {len(result.layers)} layers read a float input (e.g. a BatchNorm "
            "after the quantizer): exact fixed-point accuracy can differ, `optsearch verify` measures it"
        )
    return lines


def _prediction_summary(result: RunResult) -> list[str]:
    """The terminal's line on Sakr & Shanbhag's prediction (the report has the table)."""
    a = result.analytic
    if a is None or a.found_bound is None:
        return []
    search = result.accuracy["search"]
    measured = (
        "" if search.mismatch_rate is None else f" (measured on the search set: {_pct(search.mismatch_rate)})"
    )
    if a.bits is None:
        predicted = "no predicted precisions within the budget"
    else:
        above, _, total = _against_prediction(result, a.bits)
        predicted = f"found more bits than predicted on {above} of {total} tensors"
    pruned = f" without {len(a.pruned)} pruned tensors" if a.pruned else ""
    return [
        f"predicted (Sakr & Shanbhag): mismatch bound {_pct(a.found_bound)}{pruned}{measured}; {predicted}"
    ]


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
