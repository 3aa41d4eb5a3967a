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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import bench_budget  # a sibling script: its measure() is this page's too
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
#: Bits of the network input in the emulated rows: the zoo's raw 8-bit pixels (``run``'s default).
INPUT_BITS = 8
SEED = 0
CONFIDENCE = 0.95
TFLITE_MODES: tuple[Literal["int8", "int16x8"], ...] = ("int8", "int16x8")
#: Alg. 2's budgets (default criterion): eps 1% is bench_budget's / bench_allocation's run, the others
#: run in ``optsearch batch configs/peers.yaml`` and are measured here.
ALG2_EPS = (0.005, 0.01, 0.02)
#: The models whose eps 1% pareto search also runs with ``--fold-bn exact``
#: (``configs/peers_fold_bn.yaml``): the two whose per-tensor formats miss the target.
FOLD_BN_MODELS = ("resnet8_cifar10", "mobilenet_v1_cifar10")
#: ``optsearch pareto`` from the stored curves of ``<allocation-dir>/<model>-pareto``: these budgets,
#: minimising this objective.
STORED_EPS = (0.005, 0.01, 0.02)
STORED_OBJECTIVE = "weights"
#: Each model's cached rows besides ``<model>.json``: ``<model>-<part>.json``.
EXTRA = ("parts", "searches", "stored")
#: Issue 22's target: an optsearch row no worse than TFLite int8 on held-out loss with at least this
#: much less weights memory.
WEIGHTS_TARGET = 0.40


@dataclass(frozen=True)
class Search:
    """One of optsearch's searches on the page (a ``bench_budget.Run``): its row, the batch folder it
    runs into, and the folders under docs/ where its measured copy may be kept (the first found)."""

    key: str
    label: str
    kept_in: tuple[str, ...]
    batch: str
    """The batch file whose ``out:`` folder (``runs``, under the repository) the search runs into."""
    runs: str = "runs/peers"
    models: tuple[str, ...] | None = None
    """Only these models have the search (None: every zoo model)."""
    docs: Path = ROOT / "docs"

    def folder(self, model: str, runs: Path) -> Path:
        return runs / f"{model}-{self.key}"

    def kept(self, model: str) -> Path:
        return self.docs / self.kept_in[0].format(model=model)

    @property
    def measured_here(self) -> bool:
        """Whether this script measures the search (else bench_budget / bench_allocation do)."""
        return self.kept_in[0].startswith(SEARCHES_KEPT)

    def command(self, model: str) -> str:
        return f"optsearch batch {self.batch} --only '{model}-{self.key}'"


def _eps(eps: float) -> str:
    return f"{100 * eps:g}%"


#: Where this script keeps the searches it measures itself, under docs/.
SEARCHES_KEPT = "peers/searches"
SEARCHES = (
    *(
        Search(
            f"paper-eps{eps:g}",
            f"optsearch Alg. 2, eps {_eps(eps)}",
            ("budget/{model}-guarded-1", "allocation/{model}-paper")
            if eps == 0.01
            else (f"{SEARCHES_KEPT}/{{model}}-paper-eps{eps:g}",),
            "configs/budget.yaml or configs/allocation.yaml" if eps == 0.01 else "configs/peers.yaml",
            "runs/budget or runs/allocation" if eps == 0.01 else "runs/peers",
        )
        for eps in ALG2_EPS
    ),
    Search(
        "pareto",
        "optsearch pareto, eps 1%",
        ("allocation/{model}-pareto",),
        "configs/allocation.yaml",
        "runs/allocation",
    ),
    Search(
        "pareto-fold-bn",
        "optsearch pareto --fold-bn exact, eps 1%",
        (f"{SEARCHES_KEPT}/{{model}}-pareto-fold-bn",),
        "configs/peers_fold_bn.yaml",
        "runs/peers_fold_bn",
        FOLD_BN_MODELS,
    ),
)


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
    float_pred = top1(model, held_x)
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


def emulate(
    model: Any,
    name: str,
    formats_of: Any,
    held_x: np.ndarray,
    held_y: np.ndarray,
    float_pred: np.ndarray,
    mode: Any = None,
    kinds: str = "WBA",
) -> dict[str, Any]:
    """One emulated row: ``formats_of(qmodel)`` on optsearch's quantized model (``mode``: the
    quantizer's rounding and overflow, default optsearch's; only the tensors of ``kinds`` quantized,
    the rest float), held-out accuracy and loss, and the weights and peak activation memory of the
    formats counted as every optsearch run counts them."""
    from optsearch.core.fixedpoint import DEFAULT_MODE
    from optsearch.core.memory import buffer_bits, peak_activation_memory, weights_memory
    from optsearch.model.graph import quantized_model
    from optsearch.model.schedule import activation_schedule

    started = time.perf_counter()
    qmodel = quantized_model(model, "activation", mode=mode or DEFAULT_MODE)
    formats = formats_of(qmodel)
    qmodel.set_formats({t: f for t, f in formats.items() if t.kind in kinds})
    predictions = top1(qmodel.keras_model, held_x)
    bits = {t: f.bw for t, f in formats.items()}
    schedule = activation_schedule(qmodel.float_model, qmodel.layers, "activation")
    peak = peak_activation_memory(schedule, buffer_bits(schedule, bits, INPUT_BITS), "packed")
    return {
        **row(name, predictions, float_pred, held_y),
        "weights_bytes": weights_memory(qmodel.layers, bits).packed_bytes,
        "peak_activation_bytes": peak.bytes,
        "seconds": time.perf_counter() - started,
    }


def uniform8(search_x: np.ndarray) -> Any:
    """optsearch's uniform 8-bit formats (activation ranges from the search half)."""
    from optsearch.data import Dataset
    from optsearch.evaluators.keras import activation_ranges
    from optsearch.model.graph import uniform_formats

    def formats_of(qmodel: Any) -> dict[Any, Any]:
        search = Dataset(search_x, np.zeros(len(search_x), dtype=np.int64), "search half")
        return uniform_formats(qmodel, 8, activation_ranges(qmodel, search))

    return formats_of


def emulated_rows(
    model: Any, search_x: np.ndarray, held_x: np.ndarray, held_y: np.ndarray, float_pred: np.ndarray
) -> list[dict[str, Any]]:
    """hls4ml's default precision and optsearch's uniform 8-bit, emulated."""
    from optsearch.core.fixedpoint import HLS4ML_DEFAULT_MODE, Format

    def hls4ml_default(qmodel: Any) -> dict[Any, Format]:
        return dict.fromkeys(qmodel.tensors, Format(16, 10))  # ap_fixed<16,6>

    return [
        emulate(
            model, "hls4ml ap_fixed<16,6> (AP_TRN, AP_WRAP)", hls4ml_default, held_x, held_y, float_pred,
            HLS4ML_DEFAULT_MODE,
        ),
        emulate(model, "optsearch uniform 8-bit", uniform8(search_x), held_x, held_y, float_pred),
    ]  # fmt: skip


#: Where uniform 8-bit per-tensor formats lose (the page's "Where the target is missed"): the loss of
#: each kind of tensor quantized alone, the rest float.
PARTS = (("weights and biases only", "WB"), ("activations only", "A"))


def measure_parts(model_path: Path, data: str, data_dir: str, samples: int | None) -> dict[str, Any]:
    """optsearch's uniform 8-bit with only the weights and biases, then only the activations, quantized."""
    from optsearch.model.loading import load_model

    model = load_model(model_path)
    search_x, held_x, held_y = load_split(model, data, data_dir, samples)
    float_pred = top1(model, held_x)
    rows = [
        emulate(model, f"uniform 8-bit, {label}", uniform8(search_x), held_x, held_y, float_pred, kinds=kinds)
        for label, kinds in PARTS
    ]
    return {"model": model_path.stem, "samples_limit": samples, "rows": rows}


def top1(model: Any, x: np.ndarray) -> np.ndarray:
    """``model``'s top-1 class of every sample of ``x`` (already preprocessed), 256 at a time."""
    return np.concatenate(
        [np.argmax(model.predict(x[i : i + 256], verbose=0), axis=-1) for i in range(0, len(x), 256)]
    )


def search_rows(model: str, docs: Path, model_dir: Path = ROOT / "models") -> list[dict[str, Any]]:
    """optsearch's searches on this model, from their measured copies under ``docs`` (the held-out
    half, the same split), or a row saying which command makes them."""
    from optsearch.core.confidence import accuracy_interval

    out: list[dict[str, Any]] = []
    for search in SEARCHES:
        if search.models is not None and model not in search.models:
            continue
        caches = [docs / folder.format(model=model) for folder in search.kept_in]
        cache = next(
            (c for c in caches if (c / "measured.json").is_file() and (c / "formats.json").is_file()), None
        )
        if cache is None:
            where = " or ".join(str(_shown(c, docs.parent)) for c in caches)
            out.append(
                {"name": search.label, "error": f"not measured yet ({where}: {search.command(model)})"}
            )
            continue
        m, result = (
            json.loads((cache / "measured.json").read_text()),
            json.loads((cache / "formats.json").read_text()),
        )
        held = m["held_out"]
        correct = held["float_correct"] - held["losses"] + held["gains"]
        costs = result["costs"]["quantized"]
        weights = costs.get("weights_bytes")
        if weights is None:  # a file older than the count: the same packed bytes, from eq. 7's bit sums
            weights = -(-(costs["memory_bits"]["W"] + costs["memory_bits"].get("B", 0)) // 8)
        peak = costs.get("peak_activation_bytes")
        if peak is None:  # a file older than the count: counted from its formats, as a run counts it
            peak = activation_peak(model_dir / f"{model}.keras", cache)
        out.append(
            {
                "name": search.label,
                "samples": held["samples"],
                "accuracy": correct / held["samples"],
                "accuracy_interval": list(accuracy_interval(correct, held["samples"], CONFIDENCE)),
                "loss": held["loss"],
                "loss_interval": held["interval"],
                "losses": held["losses"],
                "gains": held["gains"],
                "float_correct": held["float_correct"],
                "weights_bytes": weights,
                "peak_activation_bytes": peak,
                "seconds": result["timings"].get("search_seconds"),
            }
        )
    return out


def _shown(path: Path, root: Path) -> Path:
    """``path`` relative to ``root`` where it is under it (the page names repository paths)."""
    return path.relative_to(root) if path.is_relative_to(root) else path


def activation_peak(model_path: Path, folder: Path) -> int:
    """Peak activation memory (packed bytes, per sample) of a result's formats, counted as
    ``optsearch run`` counts it (``core.memory``), for result files written before the count."""
    import optsearch
    from optsearch.core.memory import buffer_bits, peak_activation_memory
    from optsearch.model.graph import quantized_model
    from optsearch.model.loading import load_model
    from optsearch.model.schedule import activation_schedule

    result = optsearch.load_result(folder)
    settings = result.settings
    if settings.fold_bn != "off":  # every folded run is newer than the count
        raise SystemExit(f"{folder}: no peak activation memory in a --fold-bn {settings.fold_bn} result")
    qmodel = quantized_model(load_model(model_path), settings.activation_point)
    schedule = activation_schedule(qmodel.float_model, qmodel.layers, settings.activation_point)
    bits = {t: f.bw for t, f in result.formats.items()}
    buffers = buffer_bits(schedule, bits, settings.input_bits)
    return peak_activation_memory(schedule, buffers, "packed").bytes


def stored_name(eps: float, variant: str = "") -> str:
    return f"optsearch pareto{variant}, eps {_eps(eps)}, min. weights"


def stored_sources(model: str, allocation_dir: Path, docs: Path) -> list[tuple[str, Path]]:
    """The pareto searches whose stored curves answer the min. weights rows: (name suffix, folder);
    the --fold-bn exact one only where it is measured (``FOLD_BN_MODELS``)."""
    sources = [("", allocation_dir / f"{model}-pareto")]
    folded = docs / SEARCHES_KEPT / f"{model}-pareto-fold-bn"
    if model in FOLD_BN_MODELS and (folded / "formats.json").is_file():
        sources.append((" --fold-bn exact", folded))
    return sources


def stored_rows(
    model: str, sources: Sequence[tuple[str, Path]], runs: Path, eps_values: Sequence[float]
) -> list[dict[str, Any]]:
    """``optsearch pareto`` at each eps, minimising weights memory, from the stored curves of each
    pareto search in ``sources`` (same split: the result's settings); a row naming the command when
    a search is not there. Run from the repository root: the results' model and data paths are its."""
    import optsearch
    from optsearch.core.errors import OptsearchError

    out: list[dict[str, Any]] = []
    for variant, source in sources:
        if not (source / "formats.json").is_file():
            command = f"optsearch batch configs/allocation.yaml --only '{model}-pareto-*'"
            out += [
                {"name": stored_name(eps, variant), "error": f"no stored curves in {source}: {command}"}
                for eps in eps_values
            ]
            continue
        for eps in eps_values:
            folder = runs / f"{model}{variant.replace(' --', '-').replace(' ', '-')}-weights-eps{eps:g}"
            started = time.perf_counter()
            try:
                result = optsearch.pareto(source, eps, out=folder, objective=STORED_OBJECTIVE, overwrite=True)
            except OptsearchError as exc:
                out.append({"name": stored_name(eps, variant), "error": str(exc)})
                continue
            held = result.accuracy["held_out"]
            costs = result.costs["quantized"]
            out.append(
                {
                    "name": stored_name(eps, variant),
                    "samples": held.samples,
                    "accuracy": held.quantized,
                    "accuracy_interval": list(held.accuracy_interval("quantized", CONFIDENCE) or ()),
                    "loss": held.quantized_loss,
                    "loss_interval": list(held.loss_interval(CONFIDENCE) or ()),
                    "losses": held.losses,
                    "gains": held.gains,
                    "float_correct": held.float_correct,
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
    least weights memory named; when none is, by how much the closest rows miss, on loss and on
    memory."""
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
            f"{_less(best, tflite)} smaller"
        )
    if not ours:
        return "target **not met**: no optsearch row measured"
    parts = [f"target **not met** (TFLite int8: held-out loss {_pct(tflite['loss'])})"]
    small = [r for r in ours if r["weights_bytes"] <= limit]
    if small:
        closest = min(small, key=lambda r: r["loss"])
        parts.append(
            f"among rows with at least {WEIGHTS_TARGET:.0%} less weights memory the lowest loss is "
            f"{_pct(closest['loss'])} ({closest['name']}, {_less(closest, tflite)} less), "
            f"{_points(closest['loss'] - tflite['loss'])} higher{_net(closest, tflite)}"
        )
    no_worse = [r for r in ours if r["loss"] <= tflite["loss"]]
    if no_worse:
        smallest = min(no_worse, key=lambda r: r["weights_bytes"])
        parts.append(
            f"the smallest row no worse than TFLite, {smallest['name']} ({_pct(smallest['loss'])}), has "
            f"{_less(smallest, tflite)} less weights memory, {smallest['weights_bytes'] - limit:,.0f} bytes "
            f"more than the target's {limit:,.0f}"
        )
    else:
        lowest = min(ours, key=lambda r: r["loss"])
        parts.append(
            f"no row is as low; the lowest, {lowest['name']}, lost {_pct(lowest['loss'])} "
            f"({_points(lowest['loss'] - tflite['loss'])} higher{_net(lowest, tflite)})"
        )
    return "; ".join(parts)


def _less(row: dict[str, Any], than: dict[str, Any]) -> str:
    return f"{1 - row['weights_bytes'] / than['weights_bytes']:.1%}"


def _points(x: float) -> str:
    return f"{100 * x:.2f} points"


def _net(row: dict[str, Any], tflite: dict[str, Any]) -> str:
    """The gap in samples: net flips (losses - gains) of the row against TFLite's, when both have counts."""
    if not all(k in r for r in (row, tflite) for k in ("losses", "gains")):
        return ""
    gap = (row["losses"] - row["gains"]) - (tflite["losses"] - tflite["gains"])
    return f", {gap:+d} net flipped samples of {row['samples']:,}"


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


def render(
    results: Sequence[dict[str, Any]], figures: Path, per_channel: dict[str, Any] | None = None
) -> str:
    """docs/peers.md from the cached results (no number is computed here but formatting), and each
    model's plot into ``figures``; ``per_channel``: scripts/per_channel_ranges.py's measurements, for
    the reasons under a missed target."""
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
        "TFLite inference for TFLite; the search for optsearch's searches, on 2 CPU cores (their",
        "held-out counts are bench_budget's `measure`: one pass of the found formats over the held-out",
        "half). Alg. 2 and pareto use the default (guarded) criterion; Alg. 2 at eps 1% is",
        "docs/budget.md's and docs/allocation.md's run, at 0.5% and 2% `configs/peers.yaml`'s. The rows",
        "*min. weights* are `optsearch pareto` answering eps "
        f"{', '.join(f'{100 * e:g}%' for e in STORED_EPS)}",
        f"with `--objective {STORED_OBJECTIVE}` from the stored curves of the eps 1% pareto search",
        "(docs/allocation/MODEL-pareto; *--fold-bn exact*: `configs/peers_fold_bn.yaml`'s, kept in",
        "docs/peers/searches/), on the same split; their time is that answer's alone (the curves took",
        "the eps 1% row's time once). They minimise weights memory only, so the activations keep the",
        "widest format their curves measured (16 bits) and their peak activation memory is twice",
        "uniform 8-bit's. Under each table: issue 22's target, an optsearch row whose",
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
        rows = [*result["rows"], *result.get("searches", []), *result.get("stored", [])]
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
        said = verdict(rows)
        lines += ["", f"{result['model']}: {said}.", ""]
        if "not met" in said:
            lines += why_missed(result, rows, (per_channel or {}).get("results", []))
        lines += [f"![{result['model']}](peers/{figure.name})", ""]
    recorded = [r for r in results if "versions" in r]
    if recorded:
        v, command = recorded[-1]["versions"], recorded[-1].get("command", "")
        lines += [
            "## How these were measured",
            "",
            f"Python {v['python']}, TensorFlow {v['tensorflow']}, Keras {v['keras']}, {v['machine']}.",
            "The searches (resumable; a rerun skips finished jobs), then this page:",
            "",
            "```text",
            "OPTSEARCH_DATA=../shared/datasets optsearch batch configs/budget.yaml      # Alg. 2, eps 1%",
            "OPTSEARCH_DATA=../shared/datasets optsearch batch configs/allocation.yaml  # pareto eps 1%",
            "OPTSEARCH_DATA=../shared/datasets optsearch batch configs/peers.yaml       # Alg. 2, 0.5%, 2%",
            "OPTSEARCH_DATA=../shared/datasets optsearch batch configs/peers_fold_bn.yaml",
            "python scripts/bench_budget.py && python scripts/bench_allocation.py",
            command,
            "```",
            "",
        ]
    return "\n".join(lines)


def why_missed(
    result: dict[str, Any], rows: Sequence[dict[str, Any]], per_channel: Sequence[dict[str, Any]]
) -> list[str]:
    """Why a model misses the target, from what was measured: where uniform 8-bit per-tensor formats
    lose against TFLite's per-channel int8 (weights or activations), and, where
    scripts/per_channel_ranges.py measured the model, what per-channel F buys and in which layers."""
    named = {r["name"]: r for r in rows if "error" not in r}
    tflite, ours = named.get("TFLite int8"), named.get("optsearch uniform 8-bit")
    lines = ["Why:", ""]
    if tflite and ours:
        split = ", ".join(
            f"{r['name'].removeprefix('uniform 8-bit, ')} {_pct(r['loss'])} {_interval(r['loss_interval'])}"
            for r in result.get("parts", [])
        )
        lines.append(
            f"- At 8 bits, per-tensor power-of-two formats lose {_pct(ours['loss'])} "
            f"{_interval(ours['loss_interval'])}{f' ({split})' if split else ''} where TFLite's "
            f"per-channel affine int8 loses {_pct(tflite['loss'])} {_interval(tflite['loss_interval'])}; "
            "to lose no more than TFLite, per-tensor formats must keep the tensors behind that loss "
            "wider than 8 bits, and those bits are weights memory."
        )
    for measured in per_channel:
        if Path(measured["model"]).stem != result["model"]:
            continue
        net = measured["network"]["8"]
        lines.append(
            f"- `--fold-bn {measured['fold_bn']}`, scripts/per_channel_ranges.py "
            f"(docs/models/per_channel.md): 8-bit weights alone lose {_pct(net['W']['loss'])} per tensor "
            f"and {_pct(net['W_per_channel']['loss'])} with a per-channel F (emulated); "
            f"{_layer_gaps(measured['layers'])}."
        )
    lines.append("")
    return lines


def _layer_gaps(layers: Sequence[dict[str, Any]], top: int = 3) -> str:
    """The layers where a per-channel F saves the most held-out loss (weights alone), at 8 and 6 bits."""
    said = []
    for bits in ("8", "6"):
        gaps = sorted(
            (
                (layer["per_tensor"][bits]["loss"] - layer["per_channel"][bits]["loss"], layer)
                for layer in layers
                if bits in layer.get("per_tensor", {}) and bits in layer.get("per_channel", {})
            ),
            key=lambda pair: -pair[0],
        )[:top]
        named = ", ".join(
            f"{layer['layer']} {_pct(layer['per_tensor'][bits]['loss'])} -> "
            f"{_pct(layer['per_channel'][bits]['loss'])}"
            for _, layer in gaps
        )
        said.append(f"at {bits} bits per tensor -> per channel, the largest gaps: {named}")
    return "; ".join(said)


def _fresh(target: Path, key: dict[str, Any], force: bool) -> bool:
    """Whether ``target`` holds a measurement made with every value of ``key`` (and --force is off)."""
    if force or not target.is_file():
        return False
    cached = json.loads(target.read_text())
    return all(cached.get(k) == v for k, v in key.items())


def measure_searches(model: str, data: str, args: argparse.Namespace, data_dir: str) -> None:
    """Measure on the held-out half (bench_budget.measure: paired counts, the exact network) the
    searches this script keeps (Alg. 2 at eps 0.5% and 2%, the --fold-bn pareto search) whose batch
    folders under ``--batch-root`` are finished; cached in ``<out>/peers/searches/``."""
    for search in SEARCHES:
        if not search.measured_here or (search.models is not None and model not in search.models):
            continue
        search = replace(search, docs=args.out)
        if (search.kept(model) / "measured.json").is_file() and not args.force:
            continue
        runs = args.batch_root / search.runs
        if not (search.folder(model, runs) / "formats.json").is_file():
            print(f"{model}: {search.label} not finished ({search.command(model)})")
            continue
        print(f"{model}: measuring {search.label} on the held-out half", flush=True)
        kept_root = args.out / SEARCHES_KEPT
        bench_budget.measure(
            model, data, search, runs, data_dir, kept_root=kept_root, model_dir=args.model_dir
        )


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
    parser.add_argument(
        "--batch-root",
        type=Path,
        default=ROOT,
        help="the folder whose runs/peers/ and runs/peers_fold_bn/ hold the finished searches of "
        "configs/peers.yaml and configs/peers_fold_bn.yaml (measured here on the held-out half)",
    )
    parser.add_argument(
        "--per-channel",
        type=Path,
        default=ROOT / "docs" / "models" / "per_channel.json",
        help="scripts/per_channel_ranges.py's measurements, quoted where a model misses the target",
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
            if _fresh(target, {"samples_limit": args.samples}, args.force):
                print(f"{name}: cached ({target})")
                continue
            data = args.data or dataset_of(name)
            print(f"{name}: measuring on {data}", flush=True)
            result = measure(args.model_dir / f"{name}.keras", data, data_dir, args.samples)
            result["versions"], result["command"] = versions(), command
            target.write_text(json.dumps(result, indent=2) + "\n")
        for name in args.models:
            target = cache / f"{name}-parts.json"
            if _fresh(target, {"samples_limit": args.samples}, args.force):
                continue
            data = args.data or dataset_of(name)
            print(f"{name}: uniform 8-bit, weights and activations apart", flush=True)
            parts = measure_parts(args.model_dir / f"{name}.keras", data, data_dir, args.samples)
            target.write_text(json.dumps(parts, indent=2) + "\n")
        for name in args.models:
            measure_searches(name, args.data or dataset_of(name), args, data_dir)
            rows = search_rows(name, args.out, args.model_dir)
            (cache / f"{name}-searches.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        for name in args.models:
            target = cache / f"{name}-stored.json"
            sources = stored_sources(name, args.allocation_dir, args.out)
            key = {"eps": args.stored_eps, "sources": [str(folder) for _, folder in sources]}
            if _fresh(target, key, args.force):
                print(f"{name}: stored-curve rows cached ({target})")
                continue
            print(f"{name}: optsearch pareto at eps {args.stored_eps} from the stored curves", flush=True)
            rows = stored_rows(name, sources, args.runs, args.stored_eps)
            target.write_text(json.dumps({**key, "rows": rows}, indent=2) + "\n")
    order = {name: i for i, name in enumerate(ZOO)}
    files = sorted(
        (p for p in cache.glob("*.json") if not p.stem.endswith(tuple(f"-{part}" for part in EXTRA))),
        key=lambda p: (order.get(p.stem, len(order)), p.stem),
    )
    results = []
    for path in files:
        result = json.loads(path.read_text())
        for part in EXTRA:
            extra = path.with_name(f"{path.stem}-{part}.json")
            result[part] = json.loads(extra.read_text())["rows"] if extra.is_file() else []
        results.append(result)
    per_channel = args.per_channel if args.per_channel.is_file() else None
    page = render(results, cache, json.loads(per_channel.read_text()) if per_channel else None)
    (args.out / "peers.md").write_text(page)
    print(f"wrote {args.out / 'peers.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
