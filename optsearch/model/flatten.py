"""Models used as layers, inlined: one flat functional model with the same layers and weights.

Transfer learning nests models (``Sequential([MobileNetV2(include_top=False), GAP, Dense])``,
``head(backbone(x))``), and Keras 2 files of every era hold such configs. optsearch gives every
layer its own formats, so it reads the network as one graph: every layer of an inner model is
cloned (``from_config``, the same weights) and called where the inner model was called. The flat
model computes the same function; its layer names are the inner layers' own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import keras

from optsearch.core.errors import ModelError
from optsearch.model.graph import set_layer_weights


def is_nested(model: keras.Model) -> bool:
    """Whether any layer of ``model`` is itself a model."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten_nested(model: keras.Model) -> keras.Model:
    """``model`` with every nested model inlined (recursively); ``model`` itself when none is.

    Refused in one line: a nested model called more than once (its layers would be shared between
    the calls), and names that repeat once inlined (an inner layer named like an outer one).
    """
    if not is_nested(model):
        return model
    calls: Counter[str] = Counter()
    inputs = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name.split(":")[0])
        for t in model.inputs
    ]
    given = inputs if len(inputs) > 1 else inputs[0]
    outputs = _call_inlined(model, given, calls)
    shared = sorted(name for name, count in calls.items() if count > 1)
    if shared:
        raise ModelError(
            f"nested model '{shared[0]}' is called {calls[shared[0]]} times; its layers would be "
            "shared between the calls and cannot have one format per call: give each call its own model"
        )
    names = Counter(layer.name for layer in _leaf_layers(model))
    repeated = sorted(name for name, count in names.items() if count > 1)
    if repeated:
        raise ModelError(
            f"layer name '{repeated[0]}' appears {names[repeated[0]]} times once the nested models are "
            "inlined (an inner model's layer named like another layer): rename one of them"
        )
    return keras.Model(given, outputs, name=model.name)


def _leaf_layers(model: keras.Model) -> list[Any]:
    """Every non-model layer of ``model`` and of the models nested in it."""
    out: list[Any] = []
    for layer in model.layers:
        out.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


def _call_inlined(model: keras.Model, inputs: Any, calls: Counter[str]) -> Any:
    """``model(inputs)`` with every layer a fresh clone called on the symbolic ``inputs``."""
    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = _operation(layer, calls)(x)
        return x
    return model._run_through_graph(inputs, operation_fn=lambda op: _operation(op, calls))


def _operation(op: Any, calls: Counter[str]) -> Callable[..., Any]:
    """What to call in ``op``'s place: the inlined model, a clone of the layer, or ``op`` itself (a
    keras.ops operation, which holds no weights)."""
    if isinstance(op, keras.Model):
        calls[op.name] += 1

        def inlined(*args: Any, **kwargs: Any) -> Any:  # ``training=False`` and the like: inference
            return _call_inlined(op, args[0], calls)

        return inlined
    if not isinstance(op, keras.layers.Layer):
        return op
    clone = type(op).from_config(op.get_config())

    def cloned(*args: Any, **kwargs: Any) -> Any:
        out = clone(*args, **kwargs)
        set_layer_weights(clone, op.get_weights())
        return out

    return cloned


__all__ = ["flatten_nested", "is_nested"]
