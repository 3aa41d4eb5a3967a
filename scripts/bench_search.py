"""Benchmark: the same dependent OptSearchCNN search with several evaluators, side by side.

One invocation runs every chosen evaluator on the same model, search set and settings (paper
defaults, ``SearchSettings()``, eps 0.01) and writes ``docs/benchmarks.md`` and ``.json``:

- ``naive``   ``NaiveEvaluator``: a new quantized model and a full ``predict`` per candidate.
- ``inplace`` ``KerasEvaluator(fragile_first=False)``: one model, formats changed in place, early
  rejection in data order.
- ``keras``   ``KerasEvaluator``: as ``inplace``, samples most likely to flip first.
- ``engine``  ``optsearch.evaluators.engine.CachedEvaluator`` (prefix cache, memo), when that module exists.

Ablations, each the engine with one technique taken away (what that technique contributes):
``engine-nomemo`` (no memo by content), ``engine-nocache`` (prefix recomputed for every
candidate: cache of 0 MB), ``engine-noincremental`` (each cut computed from the input, not from
the previous cut), ``engine-noreject`` (no early rejection, and so no local-search bound:
every candidate sees every sample), ``engine-nofragile`` (samples in data order) and
``engine-bigchunks`` (every chunk a full batch, no small leading chunks).

Each evaluator runs in its own child process (this script re-invoked with ``--only NAME --json
PATH``), one after another, so that each peak RSS is its own and no evaluator inherits another's
warm caches; the parent imports no TensorFlow. Per evaluator: search wall time, evaluations, one
float pass over the search set (timed in the same child, after the search), full-pass equivalents
(search seconds / float pass seconds), peak RSS, speed-up against ``naive`` and whether the decided
formats are identical to ``naive``'s (and to each other).

    python scripts/bench_search.py                                # sequential MNIST, 5000 samples
    python scripts/bench_search.py --branched --evaluators inplace,keras,engine
    python scripts/bench_search.py --model /tmp/m.keras --search-size 500 --max-tensors 3 \\
        --out /tmp/bench.md                                       # a quick trial

Exit status: 0 when every evaluator ran and all decided the same formats, 1 when one failed (its
error is in the report), 2 when the formats differ (each difference is printed and reported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"
SEQUENTIAL_MODEL = REPO_ROOT / "models" / "sequential_mnist.keras"
BRANCHED_MODEL = REPO_ROOT / "models" / "branched_mnist.keras"
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"

#: Evaluators in the order they run and appear in the table; ``naive`` is the reference.
EVALUATORS = (
    "naive",
    "inplace",
    "keras",
    "engine",
    "engine-nomemo",
    "engine-nocache",
    "engine-noincremental",
    "engine-noreject",
    "engine-nofragile",
    "engine-bigchunks",
)
#: What ``--evaluators`` runs when not given.
DEFAULT_EVALUATORS = ("naive", "inplace", "keras", "engine")
REFERENCE = "naive"
#: Timed float passes after one untimed warm-up; the median is reported.
FLOAT_PASS_REPEATS = 3


# --------------------------------------------------------------------------------------------------
# Child: one evaluator, one search, one JSON result


class CountingEvaluator:
    """Forwards to an evaluator and adds up the samples it actually ran (early rejection shows here)."""

    def __init__(self, inner: Any, early_rejection: bool = True) -> None:
        self.inner = inner
        self.early_rejection = early_rejection
        self.calls = 0
        self.samples_run = 0
        self.early_stops = 0

    @property
    def float_accuracy(self) -> float:
        return float(self.inner.float_accuracy)

    def evaluate(
        self,
        formats: Mapping[Any, Any],
        *,
        varying: Any = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Any:
        if not self.early_rejection:
            max_loss = must_beat = None
        result = self.inner.evaluate(formats, varying=varying, max_loss=max_loss, must_beat=must_beat)
        self.calls += 1
        self.samples_run += result.samples
        self.early_stops += 0 if result.exact else 1
        return result


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Set up model and data, run the search with evaluator ``args.only``, return the measurements."""
    import keras
    import numpy as np
    import tensorflow as tf

    from optsearch.data import Preprocess, batches, fit_channel_axis, load_data, split, validate
    from optsearch.evaluators.keras import KerasEvaluator, activation_ranges
    from optsearch.evaluators.naive import NaiveEvaluator
    from optsearch.methods.opt_search import SearchSettings, opt_search, search_plan
    from optsearch.model.graph import quantized_model
    from optsearch.model.loading import load_model
    from optsearch.run.inputs import num_classes

    tf.get_logger().setLevel("ERROR")  # the naive evaluator retraces on purpose; no warning per call
    name = args.only
    record: dict[str, Any] = {"name": name, "versions": _versions(tf, keras, np)}

    model_path = Path(args.model)
    model = load_model(model_path)
    qmodel = quantized_model(model)
    dataset = load_data(args.data, args.data_dir)
    input_shape = tuple(model.inputs[0].shape[1:])
    preprocess = fit_channel_axis(Preprocess(), tuple(dataset.x.shape[1:]), input_shape)
    validate(
        dataset, input_shape=input_shape, num_classes=num_classes(model, model_path), preprocess=preprocess
    )
    search, _ = split(dataset, min(1.0, args.search_size / len(dataset)), args.seed)

    settings = SearchSettings(eps=args.eps)
    tensors = _truncated_tensors(
        [q.tensors() for q in qmodel.layers], settings, args.max_tensors, search_plan
    )
    ranges = activation_ranges(qmodel, search, preprocess, args.batch_size)
    magnitudes = qmodel.magnitudes(ranges)
    record.update(
        samples=len(search),
        data_source=search.source,
        tensors_searched=[str(t) for layer in tensors for t in layer],
        tensors_in_model=len(qmodel.tensors),
    )

    started = time.perf_counter()
    if name == "naive":
        evaluator: Any = NaiveEvaluator(model, search, preprocess, args.batch_size)
    elif name == "inplace":
        evaluator = KerasEvaluator(qmodel, search, preprocess, args.batch_size, fragile_first=False)
    elif name == "keras":
        evaluator = KerasEvaluator(qmodel, search, preprocess, args.batch_size)
    else:
        from optsearch.evaluators.engine import CachedEvaluator

        evaluator = CachedEvaluator(
            qmodel,
            search,
            preprocess,
            batch_size=args.batch_size,
            cache_mb=0.0 if name == "engine-nocache" else args.cache_mb,
            fragile_first=name != "engine-nofragile",
            first_chunk=args.batch_size if name == "engine-bigchunks" else None,
            memo=name != "engine-nomemo",
            incremental=name != "engine-noincremental",
        )
    record["setup_s"] = time.perf_counter() - started
    record["float_accuracy"] = evaluator.float_accuracy
    record["peak_rss_before_search_mb"] = peak_rss_mb()

    counting = CountingEvaluator(evaluator, early_rejection=name != "engine-noreject")
    started = time.perf_counter()
    outcome = opt_search(counting, tensors, magnitudes, settings)
    record["wall_s"] = time.perf_counter() - started
    record["peak_rss_mb"] = peak_rss_mb()  # before the float pass below adds anything

    forward = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1), reduce_retracing=True)

    def float_pass() -> None:
        for x, _ in batches(search, args.batch_size, preprocess):
            forward(x).numpy()

    record["float_pass_s"] = _median_seconds(float_pass, FLOAT_PASS_REPEATS)
    record.update(
        status="ok",
        evaluations=outcome.evaluations,
        evaluator_calls=counting.calls,
        early_stops=counting.early_stops,
        data_passes=counting.samples_run / len(search),
        network_passes=getattr(evaluator, "passes", None),
        incremental_fills=getattr(evaluator, "incremental_fills", None),
        memo_hits=getattr(evaluator, "memo_hits", None),
        engine_seconds=getattr(evaluator, "seconds", None),
        full_pass_equivalents=record["wall_s"] / record["float_pass_s"],
        decisions=[
            {"tensor": str(d.tensor), "bw": d.fmt.bw, "f": d.fmt.f, "loss": d.loss, "rule": d.rule}
            for d in outcome.decisions
        ],
    )
    return record


def _truncated_tensors(
    tensors_by_layer: Sequence[Sequence[Any]],
    settings: Any,
    max_tensors: int | None,
    plan: Callable[..., Any],
) -> list[list[Any]]:
    """The model's tensors, or only the first ``max_tensors`` of the search plan, layer structure kept.

    The search then plans (and budgets, eq. 9) over the kept tensors only; every evaluator gets the
    same list, so they all do the same work.
    """
    if max_tensors is None:
        return [list(layer) for layer in tensors_by_layer]
    keep = {tensor for tensor, _, _ in plan(tensors_by_layer, settings)[:max_tensors]}
    kept = [[t for t in layer if t in keep] for layer in tensors_by_layer]
    return [layer for layer in kept if layer]


def _median_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one untimed call (tracing, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _versions(tf: Any, keras: Any, np: Any) -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------------------------------
# Parent: one child per evaluator, comparison, report


def run_all(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Run every chosen evaluator in its own child process and gather one report."""
    report: dict[str, Any] = {
        "command": "python scripts/bench_search.py " + shlex.join(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "load_average_start": list(os.getloadavg()),
        },
        "background_jobs": _background_jobs(),
        "settings": {
            "model": str(args.model),
            "data": args.data,
            "search_size": args.search_size,
            "seed": args.seed,
            "eps": args.eps,
            "search": "dependent, SearchSettings() paper defaults",
            "max_tensors": args.max_tensors,
            "batch_size": args.batch_size,
            "cache_mb": args.cache_mb,
        },
        "results": [],
    }
    for name in args.evaluators:
        print(f"[bench] {name}: running ...", file=sys.stderr, flush=True)
        result = _run_child(args, argv, name)
        report["results"].append(result)
        print(f"[bench] {name}: {_summary(result)}", file=sys.stderr, flush=True)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["background_jobs"] = sorted(set(report["background_jobs"]) | set(_background_jobs()))
    ok = [r for r in report["results"] if r["status"] == "ok"]
    if ok:
        first = ok[0]
        report["versions"] = first["versions"]
        report["settings"].update(
            samples=first["samples"],
            data_source=first["data_source"],
            tensors_searched=first["tensors_searched"],
            tensors_in_model=first["tensors_in_model"],
        )
    report["agreement"] = compare(report["results"])
    return report


def _run_child(args: argparse.Namespace, argv: Sequence[str], name: str) -> dict[str, Any]:
    """This script with ``--only name --json FILE``; a failed child becomes a result with its error."""
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        out = Path(tmp) / f"{name}.json"
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--only", name, "--json", str(out)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"name": name, "status": "failed", "note": f"exit code {proc.returncode}", "error": tail}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _summary(result: Mapping[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result.get('note', '')}\n{result.get('error', '')}".rstrip()
    return (
        f"{result['wall_s']:.1f} s, {result['evaluations']} evaluations, "
        f"{result['full_pass_equivalents']:.1f} full-pass equivalents, "
        f"peak RSS {result['peak_rss_mb']:.0f} MB"
    )


def compare(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mark each result's formats (and losses) against the reference and list every mismatch.

    The reference is ``naive`` when it ran, else the first evaluator that ran. Speed-ups are against
    ``naive`` only. Results are annotated in place; the returned summary holds all mismatches.
    """
    ok = [r for r in results if r["status"] == "ok"]
    by_name = {r["name"]: r for r in ok}
    if not ok:
        return {
            "reference": None,
            "all_formats_identical": False,
            "pairwise_formats_identical": {},
            "mismatches": [],
        }
    reference = by_name.get(REFERENCE, ok[0])
    naive = by_name.get(REFERENCE)
    mismatches: list[str] = []
    for r in ok:
        r["formats_identical"], r["losses_identical"], lines = _diff(reference, r)
        mismatches += lines
        r["speedup_vs_naive"] = naive["wall_s"] / r["wall_s"] if naive and r["wall_s"] > 0 else None
    pairwise = {f"{a['name']} vs {b['name']}": _diff(a, b)[0] for i, a in enumerate(ok) for b in ok[i + 1 :]}
    return {
        "reference": reference["name"],
        "all_formats_identical": all(pairwise.values()),
        "pairwise_formats_identical": pairwise,
        "mismatches": mismatches,
    }


def _diff(reference: Mapping[str, Any], other: Mapping[str, Any]) -> tuple[bool, bool, list[str]]:
    """(formats equal, losses equal, one line per differing tensor) between two results."""
    ref = {d["tensor"]: d for d in reference["decisions"]}
    got = {d["tensor"]: d for d in other["decisions"]}
    lines, same_formats, same_losses = [], ref.keys() == got.keys(), True
    for tensor in sorted(ref.keys() | got.keys()):
        a, b = ref.get(tensor), got.get(tensor)
        if a is None or b is None:
            lines.append(f"MISMATCH {other['name']} vs {reference['name']}: {tensor} decided by only one")
            continue
        if (a["bw"], a["f"]) != (b["bw"], b["f"]):
            same_formats = False
            lines.append(
                f"MISMATCH {other['name']} vs {reference['name']}: {tensor} "
                f"({b['bw']}, {b['f']}) vs ({a['bw']}, {a['f']})"
            )
        elif a["loss"] != b["loss"]:
            same_losses = False
            lines.append(
                f"MISMATCH {other['name']} vs {reference['name']}: {tensor} same format, "
                f"loss {b['loss']!r} vs {a['loss']!r}"
            )
    return same_formats, same_losses and same_formats, lines


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _background_jobs() -> list[str]:
    """Running model-training jobs (``pgrep -af train_zoo``): they make the timings noisy."""
    try:
        proc = subprocess.run(["pgrep", "-af", "train_zoo"], capture_output=True, text=True, check=False)
    except OSError:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# Rendering


def _cell(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def render_markdown(report: Mapping[str, Any]) -> str:
    """``docs/benchmarks.md`` from the report (every number comes from ``benchmarks.json``)."""
    s, m = report["settings"], report["machine"]
    v = report.get("versions", {})
    lines = [
        "# Search benchmark: evaluators side by side",
        "",
        "Written by `scripts/bench_search.py` from `benchmarks.json`; do not edit by hand.",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}",
        f"- Machine: {m['cpu_count']} CPU cores, {m['cpu_model']}; {m['platform']}",
        f"- Versions: Python {v.get('python', '?')}, TensorFlow {v.get('tensorflow', '?')}, "
        f"Keras {v.get('keras', '?')}, numpy {v.get('numpy', '?')}",
        f"- Load average (1, 5, 15 min) at start {_loads(m['load_average_start'])}, "
        f"at end {_loads(m.get('load_average_end', []))}",
    ]
    jobs = report["background_jobs"]
    lines.append(
        "- Background jobs: "
        + (
            "**a training job was running, so the timings are noisy**: " + "; ".join(f"`{j}`" for j in jobs)
            if jobs
            else "none (`pgrep -f train_zoo` found nothing)"
        )
    )
    lines += [
        f"- Model: `{s['model']}`; data: {s.get('data_source', s['data'])}; "
        f"{s.get('samples', '?')} search samples (stratified, seed {s['seed']})",
        f"- Search: {s['search']}, eps {s['eps']}; batch size {s['batch_size']}; "
        f"engine cache {s['cache_mb']} MB",
        "- Tensors searched: "
        + (
            f"the first {s['max_tensors']} of the plan ({', '.join(s.get('tensors_searched', []))}); "
            "the budgets (eq. 9) are planned over these alone"
            if s["max_tensors"] is not None
            else f"all {s.get('tensors_in_model', '?')}"
        ),
        "",
        "All evaluators ran in one invocation of the script, one after another; each in its own child "
        "process (the script re-invoked with `--only NAME --json FILE`), so each peak RSS is that "
        "evaluator's own. Wall time is the search alone (`opt_search`); setup (building the evaluator, "
        "and for `keras`/`engine` the float pass that orders the samples) is listed apart. The float pass "
        "is one traced forward pass of the float model over the search set, median of "
        f"{FLOAT_PASS_REPEATS} after a warm-up, timed in the same child after the search; full-pass "
        "equivalents = wall time / float pass. Evaluations are the search's (`outcome.evaluations`, the "
        "same for every evaluator when the decisions agree); data passes = samples actually run / search "
        "samples (early rejection makes it smaller).",
        "",
        "| evaluator | wall s | evaluations | float pass s | full-pass equivalents | peak RSS MB "
        "| speed-up vs naive | formats identical | setup s | data passes |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['status']}: {r.get('note', '')} | | | | | | | | |")
            continue
        identical = "yes" if r["formats_identical"] else "**NO**"
        if r["formats_identical"] and not r["losses_identical"]:
            identical += " (losses differ)"
        lines.append(
            f"| {r['name']} | {r['wall_s']:.1f} | {r['evaluations']} | {r['float_pass_s']:.3f} "
            f"| {r['full_pass_equivalents']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {_cell(r['speedup_vs_naive'], '.1f')} "
            f"| {identical} | {r['setup_s']:.1f} | {r['data_passes']:.1f} |"
        )
    lines += _engine_sections(report["results"])
    agreement = report["agreement"]
    lines += ["", "## Agreement", ""]
    if agreement["reference"] is None:
        lines.append("No evaluator finished.")
    else:
        lines.append(
            f"Reference: `{agreement['reference']}`. All decided formats identical across evaluators: "
            + ("yes." if agreement["all_formats_identical"] else "**NO**.")
        )
        if agreement["mismatches"]:
            lines += ["", *(f"- {line}" for line in agreement["mismatches"])]
        reference = next(r for r in report["results"] if r["name"] == agreement["reference"])
        lines += ["", "| tensor | (BW, F) | loss |", "|---|---|---:|"]
        lines += [
            f"| {d['tensor']} | ({d['bw']}, {d['f']}) | {d['loss']:.4%} |" for d in reference["decisions"]
        ]
    failed = [r for r in report["results"] if r["status"] == "failed"]
    for r in failed:
        lines += ["", f"`{r['name']}` failed ({r['note']}):", "", "```", r["error"], "```"]
    return "\n".join(lines).rstrip() + "\n"


def _engine_sections(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where each engine run's time went, and what each technique contributes (the ablations)."""
    engines = [r for r in results if r["status"] == "ok" and r.get("engine_seconds")]
    if not engines:
        return []
    lines = [
        "",
        "## Where the engine's time goes",
        "",
        "Seconds inside the engine: tracing the prefix and suffix functions of each cut (once per "
        "tensor), running the prefix to fill the cache (once per tensor), running candidates (the "
        "suffix, plus the prefix for batches beyond the cache); memo hits are evaluations answered "
        "without running anything.",
        "",
        "| evaluator | wall s | trace s | prefix s | candidates s | network runs | memo hits | data passes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in engines:
        sec = r["engine_seconds"]
        lines.append(
            f"| {r['name']} | {r['wall_s']:.1f} | {sec['trace']:.1f} | {sec['prefix']:.1f} "
            f"| {sec['suffix']:.1f} | {r['network_passes']} | {r['memo_hits']} | {r['data_passes']:.1f} |"
        )
    full = next((r for r in engines if r["name"] == "engine"), None)
    ablations = [r for r in engines if r["name"] != "engine"]
    if full and ablations:
        lines += [
            "",
            "## What each technique contributes",
            "",
            "Each ablation is the engine with one technique taken away; its cost over the full "
            "engine's is what that technique saves (one at a time, in the same invocation).",
            "",
            "| without | wall s | x engine | full-pass equivalents | formats identical |",
            "|---|---:|---:|---:|---|",
        ]
        what = {
            "engine-nomemo": "memo by quantized content",
            "engine-nocache": "prefix cache",
            "engine-noincremental": "incremental prefix (cut from the previous cut)",
            "engine-noreject": "early rejection (and the local-search bound)",
            "engine-nofragile": "fragile samples first",
            "engine-bigchunks": "small leading chunks",
        }
        for r in ablations:
            ratio = r["wall_s"] / full["wall_s"]
            lines.append(
                f"| {what.get(r['name'], r['name'])} | {r['wall_s']:.1f} | {ratio:.2f} "
                f"| {r['full_pass_equivalents']:.1f} | {'yes' if r['formats_identical'] else '**NO**'} |"
            )
    return lines


def _loads(values: Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values) or "?"


# --------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; ``--only``/``--json`` are what the parent passes to each child."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="Keras model (default: models/sequential_mnist.keras)")
    parser.add_argument("--branched", action="store_true", help="default model models/branched_mnist.keras")
    parser.add_argument(
        "--data", default="mnist", help="data spec for optsearch.data.load_data (default mnist)"
    )
    parser.add_argument("--data-dir", help="dataset folder (default: $OPTSEARCH_DATA or ../shared/datasets)")
    parser.add_argument(
        "--search-size", type=int, default=5000, help="stratified search-set size (default 5000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified pick (default 0)")
    parser.add_argument("--eps", type=float, default=0.01, help="relative loss budget (default 0.01)")
    parser.add_argument(
        "--evaluators",
        default=",".join(DEFAULT_EVALUATORS),
        help=f"comma-separated, from {', '.join(EVALUATORS)} (default: {','.join(DEFAULT_EVALUATORS)})",
    )
    parser.add_argument("--max-tensors", type=int, help="search only the first K tensors of the plan")
    parser.add_argument("--batch-size", type=int, default=500, help="evaluation batch size (default 500)")
    parser.add_argument(
        "--cache-mb", type=float, default=1024, help="engine prefix-cache budget (default 1024)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report; JSON beside it")
    parser.add_argument("--only", choices=EVALUATORS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.evaluators.split(",") if n.strip()]
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown or not names:
        parser.error(
            f"--evaluators: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(EVALUATORS)}"
        )
    args.evaluators = list(dict.fromkeys(names))
    if args.search_size < 1:
        parser.error(f"--search-size must be at least 1, got {args.search_size}")
    if args.max_tensors is not None and args.max_tensors < 1:
        parser.error(f"--max-tensors must be at least 1, got {args.max_tensors}")
    if args.model is None:
        args.model = BRANCHED_MODEL if args.branched else SEQUENTIAL_MODEL
    if not args.model.is_file():
        parser.error(f"model {args.model} not found; train it (scripts/train_zoo.py) or give --model PATH")
    if args.data_dir is None:
        args.data_dir = os.environ.get("OPTSEARCH_DATA") or str(DEFAULT_DATA_DIR)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.only is not None:
        if args.json is None:
            raise SystemExit("--only needs --json PATH")
        args.json.write_text(json.dumps(run_one(args), indent=2) + "\n")
        return 0
    report = run_all(args, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    args.out.write_text(markdown)
    print(markdown)
    print(f"[bench] wrote {args.out} and {json_path}", file=sys.stderr)
    for line in report["agreement"]["mismatches"]:
        print(line, file=sys.stderr)
    if any(r["status"] == "failed" for r in report["results"]):
        return 1
    return 0 if report["agreement"]["all_formats_identical"] else 2


if __name__ == "__main__":
    sys.exit(main())
