"""Quantization noise gains ``E_W,l``, ``E_B,l``, ``E_A,l`` of a float model, measured on data.

Sakr, Kim & Shanbhag (ICML 2017), Theorem 1 (the arithmetic and the bound: ``core/analytic.py``)::

    E_t = E_x[ sum_{i != yhat} sum_{h in t} |d(z_yhat - z_i)/dh|**2 / (24 * (z_yhat - z_i)**2) ]

``z`` are the float model's class scores (the logits: a final softmax is looked through; it keeps
the argmax and the quantized network produces its logits at ``A_L`` anyway), ``yhat`` the float
prediction, ``h`` the elements of tensor ``t``: a layer's kernel(s) ``W``, its bias ``B`` or its
activations ``A`` at the quantizer point (a zero offset added there, ``ActivationTap``, is
differentiated in its place). The squared gradient norms are per sample and per class: one
sample's forward and backward pass, vectorised over a batch (``tf.vectorized_map``), per class.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from optsearch.core.analytic import GAIN_CONSTANT, NoiseGains, classifier_floors
from optsearch.core.errors import ModelError
from optsearch.core.tensors import TensorId
from optsearch.model.graph import QuantizableLayer, QuantizedModel, activation_name, set_layer_weights
from optsearch.model.quantizer_layer import FixedPointQuantizer

#: Samples per vectorised step: memory grows as ``batch_size * (weights + biases)`` floats.
DEFAULT_GAIN_BATCH = 32


class ActivationTap(keras.layers.Layer):
    """``x + offset`` with a zero offset of one sample's shape: the gradient w.r.t. the offset of a
    one-sample call is the gradient w.r.t. that sample's ``x``.

    Stands in for a ``FixedPointQuantizer`` in the probe (the float model, ``A_l`` exposed).
    """

    def build(self, input_shape: Any) -> None:
        self.offset = self.add_weight(
            name="offset", shape=(1, *input_shape[1:]), initializer="zeros", trainable=False
        )

    def call(self, inputs: Any) -> Any:
        return inputs + self.offset

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def scores_tensor(model: keras.Model) -> Any:
    """The model's class scores: its output, or the input of a final softmax (the logits)."""
    out = model.outputs[0]
    operation, node_index, _ = out._keras_history
    class_name = type(operation).__name__
    is_softmax = class_name == "Softmax" or (
        class_name == "Activation" and activation_name(operation.activation) == "softmax"
    )
    if is_softmax:
        return operation._inbound_nodes[node_index].input_tensors[0]
    return out


def classifier(qmodel: QuantizedModel) -> tuple[QuantizableLayer, int]:
    """The classifier (the layer whose ``A`` are the scores; else the last layer) and the class count."""
    scores = scores_tensor(qmodel.keras_model)
    classes = int(scores.shape[-1])
    for q in reversed(qmodel.layers):
        if qmodel.quantizer(q.name).output is scores:
            return q, classes
    return qmodel.layers[-1], classes


def park_floors(qmodel: QuantizedModel, alpha: float = 0.5) -> dict[TensorId, int]:
    """Park et al.'s eq. 5 floor for every tensor of the classifier layer (``choose_b_min(floors=)``)."""
    layer, classes = classifier(qmodel)
    return classifier_floors(layer.tensors(), classes, alpha)


@dataclass(frozen=True)
class _Probe:
    """The float model with taps at the activation points: input -> scores."""

    model: keras.Model
    sources: dict[TensorId, list[Any]]
    """Per tensor, the variables to differentiate: the tap's offset (A), the kernels (W: several
    for separable convolutions) or the bias (B)."""


def _probe(qmodel: QuantizedModel, tensors: Sequence[TensorId]) -> _Probe:
    def clone_layer(layer: Any) -> Any:
        if isinstance(layer, FixedPointQuantizer):
            return ActivationTap(name=layer.name)
        return type(layer).from_config(layer.get_config())

    source = qmodel.keras_model
    clone = keras.models.clone_model(source, clone_function=clone_layer)
    for layer in source.layers:
        if layer.weights and not isinstance(layer, FixedPointQuantizer):
            set_layer_weights(clone.get_layer(layer.name), layer.get_weights())
    sources: dict[TensorId, list[Any]] = {}
    for q in qmodel.layers:  # the float values, whatever formats the quantized model holds now
        target = clone.get_layer(q.name)
        kernels = [w for w in target.weights if w.name in q.kernel_names]
        for variable, values in zip(kernels, qmodel.float_values(TensorId(q.name, "W")), strict=True):
            variable.assign(values)
        sources[TensorId(q.name, "W")] = kernels
        if q.has_bias:
            target.bias.assign(qmodel.float_values(TensorId(q.name, "B"))[0])
            sources[TensorId(q.name, "B")] = [target.bias]
        sources[TensorId(q.name, "A")] = [clone.get_layer(qmodel.quantizer(q.name).name).offset]
    return _Probe(
        keras.Model(clone.inputs[0], scores_tensor(clone), name="optsearch_noise_gain_probe"),
        {t: sources[t] for t in tensors},
    )


def needs_pairs(model: keras.Model) -> bool:
    """Whether ``model`` has a strided convolution with a kernel 1 wide along some axis (ResNet's 1x1
    shortcut). TensorFlow 2.21's oneDNN filter gradient of such a convolution aborts the process
    ("double free or corruption") on a batch of one sample: 1x1 stride 2 on 10x10, 14x14 or 16x16
    inputs, never on two samples. Per-sample gradients then run on the sample and a copy of it."""
    for layer in model.layers:
        strides, kernel = getattr(layer, "strides", None), getattr(layer, "kernel_size", None)
        if strides is None or kernel is None or isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        if max(strides) > 1 and min(kernel) == 1:
            return True
    return False


def _squared_norm_fn(probe: _Probe, tensors: Sequence[TensorId], rows: int) -> Any:
    """A traced ``(x, yhat, c) -> [batch, tensors]``: ``sum_h |d(z_yhat - z_c)/dh|**2`` per sample.

    Per-sample gradients: one sample's forward and backward pass, vectorised over the batch. With
    ``rows`` 2 the sample is passed with a copy of itself and differentiated on the first row only
    (``needs_pairs``): the same gradients, since the rows do not interact at inference.
    """
    variables = [v.value for t in tensors for v in probe.sources[t]]
    spans, start = [], 0
    for t in tensors:
        spans.append((start, start + len(probe.sources[t])))
        start += len(probe.sources[t])
    spec = probe.model.inputs[0]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, *spec.shape[1:]], spec.dtype),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.int64),
        ]
    )
    def squared_norms(x: Any, yhat: Any, c: Any) -> Any:
        def one_sample(args: Any) -> Any:
            xi, yi = args
            with tf.GradientTape() as tape:
                tape.watch(variables)
                z = probe.model(tf.repeat(xi[None], rows, axis=0), training=False)[0]
                margin = tf.gather(z, yi) - tf.gather(z, c)
            grads = tape.gradient(margin, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            norms = [tf.reduce_sum(tf.square(tf.cast(g, tf.float64))) for g in grads]
            return tf.stack([tf.add_n(norms[a:b]) for a, b in spans])

        return tf.vectorized_map(one_sample, (x, yhat))

    return squared_norms


@contextmanager
def _quiet_pfor() -> Iterator[None]:
    """Hide pfor's "uses a while_loop" notices (a per-sample filter gradient is looped, not wrong)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def noise_gains(
    qmodel: QuantizedModel,
    x: np.ndarray,
    tensors: Iterable[TensorId] | None = None,
    batch_size: int = DEFAULT_GAIN_BATCH,
    pairs: bool | None = None,
) -> NoiseGains:
    """``E_t`` of the float model behind ``qmodel`` for each of ``tensors`` (default: all) on ``x``.

    Samples whose top two float scores tie are counted as ``ambiguous`` and left out of the sums;
    ``E_t`` is still averaged over all samples (the bound adds the tied share whole). ``pairs``:
    differentiate each sample beside a copy of itself (default: where ``needs_pairs`` says so).
    """
    chosen = tuple(dict.fromkeys(qmodel.tensors if tensors is None else tensors))
    unknown = set(chosen) - set(qmodel.tensors)
    if unknown:
        raise KeyError(f"not quantizable tensors of this model: {', '.join(map(str, sorted(unknown)))}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("noise gains need at least one sample")
    probe = _probe(qmodel, chosen)
    classes = int(probe.model.outputs[0].shape[-1])
    if classes < 2:
        raise ModelError(
            f"model '{qmodel.float_model.name}' has {classes} output score; the mismatch bound needs "
            "a classifier with at least 2 class scores"
        )
    copies = 2 if (needs_pairs(probe.model) if pairs is None else pairs) else 1
    squared_norms = _squared_norm_fn(probe, chosen, copies) if chosen else None
    dtype = probe.model.inputs[0].dtype
    sums = np.zeros(len(chosen))
    ambiguous = 0
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start : start + batch_size], dtype=dtype)
        z = np.asarray(probe.model(xb, training=False), dtype=np.float64)
        rows = np.arange(len(z))
        yhat = np.argmax(z, axis=1)
        margins = z[rows, yhat][:, None] - z  # [batch, classes], >= 0
        others = np.ones_like(margins, dtype=bool)
        others[rows, yhat] = False
        tied = np.any(others & (margins <= 0.0), axis=1)
        ambiguous += int(tied.sum())
        if squared_norms is None:
            continue
        yhat_t = tf.constant(yhat, dtype=tf.int64)
        for c in range(classes):
            active = others[:, c] & ~tied
            if not active.any():
                continue
            weight = np.zeros(len(z))
            weight[active] = GAIN_CONSTANT / margins[active, c] ** 2
            with _quiet_pfor():
                norms = np.asarray(squared_norms(xb, yhat_t, tf.constant(c, tf.int64)))
            sums += weight @ norms
    return NoiseGains({t: float(s / len(x)) for t, s in zip(chosen, sums, strict=True)}, len(x), ambiguous)


__all__ = [
    "DEFAULT_GAIN_BATCH",
    "ActivationTap",
    "classifier",
    "needs_pairs",
    "noise_gains",
    "park_floors",
    "scores_tensor",
]
