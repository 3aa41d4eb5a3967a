"""The execution schedule of a Keras model, for the peak activation memory (``core.memory``).

Layers run in ``model.layers`` order, one step each, with three rules that match how integer
deployments (TFLite, the C export) run them:

- a quantizable layer and the element-wise layers up to its activation point (``activation_at``:
  BatchNorm, dropout, the activation) run as one step writing ``A_l``: the pre-activation values
  are never a whole tensor in RAM (TFLite fuses conv + BN + ReLU the same way);
- a layer with a built-in softmax is split as ``QuantizedModel`` splits it: a step writing the
  logits ``A_l``, then a softmax step;
- layers that are the identity at inference (dropout, noise) are no step: their output is their
  input's buffer.

Every other layer (pooling, flatten, reshape, padding, add, concatenate, standalone BatchNorm,
rescaling, softmax) is a step writing its own buffer. InputLayer is the input buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from optsearch.core.memory import Buffer, Schedule, Step
from optsearch.core.tensors import ActivationPoint, TensorId
from optsearch.model.graph import (
    INFERENCE_IDENTITY_CLASSES,
    SOFTMAX_SUFFIX,
    ModelGraph,
    QuantizableLayer,
    as_functional,
    find_quantizable_layers,
    per_sample,
)


def activation_schedule(
    model: keras.Model,
    layers: Sequence[QuantizableLayer] | None = None,
    activation_point: ActivationPoint = "activation",
) -> Schedule:
    """The steps and buffers of ``model`` in ``model.layers`` order (see the module docstring).

    ``layers`` are the quantizable layers the search used (``find_quantizable_layers(model,
    activation_point)`` when None); each one's ``A_l`` buffer is marked with ``TensorId(l, "A")``.
    """
    graph = ModelGraph(as_functional(model))
    if layers is None:
        layers = find_quantizable_layers(model, activation_point)
    heads = {q.name: q for q in layers}
    chains = {q.name: _chain(graph, q) for q in layers}
    fused = {member for chain in chains.values() for member in chain[1:]}

    input_name = graph.model.inputs[0]._keras_history.operation.name
    buffer_of = {input_name: input_name}
    buffers = [Buffer(input_name, per_sample(graph.output_shape(input_name)))]
    steps: list[Step] = []

    def reads(name: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(buffer_of[p] for p in graph.producers[name]))

    for layer in graph.layers:
        name = layer.name
        if name in fused:
            continue
        if name in heads:
            q = heads[name]
            end = q.activation_at
            buffers.append(Buffer(end, per_sample(graph.output_shape(end)), TensorId(q.name, "A")))
            steps.append(Step(q.name, reads(name), end, chains[name]))
            buffer_of[end] = end
            if q.split_softmax:
                softmax = q.name + SOFTMAX_SUFFIX
                buffers.append(Buffer(softmax, buffers[-1].elements))
                steps.append(Step(softmax, (end,), softmax, (q.name,)))
                buffer_of[end] = softmax
        elif type(layer).__name__ in INFERENCE_IDENTITY_CLASSES:
            buffer_of[name] = buffer_of[graph.producers[name][0]]
        else:
            buffers.append(Buffer(name, per_sample(graph.output_shape(name))))
            steps.append(Step(name, reads(name), name, (name,)))
            buffer_of[name] = name
    return Schedule(input_name, buffer_of[graph.output_layer], tuple(buffers), tuple(steps))


def _chain(graph: ModelGraph, q: QuantizableLayer) -> tuple[str, ...]:
    """``q`` and the single-consumer element-wise layers after it, up to its activation point."""
    chain = [q.name]
    while chain[-1] != q.activation_at:
        consumers = graph.consumers[chain[-1]]
        if len(consumers) != 1:
            raise ValueError(f"the activation point {q.activation_at!r} of {q.name!r} is not on its chain")
        chain.append(consumers[0])
    return tuple(chain)


__all__ = ["activation_schedule"]
