"""optsearch: per-layer fixed-point formats for trained Keras CNNs without retraining (OptSearchCNN).

The public API, imported lazily so that ``import optsearch`` stays light (TensorFlow loads only when
a function needs it)::

    import optsearch
    result = optsearch.search("model.keras", "mnist", eps=0.01, out="runs/mnist")
    result.formats, result.costs, result.accuracy
    optsearch.export("runs/mnist", "hls4ml", "runs/mnist/export/hls4ml")

See docs/architecture.md for the layers behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "search": "optsearch.api",
    "pareto": "optsearch.api",
    "evaluate": "optsearch.api",
    "load_result": "optsearch.api",
    "export": "optsearch.api",
    "verify": "optsearch.api",
    "save": "optsearch.api",
    "make_settings": "optsearch.api",
    "Format": "optsearch.core.fixedpoint",
    "TensorId": "optsearch.core.tensors",
    "OptsearchError": "optsearch.core.errors",
    "RunSettings": "optsearch.settings",
    "DataSettings": "optsearch.settings",
    "RunResult": "optsearch.results.result",
}

__all__ = [
    "DataSettings",
    "Format",
    "OptsearchError",
    "RunResult",
    "RunSettings",
    "TensorId",
    "__version__",
    "evaluate",
    "export",
    "load_result",
    "make_settings",
    "pareto",
    "save",
    "search",
    "verify",
]

if TYPE_CHECKING:
    from optsearch.api import evaluate, export, load_result, make_settings, pareto, save, search, verify
    from optsearch.core.errors import OptsearchError
    from optsearch.core.fixedpoint import Format
    from optsearch.core.tensors import TensorId
    from optsearch.results.result import RunResult
    from optsearch.settings import DataSettings, RunSettings


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optsearch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
