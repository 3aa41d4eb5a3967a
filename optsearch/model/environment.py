"""The TensorFlow runtime optsearch runs on: the Keras backend guard, quiet start-up, and the versions
that decide the numbers.

optsearch's engine is TensorFlow code (traced functions, ``tf.where``), so Keras must run on its
TensorFlow backend. The command line sets ``KERAS_BACKEND=tensorflow`` before Keras is imported and
says so once when that overrides another choice; the Python API refuses another backend in one line.
"""

from __future__ import annotations

import json
import os
import platform
import sys

from optsearch.core.errors import OptsearchError

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


BACKEND_VARIABLE = "KERAS_BACKEND"
BACKEND = "tensorflow"


def configured_backend() -> str:
    """The backend Keras will use: ``$KERAS_BACKEND``, else ``keras.json``'s, else TensorFlow."""
    chosen = os.environ.get(BACKEND_VARIABLE, "").strip()
    if chosen:
        return chosen
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as stream:
            value = json.load(stream).get("backend")
    except (OSError, ValueError, AttributeError):
        return BACKEND
    return str(value) if value else BACKEND


def use_tensorflow_backend() -> str | None:
    """For the command line, before Keras is imported: run on TensorFlow whatever the environment
    says. Returns the one-line note to print when that overrides another choice, else None."""
    chosen = configured_backend()
    where = (
        f"{BACKEND_VARIABLE}={chosen}"
        if os.environ.get(BACKEND_VARIABLE, "").strip()
        else f"the backend {chosen!r} of keras.json"
    )
    os.environ[BACKEND_VARIABLE] = BACKEND
    if chosen == BACKEND:
        return None
    return f"note: optsearch runs on Keras' TensorFlow backend; {where} is overridden for this command"


def require_tensorflow_backend() -> None:
    """For the Python API: an ``OptsearchError`` when Keras runs (or will run) on another backend."""
    keras = sys.modules.get("keras")
    backend = keras.backend.backend() if keras is not None else configured_backend()
    if backend != BACKEND:
        raise OptsearchError(
            f"optsearch needs Keras' TensorFlow backend, but Keras runs on {backend!r} "
            f"({BACKEND_VARIABLE}={os.environ.get(BACKEND_VARIABLE) or backend}); set "
            f"{BACKEND_VARIABLE}=tensorflow before Keras is first imported (a new Python process)"
        )


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up chatter (absl, oneDNN notices) sent to /dev/null, after
    checking that Keras runs on it (``require_tensorflow_backend``)."""
    require_tensorflow_backend()
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
