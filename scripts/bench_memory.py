"""Peak memory of ``optsearch run`` against the size of the evaluation set (docs/bench_memory.md).

Synthetic CIFAR-shaped data (random uint8 32x32x3 images, labelled by a small untrained CNN's own
predictions so the float model is right on them) at several sizes, each searched by
``optsearch run`` in a child process whose peak RSS is read with ``os.wait4``. The samples stay
uint8 and become float32 one batch at a time, so memory grows with the uint8 size of the set (plus
the evaluation cache, bounded by ``--cache-mb``), never with a float copy of it.

    .venv/bin/python scripts/bench_memory.py                 # 5k, 20k, 50k images; 50k without cache
    .venv/bin/python scripts/bench_memory.py --sizes 50000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def make_model(path: Path) -> None:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            L.Rescaling(1 / 255, name="scale"),
            L.Conv2D(8, 3, strides=2, activation="relu", name="c1"),
            L.MaxPooling2D(4, name="pool"),
            L.Flatten(name="flat"),
            L.Dense(10, activation="softmax", name="out"),
        ]
    )
    model.save(path)


def make_data(model_path: Path, n: int, path: Path) -> None:
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    x = np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.concatenate(
        [np.argmax(model(x[i : i + 5000].astype(np.float32)), axis=1) for i in range(0, n, 5000)]
    )
    y[::20] = (y[::20] + 1) % 10  # 5% wrong, as a trained model would be
    np.savez(path, x=x, y=y)


def measure(command: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit code) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - started, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--eps", type=float, default=0.05)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        model = root / "model.keras"
        make_model(model)
        runs = [(n, None) for n in args.sizes] + [(max(args.sizes), 0.0)]
        for n, cache_mb in runs:
            data = root / f"data{n}.npz"
            if not data.exists():
                make_data(model, n, data)
            out = root / f"out{n}-{cache_mb}"
            command = [sys.executable, "-m", "optsearch", "run", str(model), "--data", str(data)]
            command += ["--eps", str(args.eps), "--out", str(out)]
            if cache_mb is not None:
                command += ["--cache-mb", str(cache_mb)]
            peak, seconds, code = measure(command)
            uint8_mib = n * 32 * 32 * 3 / 2**20
            rows.append((n, cache_mb, uint8_mib, 4 * uint8_mib, peak, seconds, code))
            cache = "default" if cache_mb is None else cache_mb
            print(
                f"{n:>6} images, cache {cache}: uint8 {uint8_mib:.0f} MiB "
                f"(float32 {4 * uint8_mib:.0f} MiB), peak RSS {peak:.0f} MiB, {seconds:.0f} s, exit {code}",
                flush=True,
            )
    print()
    print("| images | --cache-mb | set as uint8 (MiB) | as float32 (MiB) | peak RSS (MiB) | seconds |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, cache_mb, uint8_mib, float_mib, peak, seconds, code in rows:
        cache = "1024 (default)" if cache_mb is None else f"{cache_mb:g}"
        status = "" if code == 0 else f" (exit {code})"
        print(f"| {n:,} | {cache} | {uint8_mib:.0f} | {float_mib:.0f} | {peak:.0f}{status} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
