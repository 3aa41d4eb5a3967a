"""Folding BatchNorm into quantizable layers before the search (``--fold-bn``): the model the
formats then belong to has no float work left between them (docs/algorithm.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from optsearch.core.tensors import FOLD_MODES, FoldMode
from optsearch.model.graph import (
    INFERENCE_IDENTITY_CLASSES,
    QUANTIZABLE_CLASSES,
    ModelGraph,
    activation_name,
    as_functional,
    set_layer_weights,
)

#: Layers a per-channel affine map passes through unchanged (identity at inference, or a reshape).
_FOLD_PASS = (*INFERENCE_IDENTITY_CLASSES, "Flatten")
#: Pooling commutes with x -> a x + c: averages always, maxima when every a >= 0.
_FOLD_AVERAGE = (
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
)
_FOLD_MAX = (
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
)


@dataclass(frozen=True)
class Fold:
    """What happened to one BatchNormalization layer under ``--fold-bn``."""

    batchnorm: str
    into: tuple[str, ...]
    """The layers that absorbed it (empty: kept in float)."""
    how: str
    """``backward`` (into the layer before it), ``forward`` (into the layers after it) or ``kept``."""
    exact: bool
    """The folded network computes the same function (up to float rounding)."""
    note: str


def _bn_affine(bn: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(a, c)`` with ``BN(x) = a * x + c`` per channel, in float64 (inference statistics)."""
    a = 1.0 / np.sqrt(np.asarray(bn.moving_variance.numpy(), np.float64) + bn.epsilon)
    if bn.scale:
        a = a * np.asarray(bn.gamma.numpy(), np.float64)
    c = -np.asarray(bn.moving_mean.numpy(), np.float64) * a
    if bn.center:
        c = c + np.asarray(bn.beta.numpy(), np.float64)
    return a, c


def _is_last_axis(bn: Any, rank: int) -> bool:
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    return axis is not None and axis in (-1, rank - 1)


def _fold_plan(graph: ModelGraph, mode: str) -> list[Fold]:
    """Decide, for every BatchNorm of ``graph``, where it folds (spec: an integer-only network)."""
    plans: list[Fold] = []
    for layer in graph.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        name = layer.name
        if not _is_last_axis(layer, len(graph.output_shape(name))):
            plans.append(Fold(name, (), "kept", True, "normalises an axis other than the channels"))
            continue
        producer = graph.by_name[graph.producers[name][0]]
        own = activation_name(getattr(producer, "activation", None))
        if (
            type(producer).__name__ in QUANTIZABLE_CLASSES
            and own in (None, "linear")
            and graph.consumers[producer.name] == [name]
            and producer.name != graph.output_layer
        ):
            plans.append(Fold(name, (producer.name,), "backward", True, "scale and shift into its output"))
            continue
        a, _ = _bn_affine(layer)
        targets, why, exact = _forward_targets(graph, name, bool(np.all(a >= 0)), mode)
        if targets:
            plans.append(Fold(name, targets, "forward", exact, why))
        else:
            plans.append(Fold(name, (), "kept", True, why))
    return plans


def _forward_targets(
    graph: ModelGraph, bn: str, positive: bool, mode: str
) -> tuple[tuple[str, ...], str, bool]:
    """The quantizable layers BN's output reaches through layers it commutes with, or () and why not."""
    targets: list[str] = []
    exact = True
    stack = [bn]
    while stack:
        current = stack.pop()
        if current == graph.output_layer:
            return (), "its output is the model's output", True
        for name in graph.consumers[current]:
            layer = graph.by_name[name]
            kind = type(layer).__name__
            if kind in _FOLD_PASS or kind in _FOLD_AVERAGE or (kind in _FOLD_MAX and positive):
                if len(graph.producers[name]) != 1:
                    return (), f"'{name}' has several inputs", True
                stack.append(name)
            elif kind in _FOLD_MAX:
                return (), f"'{name}' takes maxima and a scale of '{bn}' is negative", True
            elif kind in ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D"):
                if len(graph.producers[name]) != 1 or getattr(layer, "groups", 1) != 1:
                    return (), f"'{name}' ({kind}) has several inputs or groups", True
                if getattr(layer, "padding", "valid") != "valid":
                    if mode != "all":
                        return (
                            (),
                            (
                                f"'{name}' pads its input with zeros: folding would change its "
                                "border outputs (--fold-bn all folds anyway)"
                            ),
                            True,
                        )
                    exact = False
                targets.append(name)
            else:
                return (), f"'{name}' ({kind}) does not commute with a per-channel scale and shift", True
    why = "scale into the inputs, shift into the biases of the layers after it"
    if not exact:
        why += "; borders of zero-padded layers change"
    return tuple(sorted(set(targets))), why, exact


def fold_batchnorm(model: keras.Model, mode: FoldMode = "exact") -> tuple[keras.Model, list[Fold]]:
    """``model`` with its BatchNorm layers folded into quantizable layers, where they can be.

    Backward, into the layer that produces BN's input when nothing non-linear lies between
    (``W' = a W``, ``b' = a b + c``, per output channel); else forward, into every quantizable
    layer its output reaches through dropout, flatten and pooling (``W' = W a`` per input channel,
    ``b' = b + sum W c``). ``exact`` folds only what computes the same function; ``all`` also folds
    into zero-padded layers, whose border outputs then change. The rest stays in float, listed with
    the reason. Afterwards the activations flow from quantizer to quantizable layer without float
    work wherever a BN was folded (the paper's order, Conv(relu) -> quantizer -> BN, otherwise
    leaves a float BN in the hardware).
    """
    if mode not in FOLD_MODES or mode == "off":
        return model, []
    functional = as_functional(model)
    graph = ModelGraph(functional)
    plans = _fold_plan(graph, mode)
    folded = {p.batchnorm: p for p in plans if p.into}
    gains_bias = {t for p in folded.values() for t in p.into if not graph.by_name[t].use_bias}

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name in gains_bias:
            config["use_bias"] = True
        return type(layer).from_config(config)

    def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
        return args[0] if layer.name in folded else layer(*args, **kwargs)

    cloned = keras.models.clone_model(functional, clone_function=clone_layer, call_function=call_layer)
    new = keras.Model(cloned.inputs[0], cloned.outputs[0], name=model.name)
    weights = {
        layer.name: [np.asarray(w.numpy(), np.float64) for w in layer.weights]
        for layer in functional.layers
        if layer.weights and layer.name not in folded
    }
    for name in gains_bias:
        kernel_count = len(weights[name])
        out_channels = graph.output_shape(name)[-1]
        weights[name] = [*weights[name][:kernel_count], np.zeros(int(out_channels or 0), np.float64)]
    # Forward folds first (they act on a layer's input side), then backward ones (its output side).
    for plan in sorted(folded.values(), key=lambda p: p.how != "forward"):
        a, c = _bn_affine(graph.by_name[plan.batchnorm])
        for target in plan.into:
            layer = graph.by_name[target]
            if plan.how == "forward":
                weights[target] = _fold_input(layer, weights[target], a, c)
            else:
                weights[target] = _fold_output(layer, weights[target], a, c)
    for name, values in weights.items():
        target = new.get_layer(name)
        set_layer_weights(
            target, [v.astype(w.dtype) for v, w in zip(values, target.get_weights(), strict=True)]
        )
    return new, plans


def _fold_output(layer: Any, values: list[np.ndarray], a: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    """``a * layer(x) + c``: scale every output channel's kernel and bias (backward fold)."""
    kind = type(layer).__name__
    *kernels, bias = values
    if kind.startswith("Depthwise"):
        kernel = kernels[0]
        scaled = kernel * a.reshape(kernel.shape[-2], kernel.shape[-1])
        return [scaled, bias * a + c]
    if kind.startswith("Separable"):
        depthwise, pointwise = kernels
        return [depthwise, pointwise * a, bias * a + c]
    return [kernels[0] * a, bias * a + c]


def _fold_input(layer: Any, values: list[np.ndarray], a: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    """``layer(a * x + c)`` as one layer: the kernel scaled per input channel, the bias shifted."""
    kind = type(layer).__name__
    kernel, bias = values
    if kind == "Dense":
        rows = kernel.shape[0]
        channel = np.arange(rows) % len(a)  # a Flatten before it: channels last, so index mod C
        return [kernel * a[channel][:, None], bias + c[channel] @ kernel]
    if kind.startswith("Depthwise"):
        scaled = kernel * a[:, None]
        shift = (kernel * c[:, None]).sum(axis=tuple(range(kernel.ndim - 2))).reshape(-1)
        return [scaled, bias + shift]
    scaled = kernel * a[:, None]
    shift = (kernel * c[:, None]).sum(axis=tuple(range(kernel.ndim - 1)))
    return [scaled, bias + shift]
