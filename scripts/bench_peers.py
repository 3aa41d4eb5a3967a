"""optsearch side by side with what users would pick instead (issue 22) -> docs/peers.md.

Per zoo model, on the 50/50 split of docs/results.md (search_fraction 0.5, seed 0): float32 and
TFLite full-integer PTQ (int8, and int16x8 where the converter supports the model), calibrated on
the search half and measured on the held-out half; hls4ml's default precision (``ap_fixed<16,6>``
for every weight, bias and activation, truncating and wrapping: ``HLS4ML_DEFAULT_MODE``) and
optsearch's uniform 8-bit formats, emulated on the same half; optsearch's eps 1% searches (Alg. 2
and ``--method pareto``, default criterion) wherever docs/budget/ and docs/allocation/ hold their
measured results (the searches run in ``optsearch batch configs/budget.yaml`` and
``configs/allocation.yaml``, not here); and, from each pareto search's stored sensitivity curves
(``--allocation-dir``), ``optsearch pareto`` at eps 0.5%, 1% and 2% minimising the weights memory
(``--objective weights``: flash, what the TFLite comparison counts), each a few dozen evaluations.
Each model's measured numbers are cached in ``<out>/peers/<model>.json`` and
``<out>/peers/<model>-stored.json``; the page and the plots (``<out>/peers/<model>.png``) are
rendered from those files and the searches'.

    .venv/bin/python scripts/bench_peers.py                              # every zoo model
    .venv/bin/python scripts/bench_peers.py --models sequential_mnist --samples 500
    .venv/bin/python scripts/bench_peers.py --render-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "datasets"
ZOO = (
    "sequential_mnist",
    "sequential_fashion_mnist",
    "sequential_cifar10",
    "branched_mnist",
    "branched_fashion_mnist",
    "branched_cifar10",
    "resnet8_cifar10",
    "mobilenet_v1_cifar10",
)
DATASETS = ("fashion_mnist", "mnist", "cifar10", "svhn")
SEARCH_FRACTION = 0.5
SEED = 0
CONFIDENCE = 0.95
TFLITE_MODES: tuple[Literal["int8", "int16x8"], ...] = ("int8", "int16x8")
#: optsearch's searches, read from the measured caches of bench_budget / bench_allocation:
#: (row name, cache folder under docs/).
SEARCHES = (
    ("optsearch Alg. 2, eps 1%", ("budget/{model}-guarded-1", "allocation/{model}-paper")),
    ("optsearch pareto, eps 1%", ("allocation/{model}-pareto",)),
)
#: ``optsearch pareto`` from the stored curves of ``<allocation-dir>/<model>-pareto``: these budgets,
#: minimising this objective.
STORED_EPS = (0.005, 0.01, 0.02)
STORED_OBJECTIVE = "weights"
#: Issue 22's target: an optsearch row no worse than TFLite int8 on held-out loss with at least this
#: much less weights memory.
WEIGHTS_TARGET = 0.40


def dataset_of(model: str) -> str:
    """The dataset a zoo model was trained on: the dataset its name ends with."""
    for name in DATASETS:
        if model.endswith(f"_{name}"):
            return name
    raise ValueError(f"{model}: no dataset in its name ({', '.join(DATASETS)}); pass --data")


def load_split(
    model: Any, data: str, data_dir: str, samples: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(search x, held-out x, held-out y) as float32 batches the model takes (raw pixels for the zoo)."""
    from optsearch.data import Preprocess, fit_channel_axis, load_data, split

    dataset = load_data(data, data_dir)
    search, held_out = split(dataset, SEARCH_FRACTION, SEED)
    assert held_out is not None
    if samples is not None:
        search = search.subset(np.arange(min(samples, len(search))), f"[:{samples}]")
        held_out = held_out.subset(np.arange(min(samples, len(held_out))), f"[:{samples}]")
    preprocess = fit_channel_axis(Preprocess(), tuple(dataset.x.shape[1:]), tuple(model.input_shape[1:]))
    return preprocess(search.x), preprocess(held_out.x), held_out.y


def row(name: str, predictions: np.ndarray, float_predictions: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Held-out accuracy and relative loss against float, with their intervals (paired counts L/G)."""
    from optsearch.core.confidence import accuracy_interval, loss_interval, observed_loss

    right, float_right = predictions == y, float_predictions == y
    losses, gains = int(np.sum(float_right & ~right)), int(np.sum(~float_right & right))
    float_correct, n = int(np.sum(float_right)), len(y)
    out: dict[str, Any] = {
        "name": name,
        "samples": n,
        "correct": int(np.sum(right)),
        "accuracy": float(np.mean(right)),
        "accuracy_interval": list(accuracy_interval(int(np.sum(right)), n, CONFIDENCE)),
        "losses": losses,
        "gains": gains,
        "float_correct": float_correct,
    }
    if float_correct:
        out["loss"] = observed_loss(losses, gains, float_correct)
        out["loss_interval"] = list(loss_interval(losses, gains, float_correct, n, CONFIDENCE))
    return out


def measure(model_path: Path, data: str, data_dir: str, samples: int | None) -> dict[str, Any]:
    """Every row of one model, as data."""
    from optsearch.model.loading import load_model
    from optsearch.run.tflite import ConversionError, measure_memory, run_tflite
    from optsearch.run.tflite import convert as tflite_convert

    model = load_model(model_path)
    search_x, held_x, held_y = load_split(model, data, data_dir, samples)
    started = time.perf_counter()
    float_pred = np.concatenate(
        [
            np.argmax(model.predict(held_x[i : i + 256], verbose=0), axis=-1)
            for i in range(0, len(held_x), 256)
        ]
    )
    float_seconds = time.perf_counter() - started
    # the float32 flatbuffer gives the float row's memory, counted exactly as the integer rows'
    float_memory = measure_memory(tflite_convert(model, search_x[:0], "float32"))
    rows = [
        {
            **row("float32", float_pred, float_pred, held_y),
            "weights_bytes": float_memory.weights_bytes,
            "peak_activation_bytes": float_memory.peak_activation_bytes,
            "seconds": float_seconds,
        }
    ]
    rows += emulated_rows(model, search_x, held_x, held_y, float_pred)
    for mode in TFLITE_MODES:
        name = f"TFLite {mode}"
        try:
            run = run_tflite(model, search_x, held_x, mode)
        except ConversionError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        rows.append(
            {
                **row(name, run.predictions, float_pred, held_y),
                "weights_bytes": run.weights_bytes,
                "other_constant_bytes": run.memory.other_constant_bytes,
                "peak_activation_bytes": run.peak_activation_bytes,
                "peak_step": run.memory.peak_step,
                "flatbuffer_bytes": run.flatbuffer_bytes,
                "seconds": run.seconds,
                "convert_seconds": run.convert_seconds,
            }
        )
    return {
        "model": model_path.stem,
        "model_file": str(model_path),
        "data": data,
        "search_fraction": SEARCH_FRACTION,
        "seed": SEED,
        "samples_limit": samples,
        "search_samples": len(search_x),
        "confidence": CONFIDENCE,
        "rows": rows,
    }


def emulated_rows(
    model: Any, search_x: np.ndarray, held_x: np.ndarray, held_y: np.ndarray, float_pred: np.ndarray
) -> list[dict[str, Any]]:
    """hls4ml's default precision and optsearch's uniform 8-bit, emulated (optsearch's quantized
    model), with weights and peak activation memory counted as every optsearch run counts them."""
    from optsearch.core.fixedpoint import DEFAULT_MODE, HLS4ML_DEFAULT_MODE, Format, QuantizerMode
    from optsearch.core.memory import buffer_bits, peak_activation_memory, weights_memory
    from optsearch.data import Dataset
    from optsearch.evaluators.keras import activation_ranges
    from optsearch.model.graph import quantized_model, uniform_formats
    from optsearch.model.schedule import activation_schedule

    def emulate(name: str, mode: QuantizerMode, formats_of: Any) -> dict[str, Any]:
        started = time.perf_counter()
        qmodel = quantized_model(model, "activation", mode=mode)
        formats = formats_of(qmodel)
        qmodel.set_formats(formats)
        predictions = np.concatenate(
            [
                np.argmax(qmodel.keras_model.predict(held_x[i : i + 256], verbose=0), axis=-1)
                for i in range(0, len(held_x), 256)
            ]
        )
        bits = {t: f.bw for t, f in formats.items()}
        schedule = activation_schedule(qmodel.float_model, qmodel.layers, "activation")
        peak = peak_activation_memory(schedule, buffer_bits(schedule, bits, 8), "packed")
        return {
            **row(name, predictions, float_pred, held_y),
            "weights_bytes": weights_memory(qmodel.layers, bits).packed_bytes,
            "peak_activation_bytes": peak.bytes,
            "seconds": time.perf_counter() - started,
        }

    def hls4ml_default(qmodel: Any) -> dict[Any, Format]:
        return dict.fromkeys(qmodel.tensors, Format(16, 10))  # ap_fixed<16,6>

    def uniform8(qmodel: Any) -> dict[Any, Format]:
        search = Dataset(search_x, np.zeros(len(search_x), dtype=np.int64), "search half")
        return uniform_formats(qmodel, 8, activation_ranges(qmodel, search))

    return [
        emulate("hls4ml ap_fixed<16,6> (AP_TRN, AP_WRAP)", HLS4ML_DEFAULT_MODE, hls4ml_default),
        emulate("optsearch uniform 8-bit", DEFAULT_MODE, uniform8),
    ]


def search_rows(model: str, docs: Path) -> list[dict[str, Any]]:
    """optsearch's searches on this model, from bench_budget's / bench_allocation's caches (the
    held-out half, the same split), or a row saying which command makes them."""
    out: list[dict[str, Any]] = []
    for name, folders in SEARCHES:
        caches = [docs / folder.format(model=model) for folder in folders]
        cache = next(
            (c for c in caches if (c / "measured.json").is_file() and (c / "formats.json").is_file()), None
        )
        if cache is None:
            out.append({"name": name, "error": f"not measured yet ({' or '.join(map(str, caches))})"})
            continue
        m, result = (
            json.loads((cache / "measured.json").read_text()),
            json.loads((cache / "formats.json").read_text()),
        )
        held = m["held_out"]
        costs = result["costs"]["quantized"]
        weights = costs.get("weights_bytes")
        if weights is None:  # a file older than the count: the same packed bytes, from eq. 7's bit sums
            weights = -(-(costs["memory_bits"]["W"] + costs["memory_bits"].get("B", 0)) // 8)
        out.append(
            {
                "name": name,
                "samples": held["samples"],
                "accuracy": None,
                "loss": held["loss"],
                "loss_interval": held["interval"],
                "weights_bytes": weights,
                "peak_activation_bytes": costs.get("peak_activation_bytes"),
                "seconds": result["timings"].get("search_seconds"),
            }
        )
    return out


def stored_name(eps: float) -> str:
    return f"optsearch pareto, eps {100 * eps:g}%, min. weights"


def stored_rows(
    model: str, allocation_dir: Path, runs: Path, eps_values: Sequence[float]
) -> list[dict[str, Any]]:
    """``optsearch pareto`` at each eps, minimising weights memory, from the stored curves of the
    model's pareto search (same split: the result's settings); a row naming the command when the
    search is not there. Run from the repository root: the result's model and data paths are its."""
    import optsearch
    from optsearch.core.errors import OptsearchError

    source = allocation_dir / f"{model}-pareto"
    if not (source / "formats.json").is_file():
        command = f"optsearch batch configs/allocation.yaml --only '{model}-pareto-*'"
        return [
            {"name": stored_name(eps), "error": f"no stored curves in {source}: {command}"}
            for eps in eps_values
        ]
    out: list[dict[str, Any]] = []
    for eps in eps_values:
        folder = runs / f"{model}-weights-eps{eps:g}"
        started = time.perf_counter()
        try:
            result = optsearch.pareto(source, eps, out=folder, objective=STORED_OBJECTIVE, overwrite=True)
        except OptsearchError as exc:
            out.append({"name": stored_name(eps), "error": str(exc)})
            continue
        held = result.accuracy["held_out"]
        costs = result.costs["quantized"]
        out.append(
            {
                "name": stored_name(eps),
                "samples": held.samples,
                "accuracy": held.quantized,
                "accuracy_interval": list(held.accuracy_interval("quantized", CONFIDENCE) or ()),
                "loss": held.quantized_loss,
                "loss_interval": list(held.loss_interval(CONFIDENCE) or ()),
                "weights_bytes": costs.weights_bytes,
                "peak_activation_bytes": costs.peak_activation_bytes,
                "evaluations": result.evaluations,
                "seconds": time.perf_counter() - started,
                "folder": str(folder),
            }
        )
    return out


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _interval(bounds: Sequence[float]) -> str:
    return f"[{_pct(bounds[0])}, {_pct(bounds[1])}]"


def _bytes(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def verdict(rows: Sequence[dict[str, Any]]) -> str:
    """Issue 22's target on one model: the optsearch rows whose held-out loss is no higher than
    TFLite int8's and whose weights memory is at least WEIGHTS_TARGET smaller, the one with the
    least weights memory named."""
    tflite = next((r for r in rows if r["name"] == "TFLite int8" and "error" not in r), None)
    if tflite is None:
        return "target: no TFLite int8 row to compare with"
    ours = [
        r for r in rows if r["name"].startswith("optsearch ") and "error" not in r and r.get("weights_bytes")
    ]
    limit = (1 - WEIGHTS_TARGET) * tflite["weights_bytes"]
    met = [r for r in ours if r["loss"] <= tflite["loss"] and r["weights_bytes"] <= limit]
    if met:
        best = min(met, key=lambda r: r["weights_bytes"])
        return (
            f"target **met** by {len(met)} of {len(ours)} optsearch rows; the smallest, {best['name']}: "
            f"held-out loss {_pct(best['loss'])} against TFLite int8's {_pct(tflite['loss'])}, weights "
            f"{1 - best['weights_bytes'] / tflite['weights_bytes']:.1%} smaller"
        )
    no_worse = [r for r in ours if r["loss"] <= tflite["loss"]]
    if no_worse:
        best = min(no_worse, key=lambda r: r["weights_bytes"])
        return (
            f"target **not met**: the smallest optsearch row no worse than TFLite int8's held-out loss "
            f"({_pct(tflite['loss'])}), {best['name']} ({_pct(best['loss'])}), has "
            f"{1 - best['weights_bytes'] / tflite['weights_bytes']:.1%} less weights memory "
            f"(target {WEIGHTS_TARGET:.0%})"
        )
    best = min(ours, key=lambda r: r["loss"]) if ours else None
    lowest = "" if best is None else f"; the lowest, {best['name']}, lost {_pct(best['loss'])}"
    return (
        f"target **not met**: no optsearch row's held-out loss is as low as TFLite int8's "
        f"({_pct(tflite['loss'])}){lowest}"
    )


def plot(result: dict[str, Any], rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Held-out loss against weights memory and against peak activation memory, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in (
        (axes[0], "weights_bytes", "weights memory (bytes)"),
        (axes[1], "peak_activation_bytes", "peak activation memory per sample (bytes)"),
    ):
        for r in rows:
            if "error" in r or not r.get(key) or "loss" not in r:
                continue
            low, high = r.get("loss_interval") or (r["loss"], r["loss"])
            marker = (
                "o" if r["name"].startswith("optsearch") else ("s" if r["name"].startswith("TFLite") else "^")
            )
            ax.errorbar(
                r[key], 100 * r["loss"], yerr=[[100 * (r["loss"] - low)], [100 * (high - r["loss"])]],
                fmt=marker, capsize=3, label=r["name"],
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out loss (%), 95% interval")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"{result['model']}: held-out half, {result['rows'][0]['samples']} samples")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(results: Sequence[dict[str, Any]], figures: Path, docs: Path = ROOT / "docs") -> str:
    """docs/peers.md from the cached results (no number is computed here but formatting), and each
    model's plot into ``figures``."""
    lines = [
        "# optsearch and its peers",
        "",
        "Written by `scripts/bench_peers.py` from `docs/peers/<model>.json`; do not edit by hand.",
        "",
        "Held-out half of the 50/50 split of docs/results.md "
        f"(search_fraction {SEARCH_FRACTION}, seed {SEED});",
        "TFLite is calibrated on the search half (the representative dataset). Loss is the relative loss",
        "against float32 on the same samples, (L - G) / C, with its two-sided 95% interval "
        "(`core.confidence.loss_interval`). Weights memory: the constant weight and bias operands",
        "of the conv and fully-connected ops (int8 weights + int32 biases; int64 biases in int16x8; float32",
        "for the float row, from the float TFLite file). Peak activation memory: the largest set of",
        "activation tensors alive at once in op order, per sample (`core.memory.peak_activation_memory`).",
        "Time: Keras inference for float32 and the emulated rows; conversion (calibration included) plus",
        "TFLite inference for TFLite; the search for optsearch's searches (their held-out loss is",
        "bench_budget's / bench_allocation's, on the same held-out half; accuracy is left blank there).",
        "The rows *min. weights* are `optsearch pareto` answering eps "
        f"{', '.join(f'{100 * e:g}%' for e in STORED_EPS)}",
        f"with `--objective {STORED_OBJECTIVE}` from the stored curves of the eps 1% pareto search",
        "(docs/allocation/MODEL-pareto), on the same split; their time is that answer's alone (the curves",
        "took the eps 1% row's time once). Under each table: issue 22's target, an optsearch row whose",
        f"held-out loss is no higher than TFLite int8's with at least {WEIGHTS_TARGET:.0%} less weights",
        "memory.",
        "",
        "What each row quantizes differs. optsearch's rows (uniform 8-bit and the searches) are emulated",
        "as `optsearch run` computes them: weights, biases and each layer's activation output; a",
        "BatchNorm after the activation (the paper's zoo models have one after every conv) stays float",
        "between two quantizers. TFLite quantizes every tensor, those BatchNorms' outputs included. How",
        "far the integer network is from the emulation is docs/allocation.md's exact-network column (at",
        "most 0.13 points from the emulated held-out loss over its 16 searches).",
        "",
    ]
    for result in results:
        limit = result.get("samples_limit")
        lines += [
            f"## {result['model']}",
            "",
            f"Data `{result['data']}`: {result['search_samples']} search samples, "
            f"{result['rows'][0]['samples']} held-out samples{f' (limited to {limit})' if limit else ''}.",
            "",
            "| method | held-out acc. | 95% interval | loss | 95% interval | weights memory (B) | "
            "peak activations (B) | time (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = [*result["rows"], *search_rows(result["model"], docs), *result.get("stored", [])]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['name']} | not run: {r['error'].replace('|', '/')} | | | | | | |")
                continue
            loss = _pct(r["loss"]) if "loss" in r else "n/a"
            loss_int = _interval(r["loss_interval"]) if "loss_interval" in r else ""
            accuracy = "" if r.get("accuracy") is None else _pct(r["accuracy"])
            acc_int = "" if r.get("accuracy_interval") is None else _interval(r["accuracy_interval"])
            memory = f"{_bytes(r['weights_bytes'])} | {_bytes(r['peak_activation_bytes'])}"
            lines.append(
                f"| {r['name']} | {accuracy} | {acc_int} | {loss} | {loss_int} | {memory} | "
                f"{_seconds(r['seconds'])} |"
            )
        figure = figures / f"{result['model']}.png"
        plot(result, rows, figure)
        lines += [
            "",
            f"{result['model']}: {verdict(rows)}.",
            "",
            f"![{result['model']}](peers/{figure.name})",
            "",
        ]
    recorded = [r for r in results if "versions" in r]
    if recorded:
        v, command = recorded[-1]["versions"], recorded[-1].get("command", "")
        lines += [
            "## How these were measured",
            "",
            f"Python {v['python']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, {v['machine']}.",
            "",
            "```text",
            command,
            "```",
            "",
        ]
    return "\n".join(lines)


def _cached(target: Path, key: str, value: Any, force: bool) -> bool:
    """Whether ``target`` holds a measurement made with ``key`` at ``value`` (and --force is off)."""
    return not force and target.is_file() and json.loads(target.read_text()).get(key) == value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ZOO), help="model names (files NAME.keras)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--data", help="one data spec for every model (default: the zoo model's dataset)")
    parser.add_argument("--data-dir", help="dataset folder (default: $OPTSEARCH_DATA or ../shared/datasets)")
    parser.add_argument("--samples", type=int, help="at most N samples of each half (quick runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="writes OUT/peers.md and OUT/peers/")
    parser.add_argument("--force", action="store_true", help="measure again even when cached")
    parser.add_argument(
        "--allocation-dir",
        type=Path,
        default=ROOT / "docs" / "allocation",
        help="where each model's eps 1%% pareto search is kept (MODEL-pareto/), for the min. weights rows",
    )
    parser.add_argument(
        "--stored-eps",
        type=float,
        nargs="+",
        default=list(STORED_EPS),
        help="budgets of the min. weights rows",
    )
    parser.add_argument(
        "--runs", type=Path, default=ROOT / "runs" / "peers", help="where those answers are written"
    )
    parser.add_argument("--render-only", action="store_true", help="render the cached results only")
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    data_dir = args.data_dir or os.environ.get("OPTSEARCH_DATA") or str(DEFAULT_DATA_DIR)
    cache = args.out / "peers"
    cache.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python scripts/bench_peers.py", *(sys.argv[1:] if argv is None else argv)])
    if not args.render_only:
        for name in args.models:
            target = cache / f"{name}.json"
            if _cached(target, "samples_limit", args.samples, args.force):
                print(f"{name}: cached ({target})")
                continue
            data = args.data or dataset_of(name)
            print(f"{name}: measuring on {data}", flush=True)
            result = measure(args.model_dir / f"{name}.keras", data, data_dir, args.samples)
            result["versions"], result["command"] = versions(), command
            target.write_text(json.dumps(result, indent=2) + "\n")
        for name in args.models:
            target = cache / f"{name}-stored.json"
            if _cached(target, "eps", args.stored_eps, args.force):
                print(f"{name}: stored-curve rows cached ({target})")
                continue
            print(f"{name}: optsearch pareto at eps {args.stored_eps} from the stored curves", flush=True)
            rows = stored_rows(name, args.allocation_dir, args.runs, args.stored_eps)
            target.write_text(json.dumps({"eps": args.stored_eps, "rows": rows}, indent=2) + "\n")
    order = {name: i for i, name in enumerate(ZOO)}
    files = sorted(
        (p for p in cache.glob("*.json") if not p.stem.endswith("-stored")),
        key=lambda p: (order.get(p.stem, len(order)), p.stem),
    )
    results = []
    for path in files:
        result = json.loads(path.read_text())
        stored = path.with_name(f"{path.stem}-stored.json")
        result["stored"] = json.loads(stored.read_text())["rows"] if stored.is_file() else []
        results.append(result)
    (args.out / "peers.md").write_text(render(results, cache))
    print(f"wrote {args.out / 'peers.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
