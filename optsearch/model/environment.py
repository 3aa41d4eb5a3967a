"""The TensorFlow runtime optsearch runs on: quiet start-up, and the versions that decide the numbers."""

from __future__ import annotations

import os
import platform
import sys

#: CPU instruction-set extensions that change which kernels TensorFlow and oneDNN run.
_SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
)


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up chatter (absl, oneDNN notices) sent to /dev/null."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                import keras  # noqa: F401
                import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    import tensorflow

    # One traced function per searched tensor is by design: no "retracing" notices.
    tensorflow.get_logger().setLevel("ERROR")


def versions() -> dict[str, str]:
    """Versions that decide the numbers (recorded in formats.json; see docs/robustness.md)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from optsearch import __version__

    return {
        "optsearch": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_flags": cpu_flags(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


def cpu_flags() -> str:
    """The SIMD extensions of this CPU that TensorFlow may use (from /proc/cpuinfo; "unknown" elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith(("flags", "Features")):
                    present = set(line.partition(":")[2].split())
                    return " ".join(f for f in _SIMD_FLAGS if f in present) or "none"
    except OSError:
        pass
    return "unknown"
