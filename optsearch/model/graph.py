"""The one module that reads and rewrites Keras graphs (spec §3).

It finds the quantizable layers of a Sequential or functional model, locates each layer's
activation tensor, and builds the quantized model: a clone with a ``FixedPointQuantizer`` at
every activation point and weights/biases that can be swapped for quantized copies in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from optsearch.core.errors import ModelError
from optsearch.core.fixedpoint import (
    DEFAULT_MODE,
    Format,
    OffsetRule,
    QuantizerMode,
    largest_magnitude,
    quantize,
    start_format,
)
from optsearch.core.tensors import (
    ACTIVATION_POINTS,
    ActivationPoint,
    TensorId,
    TensorKind,
)
from optsearch.model.quantizer_layer import FixedPointQuantizer

#: Layers whose weights, biases and activations the search quantizes (spec §3).
QUANTIZABLE_CLASSES = (
    "Dense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)
#: Activation layers: the activation tensor of a layer is taken right after the first one of these.
ACTIVATION_CLASSES = ("ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Activation")
#: Layers that are the identity at inference.
INFERENCE_IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "Identity",
)
#: Single-input element-wise layers (at inference) that the search looks through for an activation.
ELEMENTWISE_CLASSES = ("BatchNormalization", *INFERENCE_IDENTITY_CLASSES)
#: Layers with weights that stay in float, as in the paper (spec §3).
FLOAT_WEIGHT_CLASSES = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "Normalization",
    "PReLU",
)
QUANTIZER_SUFFIX = "_act_quant"
SOFTMAX_SUFFIX = "_softmax"


@dataclass(frozen=True)
class QuantizableLayer:
    """A layer ``l`` with weights, its tensors ``W_l``, ``B_l``, ``A_l`` and the sizes the costs need."""

    index: int
    """Position ``l`` in 1..L (the order of ``model.layers``)."""
    name: str
    class_name: str
    activation_at: str
    """Name of the layer whose output is ``A_l`` (the layer itself, or an activation layer after it)."""
    split_softmax: bool
    """True when the layer has a built-in softmax: it is split so that ``A_l`` are the logits."""
    kernel_names: tuple[str, ...]
    has_bias: bool
    weight_count: int
    bias_count: int
    activation_count: int
    """Values of ``A_l`` per sample."""
    macs: int
    """Multiply-accumulates per sample."""
    input_sources: tuple[str, ...]
    """Quantizable layers whose ``A`` feeds this layer's input (empty: the network input)."""

    def tensors(self) -> tuple[TensorId, ...]:
        """``W_l``, ``B_l`` (if the layer uses a bias) and ``A_l``."""
        kinds: tuple[TensorKind, ...] = ("W", "B", "A") if self.has_bias else ("W", "A")
        return tuple(TensorId(self.name, kind) for kind in kinds)

    def value_count(self, kind: TensorKind) -> int:
        """``n(p_l)``: values of one tensor (activations: per sample), for the memory cost (eq. 7)."""
        return {"W": self.weight_count, "B": self.bias_count, "A": self.activation_count}[kind]


def as_functional(model: keras.Model) -> keras.Model:
    """A functional view of ``model`` that shares its layers (Sequential models are wrapped)."""
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError) as err:
            raise ModelError(
                f"model '{model.name}' has no input shape (it was never built); "
                "save it after building it with an Input layer"
            ) from err
        return keras.Model(inputs[0], outputs[0], name=model.name)
    if not hasattr(model, "_operations") or not getattr(model, "_is_graph_network", True):
        raise ModelError(
            f"model '{model.name}' ({type(model).__name__}) is a subclassed model with no layer graph; "
            "rebuild it as a Sequential or functional model"
        )
    return model


def find_quantizable_layers(
    model: keras.Model, activation_point: ActivationPoint = "activation"
) -> list[QuantizableLayer]:
    """The layers 1..L to quantize, in ``model.layers`` order, with their activation points (spec §3).

    ``activation_point="activation"``: ``A_l`` is taken after the layer's own activation, or after the
    first activation layer reached through single-input element-wise layers, or at the layer's own
    output when there is none. ``"chain_end"``: at the end of that element-wise chain instead.
    Softmax is never quantized: the logits before it are.
    """
    if activation_point not in ACTIVATION_POINTS:
        raise ValueError(f"activation_point must be one of {ACTIVATION_POINTS}, got {activation_point!r}")
    graph = ModelGraph(as_functional(model))
    found: list[QuantizableLayer] = []
    for layer in graph.layers:
        class_name = type(layer).__name__
        if class_name not in QUANTIZABLE_CLASSES:
            continue
        at, split = graph.activation_point(layer, activation_point)
        kernels = [w for w in layer.weights if w.name.endswith("kernel")]
        bias = getattr(layer, "bias", None) if getattr(layer, "use_bias", False) else None
        found.append(
            QuantizableLayer(
                index=len(found) + 1,
                name=layer.name,
                class_name=class_name,
                activation_at=at,
                split_softmax=split,
                kernel_names=tuple(w.name for w in kernels),
                has_bias=bias is not None,
                weight_count=sum(int(np.prod(w.shape)) for w in kernels),
                bias_count=int(np.prod(bias.shape)) if bias is not None else 0,
                activation_count=per_sample(graph.output_shape(at)),
                macs=_macs(layer, graph.output_shape(layer.name)),
                input_sources=(),
            )
        )
    if not found:
        raise ModelError(
            f"model '{model.name}' has no layer optsearch can quantize; "
            f"supported layers: {', '.join(QUANTIZABLE_CLASSES)}"
        )
    points = {q.activation_at: q.name for q in found}
    return [
        QuantizableLayer(**{**q.__dict__, "input_sources": graph.input_sources(q.name, points)})
        for q in found
    ]


def graph_nodes(model: keras.Model) -> list[Any]:
    """The call nodes of ``model``'s own graph, shallowest first: the one walk every reader of a
    Keras graph uses (a layer's ``_inbound_nodes`` would also hold calls made outside this graph)."""
    return [node for depth in sorted(model._nodes_by_depth) for node in model._nodes_by_depth[depth]]


class ModelGraph:
    """Producers and consumers of every layer of a functional model, read from its own nodes.

    A layer's ``_inbound_nodes`` also hold calls made outside this graph (a reloaded Sequential
    keeps one per build), so uses are counted on the model's node list, not on the layer.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(
                f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                "optsearch supports one image input and one class-score output"
            )
        nodes = graph_nodes(model)
        uses: dict[str, int] = {}
        self.node_of: dict[str, Any] = {}
        for node in nodes:
            uses[node.operation.name] = uses.get(node.operation.name, 0) + 1
            self.node_of[node.operation.name] = node
        self.layers = [op for op in model.operations if not isinstance(op, keras.layers.InputLayer)]
        self.by_name = {layer.name: layer for layer in model.operations}
        self.consumers: dict[str, list[str]] = {name: [] for name in self.by_name}
        self.producers: dict[str, list[str]] = {name: [] for name in self.by_name}
        for layer in self.layers:
            self._check_supported(layer, uses.get(layer.name, 0))
            for tensor in self.node_of[layer.name].input_tensors:
                producer = tensor._keras_history.operation.name
                self.consumers[producer].append(layer.name)
                self.producers[layer.name].append(producer)
        self.output_layer = model.outputs[0]._keras_history.operation.name

    def _check_supported(self, layer: Any, uses: int) -> None:
        class_name = type(layer).__name__
        if not isinstance(layer, keras.layers.Layer):
            raise ModelError(
                f"'{layer.name}' is a keras.ops operation ({class_name}), not a layer (e.g. the `x + 3` "
                "of a hard-swish written with keras.ops); optsearch reads networks built from layers: "
                "rebuild that part with layers (keras.layers.Add, Rescaling, Activation, ...)"
            )
        if isinstance(layer, keras.Model):
            raise ModelError(
                f"layer '{layer.name}' is a nested model ({class_name}); optsearch needs a flat model: "
                "pass it through optsearch.model.flatten.flatten_nested (model files are flattened "
                "when they are loaded)"
            )
        if uses > 1:
            raise ModelError(
                f"layer '{layer.name}' ({class_name}) is shared (called {uses} times); "
                "a shared layer cannot have one format per use: give each use its own layer"
            )
        if layer.weights and class_name not in QUANTIZABLE_CLASSES + FLOAT_WEIGHT_CLASSES:
            raise ModelError(
                f"layer '{layer.name}' ({class_name}) has weights optsearch cannot quantize; "
                f"supported layers with weights: {', '.join(QUANTIZABLE_CLASSES + FLOAT_WEIGHT_CLASSES)}"
            )

    def output_shape(self, name: str) -> tuple[int | None, ...]:
        """The output shape of layer ``name`` in this graph (batch axis first)."""
        return tuple(self.node_of[name].output_tensors[0].shape)

    def _single_consumer(self, name: str) -> Any | None:
        """The one layer that consumes ``name``'s output, or None at a fork, a merge input or the end."""
        if name == self.output_layer or len(self.consumers[name]) != 1:
            return None
        return self.by_name[self.consumers[name][0]]

    def activation_point(self, layer: Any, mode: ActivationPoint) -> tuple[str, bool]:
        """(name of the layer whose output is ``A_l``, whether ``layer``'s own softmax must be split)."""
        own = activation_name(getattr(layer, "activation", None))
        if own == "softmax":
            return layer.name, True
        if own not in (None, "linear"):
            return layer.name, False
        current = layer
        while (nxt := self._single_consumer(current.name)) is not None:
            class_name = type(nxt).__name__
            if class_name in ACTIVATION_CLASSES:
                kind = activation_name(nxt.activation) if class_name == "Activation" else class_name.lower()
                if kind == "softmax":
                    break
                if kind != "linear":
                    return nxt.name, False
            elif class_name not in ELEMENTWISE_CLASSES:
                break
            current = nxt
        return (current.name if mode == "chain_end" else layer.name), False

    def input_sources(self, name: str, points: Mapping[str, str]) -> tuple[str, ...]:
        """The quantizable layers whose activation points feed ``name`` through float-only layers."""
        sources: list[str] = []
        stack = list(self.producers[name])
        seen: set[str] = set()
        while stack:
            producer = stack.pop()
            if producer in seen:
                continue
            seen.add(producer)
            if producer in points:
                sources.append(points[producer])
            else:
                stack.extend(self.producers[producer])
        return tuple(sorted(set(sources)))


def activation_name(fn: Any) -> str | None:
    """The registered name of a Keras activation function, or None when there is none."""
    if fn is None:
        return None
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return getattr(fn, "__name__", "custom")
    if isinstance(name, dict):
        return str(name.get("config", name.get("class_name", "custom")))
    return str(name)


def set_layer_weights(layer: Any, values: Sequence[Any]) -> None:
    """``layer.set_weights(values)``, then let the layer rebuild what it derives from its variables.

    An adapted Normalization computes with tensors derived from its mean and variance variables
    (``finalize_state``); ``set_weights`` alone leaves them at mean 0, variance 1. The variables are
    passed once more through ``load_own_variables``, the hook Keras' own loading calls, which such
    layers override to finish their state (and which, unlike ``finalize_state``, never re-adapts).
    """
    layer.set_weights(values)
    store: dict[str, Any] = {}
    layer.save_own_variables(store)
    if store:
        layer.load_own_variables({key: keras.ops.convert_to_numpy(value) for key, value in store.items()})


def part_model(inputs: Sequence[Any], outputs: Any, name: str) -> keras.Model:
    """``keras.Model(inputs, outputs)`` for a part of a model that leaves the model savable.

    When some of ``inputs`` are intermediate tensors, Keras 3 rebuilds the part with new nodes on the
    shared layers, and the network input among them is re-registered on a new node of its
    InputLayer: its ``_keras_history`` then names a node the whole model does not hold, and saving it
    fails ("could not find node key ..._ib-N"). This happens when the input feeds two or more layers
    and a cut holds it with a branch's tensor; the input tensors get their history back here.
    """
    histories = [(tensor, tensor._keras_history) for tensor in inputs]
    model = keras.Model(list(inputs), outputs, name=name)
    for tensor, history in histories:
        tensor._keras_history = history
    return model


def per_sample(shape: Sequence[int | None]) -> int:
    return int(np.prod([d for d in shape[1:] if d is not None]))


def _macs(layer: Any, out: tuple[int | None, ...]) -> int:
    """Multiply-accumulates per sample of a quantizable layer with output shape ``out``."""
    cls = type(layer).__name__
    if cls == "Dense":
        return int(layer.kernel.shape[0]) * per_sample(out)
    positions = per_sample(out[:-1])
    if cls.startswith("Separable"):
        depthwise = int(np.prod(layer.depthwise_kernel.shape))
        pointwise = int(np.prod(layer.pointwise_kernel.shape))
        return positions * (depthwise + pointwise)
    # Conv (kernel already holds in_channels / groups) and DepthwiseConv: each kernel value is
    # used once per output position.
    return positions * int(np.prod(layer.kernel.shape))


@dataclass(frozen=True)
class Segment:
    """The network between two cuts (``QuantizedModel.segment``).

    ``model`` maps the sources at ``inputs`` (indices into the first cut) to the tensors of the
    second cut that it computes (None when it computes none); ``picks`` gives, per tensor of the
    second cut, ``("source", i)`` (passed through from the first cut) or ``("computed", j)``.
    """

    model: keras.Model | None
    inputs: tuple[int, ...]
    picks: tuple[tuple[str, int], ...]
    sources: int


class QuantizedModel:
    """A clone of a float model with an activation quantizer at every ``A_l``, formats set in place.

    ``set_formats`` quantizes exactly the tensors it is given and leaves every other tensor in float
    (Alg. 1: independent and dependent evaluation differ only in the mapping passed). Nothing is
    rebuilt or retraced when formats change: weights are assigned and quantizer variables updated.

    ``mode`` (fixed for the model: it picks the traced ops) is how every tensor rounds and overflows;
    ``DEFAULT_MODE``, the paper's quantizer, is what the search uses.
    """

    def __init__(
        self, model: keras.Model, layers: Sequence[QuantizableLayer], mode: QuantizerMode = DEFAULT_MODE
    ) -> None:
        functional = as_functional(model)
        self.layers: tuple[QuantizableLayer, ...] = tuple(layers)
        self.mode = mode
        self.float_model = model
        names = {layer.name for layer in functional.operations}
        split = {q.name for q in self.layers if q.split_softmax}
        quantizer_at = {q.activation_at: q.name for q in self.layers}
        for owner in quantizer_at.values():
            for suffix in (QUANTIZER_SUFFIX, SOFTMAX_SUFFIX):
                if owner + suffix in names:
                    raise ModelError(
                        f"layer name '{owner + suffix}' is reserved by optsearch; rename the layer"
                    )

        def clone_layer(layer: Any) -> Any:
            config = layer.get_config()
            if layer.name in split:
                config["activation"] = "linear"
            return type(layer).from_config(config)

        def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
            out = layer(*args, **kwargs)
            if layer.name in quantizer_at:
                owner = quantizer_at[layer.name]
                out = FixedPointQuantizer(
                    enabled=False,
                    rounding=mode.rounding,
                    overflow=mode.overflow,
                    name=owner + QUANTIZER_SUFFIX,
                )(out)
                if layer.name in split:
                    out = keras.layers.Softmax(name=owner + SOFTMAX_SUFFIX)(out)
            return out

        cloned = keras.models.clone_model(functional, clone_function=clone_layer, call_function=call_layer)
        # One input and one output, not lists of one: callers pass plain arrays without a warning.
        self.keras_model: keras.Model = keras.Model(
            cloned.inputs[0], cloned.outputs[0], name=f"{model.name}_quantized"
        )
        for layer in functional.layers:
            if layer.weights:
                set_layer_weights(self.keras_model.get_layer(layer.name), layer.get_weights())
        self._float_weights: dict[TensorId, list[np.ndarray]] = {}
        for q in self.layers:
            target = self.keras_model.get_layer(q.name)
            self._float_weights[TensorId(q.name, "W")] = [
                np.array(w.numpy()) for w in target.weights if w.name in q.kernel_names
            ]
            if q.has_bias:
                self._float_weights[TensorId(q.name, "B")] = [np.array(target.bias.numpy())]
        self._current: dict[TensorId, Format] = {}

    @property
    def tensors(self) -> tuple[TensorId, ...]:
        """Every tensor the search can quantize, layer by layer (W, B, A)."""
        return tuple(t for q in self.layers for t in q.tensors())

    def layer(self, name: str) -> QuantizableLayer:
        for q in self.layers:
            if q.name == name:
                return q
        raise KeyError(f"no quantizable layer named {name!r}")

    def quantizer(self, layer_name: str) -> FixedPointQuantizer:
        """The activation quantizer of layer ``layer_name``."""
        quantizer = self.keras_model.get_layer(layer_name + QUANTIZER_SUFFIX)
        assert isinstance(quantizer, FixedPointQuantizer)
        return quantizer

    def float_values(self, tensor: TensorId) -> list[np.ndarray]:
        """The float arrays of a weights or biases tensor (one array per kernel for separable convs)."""
        if tensor.kind == "A":
            raise ValueError(f"{tensor}: activations have no stored values; measure them on data")
        return self._float_weights[tensor]

    def largest_magnitude(self, tensor: TensorId) -> float:
        """``Z = max |p_l|`` of a weights or biases tensor (Alg. 2, line 4)."""
        return max(largest_magnitude(a) for a in self.float_values(tensor))

    def magnitudes(self, activation_ranges: Mapping[str, float]) -> dict[TensorId, float]:
        """``Z`` of every tensor (Alg. 2, line 4): stored values for W and B, ``activation_ranges``
        (measured on the search set, keyed by layer) for A."""
        return {
            t: activation_ranges[t.layer] if t.kind == "A" else self.largest_magnitude(t)
            for t in self.tensors
        }

    @property
    def formats(self) -> dict[TensorId, Format]:
        """The formats applied now; tensors not listed are float."""
        return dict(self._current)

    def set_formats(self, formats: Mapping[TensorId, Format]) -> None:
        """Quantize exactly the tensors in ``formats``; every other tensor goes back to float."""
        unknown = set(formats) - set(self.tensors)
        if unknown:
            raise KeyError(f"not quantizable tensors of this model: {', '.join(map(str, sorted(unknown)))}")
        for tensor in set(self._current) | set(formats):
            new = formats.get(tensor)
            if self._current.get(tensor) != new:
                self._apply(tensor, new)
        self._current = dict(formats)

    def _apply(self, tensor: TensorId, fmt: Format | None) -> None:
        if tensor.kind == "A":
            self.quantizer(tensor.layer).set_format(fmt)
            return
        target = self.keras_model.get_layer(tensor.layer)
        variables = (
            [w for w in target.weights if w.name in self.layer(tensor.layer).kernel_names]
            if tensor.kind == "W"
            else [target.bias]
        )
        for variable, values in zip(variables, self.float_values(tensor), strict=True):
            variable.assign(values if fmt is None else quantize(values, fmt, self.mode))

    def cut_node(self, tensor: TensorId) -> str:
        """The layer where ``tensor`` enters the computation: its own layer (W, B) or its quantizer (A)."""
        return tensor.layer + QUANTIZER_SUFFIX if tensor.kind == "A" else tensor.layer

    def cut_tensors(self, tensor: TensorId) -> list[Any]:
        """Every symbolic tensor that the part downstream of ``tensor``'s cut consumes from upstream.

        One for a chain, several for branched models; in a stable order (the producing layers' order).
        """
        model = self.keras_model
        nodes = graph_nodes(model)
        consumers: dict[str, set[str]] = {}
        inputs_of: dict[str, list[Any]] = {}
        for node in nodes:
            name = node.operation.name
            inputs_of[name] = list(node.input_tensors)
            for t in node.input_tensors:
                consumers.setdefault(t._keras_history.operation.name, set()).add(name)
        downstream: set[str] = set()
        stack = [self.cut_node(tensor)]
        while stack:
            name = stack.pop()
            if name not in downstream:
                downstream.add(name)
                stack.extend(consumers.get(name, ()))
        cut: dict[int, Any] = {}
        for name in downstream:
            for t in inputs_of[name]:
                if t._keras_history.operation.name not in downstream:
                    cut[id(t)] = t
        order = {layer.name: i for i, layer in enumerate(model.operations)}
        return sorted(
            cut.values(),
            key=lambda t: (order[t._keras_history.operation.name], t._keras_history.tensor_index),
        )

    def split(self, tensor: TensorId) -> tuple[keras.Model, keras.Model]:
        """(prefix, suffix): the network cut just upstream of where ``tensor`` is applied.

        Everything the prefix computes is independent of ``tensor``'s format, so a search can run
        it once per tensor and only the suffix per candidate. The cut is ``cut_tensors(tensor)``.
        Both models share the quantized model's layers, so ``set_formats`` applies to them too.
        """
        model = self.keras_model
        cut_tensors = self.cut_tensors(tensor)
        prefix = keras.Model(model.inputs[0], cut_tensors, name=f"prefix_{self.cut_node(tensor)}")
        suffix = part_model(cut_tensors, model.outputs[0], name=f"suffix_{self.cut_node(tensor)}")
        return prefix, suffix

    def segment(self, start: TensorId, end: TensorId) -> Segment | None:
        """The part between two cuts: from ``cut_tensors(start)`` to ``cut_tensors(end)``.

        None when ``end``'s cut is not computable from ``start``'s alone (it is upstream, or a branch
        bypasses ``start``'s cut). Lets a search move its cached activations from one tensor's cut
        to the next one's without running the network from the input again.
        """
        sources, targets = self.cut_tensors(start), self.cut_tensors(end)
        position = {id(t): i for i, t in enumerate(sources)}
        used: set[int] = set()
        seen: set[int] = set()
        stack = [t for t in targets if id(t) not in position]
        while stack:
            t = stack.pop()
            if id(t) in position:
                used.add(position[id(t)])
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            operation, node_index, _ = t._keras_history
            parents = list(operation._inbound_nodes[node_index].input_tensors)
            if not parents:  # reached the model's input without crossing start's cut
                return None
            stack.extend(parents)
        computed = [t for t in targets if id(t) not in position]
        inputs = sorted(used)
        model = (
            part_model(
                [sources[i] for i in inputs],
                computed,
                name=f"segment_{self.cut_node(start)}_{self.cut_node(end)}",
            )
            if computed
            else None
        )
        picks, j = [], 0
        for t in targets:
            if id(t) in position:
                picks.append(("source", position[id(t)]))
            else:
                picks.append(("computed", j))
                j += 1
        return Segment(model, tuple(inputs), tuple(picks), len(sources))

    def activation_probe(self) -> keras.Model:
        """A model that returns every ``A_l`` (the quantizer outputs), in layer order."""
        outputs = [self.quantizer(q.name).output for q in self.layers]
        return keras.Model(self.keras_model.inputs, outputs, name="optsearch_activation_probe")

    def save(self, path: str) -> None:
        """Save the quantized model (with its current formats) as a ``.keras`` file."""
        self.keras_model.save(path)


def quantized_model(
    model: keras.Model, activation_point: ActivationPoint = "activation", mode: QuantizerMode = DEFAULT_MODE
) -> QuantizedModel:
    """Find the quantizable layers of ``model`` and build its quantized clone (all tensors float),
    quantizing in ``mode`` once formats are set."""
    return QuantizedModel(model, find_quantizable_layers(model, activation_point), mode)


def uniform_formats(
    qmodel: QuantizedModel, bw: int, activation_ranges: Mapping[str, float], rule: OffsetRule = "paper"
) -> dict[TensorId, Format]:
    """Every W, B, A at ``(bw, F0(bw))`` for its own range: the uniform baseline (spec §8)."""
    formats: dict[TensorId, Format] = {}
    for tensor, z in qmodel.magnitudes(activation_ranges).items():
        formats[tensor] = start_format(z, bw, rule)
    return formats


def describe(layers: Iterable[QuantizableLayer]) -> list[dict[str, Any]]:
    """Plain rows for reports: one per quantizable layer."""
    return [
        {
            "index": q.index,
            "layer": q.name,
            "type": q.class_name,
            "activation_at": q.activation_at + (" (logits, softmax split off)" if q.split_softmax else ""),
            "weights": q.weight_count,
            "biases": q.bias_count,
            "activations": q.activation_count,
            "macs": q.macs,
        }
        for q in layers
    ]


__all__ = [
    "ACTIVATION_POINTS",
    "QUANTIZABLE_CLASSES",
    "ActivationPoint",
    "QuantizableLayer",
    "QuantizedModel",
    "as_functional",
    "describe",
    "find_quantizable_layers",
    "quantized_model",
    "uniform_formats",
]
