"""A quantized Keras model read as a ``Netlist`` (plain data), and run for comparison with it.

Every layer of the saved quantized model becomes one netlist node, the weights become integer codes
in their formats, and every ``FixedPointQuantizer`` a ``quantize`` node. A layer the references
cannot compute is refused by name with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from optsearch.core.fixedpoint import Format, to_codes
from optsearch.core.netlist import DeployError, FixedArray, Netlist, Node
from optsearch.core.tensors import TensorId
from optsearch.model.graph import INFERENCE_IDENTITY_CLASSES, QUANTIZER_SUFFIX, as_functional, graph_nodes

_IDENTITY = INFERENCE_IDENTITY_CLASSES
_CONV = ("Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


def read_netlist(model: keras.Model, formats: Mapping[TensorId, Format], name: str) -> Netlist:
    """The netlist of a quantized Keras model whose weights are already in ``formats``."""
    model = as_functional(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise DeployError(f"model '{name}' has several inputs or outputs; the references need one of each")
    node_of: dict[str, Any] = {node.operation.name: node for node in graph_nodes(model)}
    weighted = {t.layer for t in formats}
    nodes: list[Node] = []
    for layer in model.operations:
        inputs = tuple(t._keras_history.operation.name for t in node_of[layer.name].input_tensors)
        shape = tuple(int(d) for d in node_of[layer.name].output_tensors[0].shape[1:])
        nodes.append(_node(layer, inputs, shape, formats, weighted))
    unused = weighted - {n.name for n in nodes}
    if unused:
        raise DeployError(f"formats.json names layers the model does not have: {', '.join(sorted(unused))}")
    output = model.outputs[0]._keras_history.operation.name
    return Netlist(name=name, nodes=tuple(nodes), output=output)


def _refuse(layer: Any, why: str) -> DeployError:
    return DeployError(f"layer '{layer.name}' ({type(layer).__name__}): {why}")


def _node(
    layer: Any,
    inputs: tuple[str, ...],
    shape: tuple[int, ...],
    formats: Mapping[TensorId, Format],
    weighted: set[str],
) -> Node:
    cls = type(layer).__name__
    base = {"name": layer.name, "inputs": inputs, "source": cls, "output_shape": shape}
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _refuse(layer, "only channels_last data are supported")
    if not isinstance(layer, keras.layers.Layer):
        raise _refuse(layer, "is a keras.ops operation, not a layer; the references compute layers only")
    if cls == "InputLayer":
        return Node(op="input", **base)
    if cls == "FixedPointQuantizer":
        if not layer.enabled:
            raise _refuse(layer, "the quantizer is disabled (a float tensor); every tensor needs a format")
        owner = layer.name.removesuffix(QUANTIZER_SUFFIX)
        expected = formats.get(TensorId(owner, "A"))
        if expected is not None and expected != layer.format:
            raise DeployError(
                f"layer '{layer.name}' quantizes to {layer.format} but formats.json says {owner}:A is "
                f"{expected}; quantized.keras and formats.json do not belong together"
            )
        return Node(op="quantize", attrs={"format": layer.format, "owner": owner}, **base)
    if cls in ("Dense", *_CONV):
        if layer.name not in weighted:
            raise _refuse(layer, "has weights but no formats in formats.json")
        return _weighted_node(layer, cls, base, formats)
    if cls == "Conv3D" or cls.endswith("3D"):
        raise _refuse(layer, "3-D layers are not supported by the integer reference and the exporters")
    if cls == "BatchNormalization":
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
        if axis not in (-1, len(shape)):
            raise _refuse(layer, f"normalises axis {axis}; only the channel (last) axis is supported")
        channels = shape[-1]
        gamma = _array(layer.gamma) if layer.scale else np.ones(channels)
        beta = _array(layer.beta) if layer.center else np.zeros(channels)
        arrays = {
            "gamma": gamma,
            "beta": beta,
            "mean": _array(layer.moving_mean),
            "variance": _array(layer.moving_variance),
        }
        return Node(op="batchnorm", attrs={"epsilon": float(layer.epsilon)}, arrays=arrays, **base)
    if cls == "ReLU":
        if float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
            raise _refuse(
                layer, "ReLU with negative_slope or threshold is not supported, only ReLU and ReLU(max_value)"
            )
        clip = {} if layer.max_value is None else {"max_value": _float32(layer.max_value)}
        return Node(op="relu", attrs=clip, **base)
    if cls == "Activation":
        act = _activation(layer)
        if act == "relu6":
            return Node(op="relu", attrs={"max_value": 6.0}, **base)
        ops = {"relu": "relu", "linear": "identity", "softmax": "softmax"}
        if act not in ops:
            raise _refuse(layer, f"activation '{act}' is not supported (relu, relu6, linear, softmax are)")
        return Node(op=ops[act], **base)
    if cls == "Softmax":
        if layer.axis not in (-1, len(shape)):
            raise _refuse(layer, "only a softmax over the last axis is supported")
        return Node(op="softmax", **base)
    if cls in _IDENTITY:
        return Node(op="identity", **base)
    if cls == "Flatten":
        return Node(op="flatten", **base)
    if cls == "Reshape":  # to output_shape, in channels-last (row-major) order, as Keras
        return Node(op="reshape", **base)
    if cls in ("ZeroPadding1D", "ZeroPadding2D"):
        return Node(op="pad", attrs={"pads": _zero_pads(layer, cls)}, **base)
    if cls == "Rescaling":
        scale, offset = np.asarray(layer.scale, float), np.asarray(layer.offset, float)
        if scale.size != 1 or offset.size != 1:
            raise _refuse(layer, "only a scalar scale and offset are supported")
        return Node(op="rescale", attrs={"scale": float(scale), "offset": float(offset)}, **base)
    if cls == "Resizing":
        if layer.interpolation != "bilinear" or layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio:
            raise _refuse(layer, "only bilinear resizing without cropping or padding is supported")
        return Node(op="resize", attrs={"size": (int(layer.height), int(layer.width))}, **base)
    if cls in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        one_d = cls.endswith("1D")
        pool, strides = tuple(layer.pool_size), tuple(layer.strides)
        attrs = {
            "rank": 1 if one_d else 2,
            "pool_size": (1, *pool) if one_d else pool,
            "strides": (1, *strides) if one_d else strides,
            "padding": layer.padding,
        }
        return Node(op="maxpool" if cls.startswith("Max") else "avgpool", attrs=attrs, **base)
    if cls in (
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
    ):
        keep = {"keepdims": True} if layer.keepdims else {}  # MobileNet: (1, 1, C), then a 1x1 conv
        return Node(op="global_max" if "Max" in cls else "global_avg", attrs=keep, **base)
    if cls == "Concatenate":
        axis = layer.axis if layer.axis >= 0 else len(shape) + 1 + layer.axis
        return Node(op="concat", attrs={"axis": axis}, **base)
    if cls == "Add":
        return Node(op="add", **base)
    raise _refuse(layer, "the integer reference and the exporters have no implementation of this layer")


def _activation(layer: Any) -> str:
    fn = getattr(layer, "activation", None)
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    return str(name if isinstance(name, str) else getattr(fn, "__name__", "custom"))


def _zero_pads(layer: Any, cls: str) -> tuple[tuple[int, int], ...]:
    """A ZeroPadding layer's (before, after) zeros per spatial axis (1-D: width; 2-D: height, width);
    channels_first layers are refused with every other layer (``_node``)."""
    rank = 1 if cls == "ZeroPadding1D" else 2
    padding = layer.padding
    pairs = (padding,) if rank == 1 else tuple(padding)
    try:
        pads = tuple((int(before), int(after)) for before, after in pairs)
    except (TypeError, ValueError):
        raise _refuse(layer, f"padding {padding!r} is not (before, after) zeros per axis") from None
    if len(pads) != rank or any(p < 0 for pair in pads for p in pair):
        raise _refuse(layer, f"padding {padding!r} is not (before, after) zeros per axis")
    return pads


def _float32(value: Any) -> float:
    """A clip bound as Keras computes with it (float32), exactly."""
    return float(np.float32(float(value)))


def _array(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _codes(layer: Any, values: np.ndarray, fmt: Format, what: str) -> FixedArray:
    """Integer codes of weights that must already be in ``fmt`` (quantized.keras stores Q(w))."""
    codes = to_codes(values, fmt)
    if not np.array_equal(np.ldexp(codes.astype(np.float64), -fmt.f), np.asarray(values, np.float64)):
        raise DeployError(
            f"layer '{layer.name}': its {what} are not in format {fmt} of formats.json; "
            "quantized.keras and formats.json do not belong together"
        )
    return FixedArray(codes, fmt)


def _weighted_node(layer: Any, cls: str, base: dict[str, Any], formats: Mapping[TensorId, Format]) -> Node:
    act = _activation(layer)
    if act not in ("linear", "relu", "relu6"):
        raise _refuse(layer, f"built-in activation '{act}' is not supported (linear, relu and relu6 are)")
    w_fmt = formats[TensorId(layer.name, "W")]
    if cls == "Dense":
        kernels = [layer.kernel]
    elif cls.startswith("Separable"):
        kernels = [layer.depthwise_kernel, layer.pointwise_kernel]
    elif cls.startswith("Depthwise"):
        kernels = [layer.kernel]
    else:
        kernels = [layer.kernel]
    weights = tuple(_codes(layer, _array(k), w_fmt, "weights") for k in kernels)
    bias = None
    if getattr(layer, "use_bias", False):
        b_fmt = formats.get(TensorId(layer.name, "B"))
        if b_fmt is None:
            raise _refuse(layer, "uses a bias but formats.json has no format for it")
        bias = _codes(layer, _array(layer.bias), b_fmt, "biases")
    attrs: dict[str, Any] = (
        {"activation": "relu", "max_value": 6.0} if act == "relu6" else {"activation": act}
    )
    if cls != "Dense":
        one_d = cls.endswith("1D")
        strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        if layer.padding not in ("valid", "same"):
            raise _refuse(layer, f"padding '{layer.padding}' is not supported (valid and same are)")
        attrs.update(
            rank=1 if one_d else 2,
            strides=(1, *strides) if one_d else strides,
            dilation=(1, *dilation) if one_d else dilation,
            padding=layer.padding,
            groups=int(getattr(layer, "groups", 1)),
        )
    op = (
        "dense"
        if cls == "Dense"
        else "separable"
        if cls.startswith("Separable")
        else ("depthwise" if cls.startswith("Depthwise") else "conv")
    )
    return Node(op=op, attrs=attrs, weights=weights, bias=bias, **base)


def probe(model: keras.Model, netlist: Netlist, names: list[str]) -> keras.Model:
    """A model returning the outputs of the named layers of the quantized model (e.g. the logits)."""
    model = as_functional(model)
    outputs = [model.get_layer(n).output for n in names]
    return keras.Model(model.inputs[0], outputs, name="optsearch_verify_probe")


def predict_batches(
    probe_model: keras.Model, x: np.ndarray, batch_size: int
) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """The probe's outputs, batch by batch (float32 inputs, as the evaluators feed them)."""
    for start in range(0, len(x), batch_size):
        part = slice(start, min(start + batch_size, len(x)))
        out = probe_model(np.asarray(x[part], dtype=np.float32), training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        yield part, [np.asarray(keras.ops.convert_to_numpy(o)) for o in outs]
