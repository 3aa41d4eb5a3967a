"""Read a result folder (``formats.json`` + ``quantized.keras``) into a ``Netlist`` for deployment.

This module only reads Keras graphs (graph.py builds and rewrites them): every layer of the saved
quantized model becomes one netlist node, the weights become integer codes in their formats, and
every ``FixedPointQuantizer`` a ``quantize`` node. A layer the references cannot compute is refused
by name with the reason. It also runs the Keras quantized model for ``optsearch verify``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

import optsearch.model.quantizer_layer  # noqa: F401  (registers FixedPointQuantizer for loading)
from optsearch.core.fixedpoint import Format, to_codes
from optsearch.core.tensors import TensorId
from optsearch.deploy import integer_ref
from optsearch.deploy.integer_ref import Agreement
from optsearch.deploy.netlist import DeployError, FixedArray, Netlist, Node
from optsearch.model.graph import INFERENCE_IDENTITY_CLASSES, QUANTIZER_SUFFIX
from optsearch.run.outdir import MODEL_FILE

FORMATS_FILE = "formats.json"

_IDENTITY = INFERENCE_IDENTITY_CLASSES
_CONV = ("Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


@dataclass
class ResultDir:
    """A result folder of ``optsearch run``: its formats, its netlist, and what the run recorded."""

    path: Path
    formats: dict[TensorId, Format]
    netlist: Netlist
    info: dict[str, Any]
    """formats.json as read (model, data, settings, ...)."""
    model: keras.Model
    """The quantized Keras model (``quantized.keras``)."""

    @property
    def name(self) -> str:
        return str(self.info.get("model", {}).get("name") or self.netlist.name)


def read_formats(path: Path) -> tuple[dict[TensorId, Format], dict[str, Any]]:
    """The formats of a ``formats.json`` (every layer's W, B, A) and the whole file."""
    try:
        data = json.loads(path.read_text())
        formats = {
            TensorId(layer["name"], kind): Format(int(t["bw"]), int(t["f"]))
            for layer in data["layers"]
            for kind, t in layer["tensors"].items()
        }
    except FileNotFoundError as err:
        raise DeployError(
            f"{path.parent}: no {FORMATS_FILE}; pass a folder written by `optsearch run`"
        ) from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DeployError(
            f"{path} is not a formats.json written by `optsearch run` ({type(err).__name__}: {err})"
        ) from err
    return formats, data


def folded_batchnorms(result: Any) -> list[str]:
    """The BatchNorms the run of ``result`` folded into other layers (``--fold-bn``), in model order."""
    folds = result.info.get("model", {}).get("batchnorm_folds", [])
    return [fold["batchnorm"] for fold in folds if fold.get("into")]


def load_result(result_dir: str | Path) -> ResultDir:
    """Read ``formats.json`` and ``quantized.keras`` of a result folder and check they belong together."""
    path = Path(result_dir)
    if not path.is_dir():
        raise DeployError(f"result folder not found: {path} (pass the --out folder of `optsearch run`)")
    formats, info = read_formats(path / FORMATS_FILE)
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise DeployError(f"{path}: no {MODEL_FILE}; pass a folder written by `optsearch run`")
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged file
        raise DeployError(f"{model_path} could not be loaded ({type(err).__name__}: {err})") from err
    netlist = read_netlist(model, formats, str(info.get("model", {}).get("name") or model.name))
    return ResultDir(path, formats, netlist, info, model)


def _as_functional(model: keras.Model) -> keras.Model:
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    return model


def read_netlist(model: keras.Model, formats: Mapping[TensorId, Format], name: str) -> Netlist:
    """The netlist of a quantized Keras model whose weights are already in ``formats``."""
    model = _as_functional(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise DeployError(f"model '{name}' has several inputs or outputs; the references need one of each")
    node_of: dict[str, Any] = {}
    for depth in sorted(model._nodes_by_depth):
        for node in model._nodes_by_depth[depth]:
            node_of[node.operation.name] = node
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
        if layer.max_value is not None or float(layer.negative_slope) != 0 or float(layer.threshold) != 0:
            raise _refuse(layer, "only a plain ReLU (no max_value, negative_slope or threshold) is supported")
        return Node(op="relu", **base)
    if cls == "Activation":
        act = _activation(layer)
        ops = {"relu": "relu", "linear": "identity", "softmax": "softmax"}
        if act not in ops:
            raise _refuse(layer, f"activation '{act}' is not supported (relu, linear, softmax are)")
        return Node(op=ops[act], **base)
    if cls == "Softmax":
        if layer.axis not in (-1, len(shape)):
            raise _refuse(layer, "only a softmax over the last axis is supported")
        return Node(op="softmax", **base)
    if cls in _IDENTITY:
        return Node(op="identity", **base)
    if cls == "Flatten":
        return Node(op="flatten", **base)
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
        if layer.keepdims:
            raise _refuse(layer, "keepdims=True is not supported")
        return Node(op="global_max" if "Max" in cls else "global_avg", **base)
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
    if act not in ("linear", "relu"):
        raise _refuse(layer, f"built-in activation '{act}' is not supported (linear and relu are)")
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
    attrs: dict[str, Any] = {"activation": act}
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


# --- running the Keras quantized model -----------------------------------------------------------


def probe(model: keras.Model, netlist: Netlist, names: list[str]) -> keras.Model:
    """A model returning the outputs of the named layers of the quantized model (e.g. the logits)."""
    model = _as_functional(model)
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


def lsb(fmt: Format) -> float:
    return math.ldexp(1.0, -fmt.f)


def verify(
    result: ResultDir, x: np.ndarray, batch_size: int = 250, labels: np.ndarray | None = None
) -> Agreement:
    """Run the integer reference and the Keras quantized model on ``x`` and compare them.

    Layer by layer, every activation quantizer is computed by the reference from the Keras model's
    own quantized activations; end to end, the reference runs alone from the input. With
    ``labels``, both end-to-end accuracies are counted: what the hardware would score.
    """
    netlist = result.netlist
    scores = integer_ref.scores_node(netlist)
    quantizers = [n for n in netlist.nodes if n.op == "quantize"]
    names = [q.name for q in quantizers]
    probe_names = names if scores in names else [*names, scores]
    scores_node = netlist.node(scores)
    logit_lsb = lsb(scores_node.attrs["format"]) if scores_node.op == "quantize" else None
    probe_model = probe(result.model, netlist, probe_names)
    total: Agreement | None = None
    for part, outputs in predict_batches(probe_model, x, batch_size):
        model_values = dict(zip(probe_names, outputs, strict=True))
        forced = integer_ref.run(
            netlist,
            x[part],
            teacher={name: model_values[name] for name in names},
            keep=[q.inputs[0] for q in quantizers],
        )
        layers = tuple(
            integer_ref.layer_agreement(
                q.name, forced[q.name], model_values[q.name], forced[q.inputs[0]], q.attrs["format"]
            )
            for q in quantizers
        )
        alone = integer_ref.run(netlist, x[part])
        batch = Agreement(
            layers=layers,
            layer_logits=integer_ref.compare_logits(forced[scores].real(), model_values[scores]),
            end_to_end=integer_ref.compare_logits(
                alone[scores].real(), model_values[scores], None if labels is None else labels[part]
            ),
            logit_lsb=logit_lsb,
        )
        total = batch if total is None else total.merge(batch)
    if total is None:
        raise DeployError("no samples to verify on")
    return total
