"""Benchmark: one forward pass of the quantized model under the settings an engine could change.

What the search pays per candidate is a forward pass (or its suffix), so this measures, side by
side in one invocation, the traced pass of the sequential MNIST zoo model over the same images:

- the float model, the quantized clone with every quantizer off, and with every tensor at 8 bits;
- with and without XLA (``jit_compile=True``), checking that XLA predicts the same classes;
- batch sizes 125 to 2000;
- TensorFlow thread settings (intra-op x inter-op threads), each in its own child process because
  they must be set before TensorFlow starts.

Writes ``docs/bench_forward.md`` (and ``.json``): median seconds of several passes, and each
variant's ratio to the default (quantized at 8 bits, batch 500, no XLA, default threads).

    python scripts/bench_forward.py
    python scripts/bench_forward.py --samples 2000 --repeats 3 --out /tmp/forward.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = REPO_ROOT / "models" / "sequential_mnist.keras"
DEFAULT_OUT = REPO_ROOT / "docs" / "bench_forward.md"
BATCH_SIZES = (125, 250, 500, 1000, 2000)
THREADS = ((0, 0), (1, 1), (2, 1), (1, 2), (2, 2))
"""(intra-op, inter-op) thread counts; 0 is TensorFlow's default (one per core)."""


def _median(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: tracing, allocation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Time the variants in this process (threads as given); return the medians."""
    import numpy as np
    import tensorflow as tf

    intra, inter = args.threads
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)

    from optsearch.data import Preprocess, load_data
    from optsearch.evaluators.keras import activation_ranges
    from optsearch.model.graph import quantized_model, uniform_formats
    from optsearch.model.loading import load_model

    model = load_model(MODEL)
    qmodel = quantized_model(model)
    data = load_data("mnist", args.data_dir)
    sub = data.subset(np.arange(args.samples), "")
    x = Preprocess()(sub.x)
    if x.ndim == 3:
        x = x[..., None]
    eight = uniform_formats(qmodel, 8, activation_ranges(qmodel, sub))
    quantized = qmodel.keras_model

    def traced(net: Any, xla: bool) -> Callable[[Any], Any]:
        return tf.function(lambda a: tf.argmax(net(a, training=False), axis=-1), jit_compile=xla)

    def timer(fn: Callable[[Any], Any], batch: int) -> float:
        parts = [x[i : i + batch] for i in range(0, len(x), batch)]
        return _median(lambda: [fn(p).numpy() for p in parts], args.repeats)

    out: dict[str, Any] = {"threads": [intra, inter]}
    plain, xla = traced(quantized, False), traced(quantized, True)
    qmodel.set_formats(eight)
    out["quantized"] = timer(plain, 500)
    if args.full:
        out["float"] = timer(traced(model, False), 500)
        qmodel.set_formats({})
        out["quantizers_off"] = timer(plain, 500)
        qmodel.set_formats(eight)
        out["quantized_xla"] = timer(xla, 500)
        same = np.concatenate([plain(x[i : i + 500]).numpy() for i in range(0, len(x), 500)])
        fused = np.concatenate([xla(x[i : i + 500]).numpy() for i in range(0, len(x), 500)])
        out["xla_same_classes"] = bool(np.array_equal(same, fused))
        out["batch"] = {str(b): timer(plain, b) for b in BATCH_SIZES}
    return out


def run_all(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """One child per thread setting (the default one also times every other variant)."""
    report: dict[str, Any] = {
        "command": "python scripts/bench_forward.py " + " ".join(argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_start": list(os.getloadavg()),
        "samples": args.samples,
        "repeats": args.repeats,
        "children": [],
    }
    for intra, inter in THREADS:
        command = [sys.executable, __file__, *argv, "--child", "--threads", str(intra), str(inter)]
        if (intra, inter) == (0, 0):
            command.append("--full")
        print(f"[bench_forward] threads {intra}x{inter} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"child failed ({intra}x{inter}):\n{proc.stderr[-3000:]}")
        report["children"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report["load_average_end"] = list(os.getloadavg())
    return report


def render(report: dict[str, Any]) -> str:
    base = report["children"][0]
    ref = base["quantized"]

    def row(label: str, seconds: float) -> str:
        return f"| {label} | {seconds:.3f} | {seconds / ref:.2f} |"

    lines = [
        "# Forward-pass benchmark: what an engine setting would change",
        "",
        "Written by `scripts/bench_forward.py`; do not edit by hand.",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; {report['cpu_count']} CPU cores; {report['platform']}",
        f"- Load average at start {', '.join(f'{v:.2f}' for v in report['load_average_start'])}, at end "
        f"{', '.join(f'{v:.2f}' for v in report['load_average_end'])}",
        f"- Sequential MNIST zoo model, {report['samples']} MNIST test images, median of "
        f"{report['repeats']} traced passes after a warm-up; ratio = seconds / the default's",
        "",
        "| variant | seconds | ratio |",
        "|---|---:|---:|",
        row("default: quantized (every tensor 8 bits), batch 500, no XLA, default threads", ref),
        row("float model (no quantizers)", base["float"]),
        row("quantized clone, every quantizer off", base["quantizers_off"]),
        row(
            "XLA (`jit_compile=True`), "
            + ("same classes" if base["xla_same_classes"] else "**classes differ**"),
            base["quantized_xla"],
        ),
    ]
    lines += [row(f"batch {b}", s) for b, s in base["batch"].items()]
    for c in report["children"][1:]:
        intra, inter = c["threads"]
        lines.append(row(f"threads: {intra} intra-op x {inter} inter-op", c["quantized"]))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="test images per pass (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per variant (default 5)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("OPTSEARCH_DATA") or str(REPO_ROOT.parent / "shared" / "datasets"),
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, nargs=2, default=(0, 0), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    report = run_all(args, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    args.out.write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
