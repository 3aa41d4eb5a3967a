"""QONNX export of a result: the quantized network as an ONNX model with a QONNX ``Quant`` node on
every weight, bias and activation. Pure (``onnx.helper`` only, imported when a model is built).

A format ``(BW, F)`` is a ``Quant`` node (domain ``qonnx.custom_op.general``) with ``scale = 2^-F``,
``zeropt = 0``, ``bitwidth = BW``, ``signed=1``, ``narrow=1`` (saturate to ``±(2^(BW-1)-1)``) and
``rounding_mode="ROUND"`` (half to even): ``Q`` of eq. 1-2 exactly. A pruned tensor (``BW = 1``,
all zeros) is not a signed 1-bit ``Quant`` (qonnx executes that as bipolar ``{-1, +1}``): pruned
weights are zero initializers, pruned biases are left out, and a pruned activation is an
unsigned narrow 1-bit ``Quant``, whose range is ``{0}``. The float operations between quantizers
(Rescaling, BatchNorm, pooling, ReLU, add, concat, flatten, zero padding, softmax) are standard ONNX
operations.

Layout (docs/qonnx.md): the graph input and output have the Keras shapes (channels last); the
tensors that ONNX's Conv, pooling and BatchNormalization read are channels first, and a
``Transpose`` is inserted where a tensor changes layout (after the input, before a Flatten), so
weights keep their meaning and Flatten keeps Keras' order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import OPS, DeployError, FixedArray, Netlist, Node

if TYPE_CHECKING:
    import onnx

#: The domain of QONNX's ``Quant`` node.
QUANT_DOMAIN = "qonnx.custom_op.general"
#: Standard ONNX operator set and IR version of the exported file (onnxruntime >= 1.10 and qonnx read them).
OPSET = 13
IR_VERSION = 8
#: The file an export writes.
MODEL_FILE = "model.onnx"
#: Significand bits of float32, the ONNX tensors' type: integer codes up to this many bits are exact.
FLOAT32_SIGNIFICAND_BITS = 24
#: The netlist operations the export maps onto ONNX: all of them (a new one is refused until mapped).
QONNX_OPS = OPS
INSTALL_HINT = "pip install 'optsearch[qonnx]'"

CHANNELS_LAST = "last"
CHANNELS_FIRST = "first"


@dataclass
class QonnxExport:
    """One model's QONNX file (serialised) and notes for the user."""

    model: onnx.ModelProto
    tensors: dict[str, tuple[str, str]]
    """For every netlist node: its ONNX tensor and that tensor's layout (``first`` or ``last``)."""
    notes: list[str] = field(default_factory=list)

    def write(self, out_dir: Path) -> list[str]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(self.model.SerializeToString())
        return [MODEL_FILE]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise DeployError(f"the QONNX export needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def check_format(fmt: Format, where: str) -> None:
    """Refuse a format whose values or scale float32 cannot hold exactly (the ONNX tensors' type)."""
    if fmt.pruned:
        return
    if fmt.bw > FLOAT32_SIGNIFICAND_BITS:
        raise DeployError(
            f"{where}: format {fmt} has more than {FLOAT32_SIGNIFICAND_BITS} bits; float32 ONNX tensors "
            "cannot hold its codes exactly"
        )
    if not (fmt.bw - 127 <= fmt.f <= 126):  # scale 2^-F and the range t * 2^-F are normal float32s
        raise DeployError(
            f"{where}: format {fmt} has an offset F outside [BW-127, 126]; its scale 2^-F is not a "
            "normal float32"
        )


def quant_attributes(fmt: Format) -> dict[str, Any]:
    """The ``Quant`` node's attributes and its scalar inputs (scale, zero point, bit width) for ``fmt``.

    Pruned (``BW = 1``): unsigned, narrow, one bit: the range ``[0, 2^1 - 2] = {0}``.
    """
    signed = 0 if fmt.pruned else 1
    return {
        "signed": signed,
        "narrow": 1,
        "rounding_mode": "ROUND",
        "scale": np.float32(np.ldexp(1.0, -fmt.f)),
        "zeropt": np.float32(0.0),
        "bitwidth": np.float32(fmt.bw),
    }


class _Graph:
    """The ONNX graph under construction: nodes, initializers and the shape of every tensor."""

    def __init__(self, batch: int) -> None:
        self.onnx = _onnx()
        self.batch = batch
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.inputs: list[str] = []
        self.names: set[str] = set()

    def claim(self, name: str) -> str:
        """Reserve a tensor name; refuse a clash (a layer named like another's export suffix)."""
        if name in self.names:
            raise DeployError(
                f"tensor name '{name}' is used twice in the QONNX graph: a layer's name clashes with "
                "the names the export derives from others (e.g. NAME_W, NAME_act_quant); rename the layer"
            )
        self.names.add(name)
        return name

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        self.inputs.append(self.claim(name))
        self.shapes[name] = shape
        return name

    def const(self, name: str, value: np.ndarray | np.generic) -> str:
        array = np.asarray(value)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, self.claim(name)))
        return name

    def add(
        self,
        op: str,
        inputs: Sequence[str],
        output: str,
        shape: tuple[int, ...],
        domain: str = "",
        **attrs: Any,
    ) -> str:
        node = self.onnx.helper.make_node(
            op, list(inputs), [self.claim(output)], name=output, domain=domain, **attrs
        )
        self.nodes.append(node)
        self.shapes[output] = shape
        return output

    def quant(self, x: str, fmt: Format, output: str, shape: tuple[int, ...]) -> str:
        """``Q(x)`` at ``fmt`` as a ``Quant`` node with its own scalar initializers."""
        q = quant_attributes(fmt)
        scalars = [self.const(f"{output}_{k}", q[k]) for k in ("scale", "zeropt", "bitwidth")]
        return self.add(
            "Quant",
            [x, *scalars],
            output,
            shape,
            domain=QUANT_DOMAIN,
            signed=q["signed"],
            narrow=q["narrow"],
            rounding_mode=q["rounding_mode"],
        )

    def model(self, name: str, output: str, doc: str) -> onnx.ModelProto:
        helper, tp = self.onnx.helper, self.onnx.TensorProto
        float32 = tp.FLOAT

        def info(tensor: str) -> Any:
            return helper.make_tensor_value_info(tensor, float32, list(self.shapes[tensor]))

        inputs = [info(t) for t in self.inputs]
        value_info = [info(t) for t in self.shapes if t not in self.inputs and t != output]
        graph = helper.make_graph(
            self.nodes, name, inputs, [info(output)], self.initializers, value_info=value_info
        )
        graph.doc_string = doc
        model: onnx.ModelProto = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QUANT_DOMAIN, 1)],
            producer_name="optsearch",
        )
        model.ir_version = IR_VERSION
        return model


@dataclass(frozen=True)
class _Tensor:
    """A netlist node's value in the graph: the ONNX tensor and its layout."""

    name: str
    layout: str
    keras_shape: tuple[int, ...]
    """Per sample, channels last (the netlist's ``output_shape``)."""


def _to_first(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[-1], *shape[:-1]) if len(shape) > 1 else shape


def _perm(rank: int, layout: str) -> list[int]:
    """The Transpose permutation (batch axis included) that brings a tensor into ``layout``."""
    if layout == CHANNELS_FIRST:
        return [0, rank, *range(1, rank)]
    return [0, *range(2, rank + 1), 1]


class _Exporter:
    def __init__(self, netlist: Netlist, batch: int) -> None:
        self.netlist = netlist
        self.g = _Graph(batch)
        self.values: dict[str, _Tensor] = {}
        self.converted: dict[tuple[str, str], str] = {}
        self.pruned: list[str] = []
        """Pruned weights and biases (``layer:W``, ``layer:B``)."""
        self.pruned_activations: list[str] = []

    # --- helpers ---------------------------------------------------------------------------------

    def shape(self, keras_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
        per_sample = _to_first(keras_shape) if layout == CHANNELS_FIRST else keras_shape
        return (self.g.batch, *per_sample)

    def value(self, name: str, layout: str | None = None) -> str:
        """The ONNX tensor of netlist node ``name`` in ``layout`` (None: as it is), transposed once."""
        v = self.values[name]
        if layout is None or v.layout == layout or len(v.keras_shape) == 1:
            return v.name
        key = (name, layout)
        if key not in self.converted:
            self.converted[key] = self.g.add(
                "Transpose",
                [v.name],
                f"{name}_channels_{layout}",
                self.shape(v.keras_shape, layout),
                perm=_perm(len(v.keras_shape), layout),
            )
        return self.converted[key]

    def emit(self, node: Node, tensor: str, layout: str) -> None:
        self.values[node.name] = _Tensor(tensor, layout, node.output_shape)

    def weight(self, node: Node, fmt: Format, codes: np.ndarray, suffix: str) -> str:
        """A weight or bias initializer (``codes * 2^-F`` in float32, in ONNX's order) and its ``Quant``."""
        what = "biases" if suffix == "B" else "weights"
        check_format(fmt, f"layer '{node.name}' ({node.source}): its {what}")
        values = np.ldexp(codes.astype(np.float64), -fmt.f).astype(np.float32)
        name = self.g.const(f"{node.name}_{suffix}", values)
        if fmt.pruned:  # all zeros: a zero constant, no quantizer (see the module's docstring)
            self.pruned.append(f"{node.name}:{suffix}")
            return name
        return self.g.quant(name, fmt, f"{name}_quant", values.shape)

    def bias(self, node: Node) -> str | None:
        bias = node.bias
        if bias is None:
            return None
        if bias.fmt.pruned:
            self.pruned.append(f"{node.name}:B")
            return None
        return self.weight(node, bias.fmt, bias.codes, "B")

    def pads(self, node: Node, sizes: Sequence[int], kernel: Sequence[int]) -> list[int]:
        """Explicit ONNX pads (begins, then ends) of TensorFlow's ``same`` rule (more at the end)."""
        strides = list(node.attrs.get("strides", (1, 1)))[-len(sizes) :]
        dilation = list(node.attrs.get("dilation", (1, 1)))[-len(sizes) :]
        padding = str(node.attrs.get("padding", "valid"))
        if padding not in ("valid", "same"):
            raise DeployError(
                f"layer '{node.name}' ({node.source}): padding '{padding}' has no QONNX mapping "
                "(valid and same do)"
            )
        begins, ends = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilation, strict=True):
            span = (k - 1) * d + 1
            total = 0 if padding == "valid" else max((-(-size // s) - 1) * s + span - size, 0)
            begins.append(total // 2)
            ends.append(total - total // 2)
        return begins + ends

    def spatial_attrs(self, node: Node, rank: int) -> dict[str, list[int]]:
        return {
            "strides": [int(s) for s in node.attrs.get("strides", (1, 1))][-rank:],
            "dilations": [int(d) for d in node.attrs.get("dilation", (1, 1))][-rank:],
        }

    # --- operations ------------------------------------------------------------------------------

    def node(self, node: Node) -> None:
        op = node.op
        if op not in QONNX_OPS:
            raise DeployError(
                f"layer '{node.name}' ({node.source}): the QONNX export has no mapping for operation "
                f"'{op}' (it maps {', '.join(QONNX_OPS)})"
            )
        getattr(self, f"op_{op}")(node)

    def op_input(self, node: Node) -> None:
        self.emit(node, self.g.input(node.name, self.shape(node.output_shape, CHANNELS_LAST)), CHANNELS_LAST)

    def elementwise(self, node: Node, op: str, **attrs: Any) -> None:
        v = self.values[node.inputs[0]]
        out = self.g.add(op, [v.name], node.name, self.shape(node.output_shape, v.layout), **attrs)
        self.emit(node, out, v.layout)

    def op_relu(self, node: Node) -> None:
        if node.max_value is None:
            self.elementwise(node, "Relu")
            return
        v = self.values[node.inputs[0]]
        self.emit(node, self.clip(node, v.name, self.shape(node.output_shape, v.layout)), v.layout)

    def clip(self, node: Node, x: str, shape: tuple[int, ...]) -> str:
        """ReLU6: ``Clip(x, 0, max_value)``, the bounds as float32 initializers (exact: Keras' own)."""
        m = node.max_value
        assert m is not None
        low = self.g.const(f"{node.name}_clip_min", np.float32(0.0))
        high = self.g.const(f"{node.name}_clip_max", np.float32(m))
        return self.g.add("Clip", [x, low, high], node.name, shape)

    def op_identity(self, node: Node) -> None:
        self.elementwise(node, "Identity")

    def op_softmax(self, node: Node) -> None:
        v = self.values[node.inputs[0]]
        channels_first = v.layout == CHANNELS_FIRST and len(node.output_shape) > 1
        self.elementwise(node, "Softmax", axis=1 if channels_first else -1)

    def op_quantize(self, node: Node) -> None:
        fmt: Format = node.attrs["format"]
        check_format(fmt, f"layer '{node.name}' ({node.source})")
        if fmt.pruned:
            self.pruned_activations.append(f"{node.attrs.get('owner', node.name)}:A")
        v = self.values[node.inputs[0]]
        out = self.g.quant(v.name, fmt, node.name, self.shape(node.output_shape, v.layout))
        self.emit(node, out, v.layout)

    def op_rescale(self, node: Node) -> None:
        """As Keras computes it in float32: ``x * scale + offset`` (two roundings, no fused multiply-add)."""
        v = self.values[node.inputs[0]]
        shape = self.shape(node.output_shape, v.layout)
        scale = self.g.const(f"{node.name}_scale", np.float32(node.attrs["scale"]))
        offset = float(node.attrs["offset"])
        if offset == 0:
            out = self.g.add("Mul", [v.name, scale], node.name, shape)
        else:
            product = self.g.add("Mul", [v.name, scale], f"{node.name}_product", shape)
            shift = self.g.const(f"{node.name}_offset", np.float32(offset))
            out = self.g.add("Add", [product, shift], node.name, shape)
        self.emit(node, out, v.layout)

    def op_batchnorm(self, node: Node) -> None:
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        a = node.arrays
        params = [
            self.g.const(f"{node.name}_{k}", np.asarray(a[k], dtype=np.float32))
            for k in ("gamma", "beta", "mean", "variance")
        ]
        out = self.g.add(
            "BatchNormalization",
            [x, *params],
            node.name,
            self.shape(node.output_shape, CHANNELS_FIRST),
            epsilon=float(node.attrs["epsilon"]),
        )
        self.emit(node, out, CHANNELS_FIRST)

    def activation(self, node: Node, pre: str, layout: str) -> None:
        shape = self.shape(node.output_shape, layout)
        if node.activation == "relu" and node.max_value is not None:
            pre = self.clip(node, pre, shape)
        elif node.activation == "relu":
            pre = self.g.add("Relu", [pre], node.name, shape)
        elif node.activation != "linear":
            raise DeployError(
                f"layer '{node.name}' ({node.source}): built-in activation '{node.activation}' has no "
                "QONNX mapping (linear and relu do)"
            )
        self.emit(node, pre, layout)

    def out_name(self, node: Node) -> str:
        """The pre-activation tensor's name: the node's own when there is no activation after it."""
        return f"{node.name}_linear" if node.activation == "relu" else node.name

    def op_dense(self, node: Node) -> None:
        x = self.value(node.inputs[0], CHANNELS_LAST)
        shape = self.shape(node.output_shape, CHANNELS_LAST)
        w = self.weight(node, node.weights[0].fmt, node.weights[0].codes, "W")
        b = self.bias(node)
        out = self.out_name(node)
        if b is None:
            pre = self.g.add("MatMul", [x, w], out, shape)
        else:
            product = self.g.add("MatMul", [x, w], f"{node.name}_matmul", shape)
            pre = self.g.add("Add", [product, b], out, shape)
        self.activation(node, pre, CHANNELS_LAST)

    def conv_geometry(self, node: Node, kernel: tuple[int, ...]) -> tuple[int, list[int]]:
        """The spatial rank of a conv or pool node and its input's spatial sizes."""
        rank = 1 if node.attrs.get("rank", 2) == 1 else 2
        sizes = list(self.values[node.inputs[0]].keras_shape[:-1])
        if len(sizes) != rank or len(kernel) != rank:
            raise DeployError(
                f"layer '{node.name}' ({node.source}): a {rank}-D operation on input shape "
                f"{self.values[node.inputs[0]].keras_shape} has no QONNX mapping"
            )
        return rank, sizes

    def conv(
        self,
        node: Node,
        x: str,
        kernel: np.ndarray,
        fixed: FixedArray,
        suffix: str,
        groups: int,
        bias: str | None,
        output: str,
        shape: tuple[int, ...],
        pointwise: bool = False,
    ) -> str:
        """One ONNX Conv; ``kernel`` is already in ONNX's (out, in / groups, *spatial) order."""
        spatial = tuple(int(k) for k in kernel.shape[2:])
        rank, sizes = self.conv_geometry(node, spatial)
        w = self.weight(node, fixed.fmt, kernel, suffix)
        attrs: dict[str, Any] = {"kernel_shape": list(spatial), "group": groups}
        if pointwise:
            attrs.update(strides=[1] * rank, dilations=[1] * rank, pads=[0] * (2 * rank))
        else:
            attrs.update(self.spatial_attrs(node, rank), pads=self.pads(node, sizes, spatial))
        inputs = [x, w] if bias is None else [x, w, bias]
        return self.g.add("Conv", inputs, output, shape, **attrs)

    def op_conv(self, node: Node) -> None:
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        codes = node.weights[0].codes  # Keras: (*spatial, in / groups, out)
        kernel = np.moveaxis(codes, (-1, -2), (0, 1))
        shape = self.shape(node.output_shape, CHANNELS_FIRST)
        groups = int(node.attrs.get("groups", 1))
        out = self.conv(
            node, x, kernel, node.weights[0], "W", groups, self.bias(node), self.out_name(node), shape
        )
        self.activation(node, out, CHANNELS_FIRST)

    def depthwise_kernel(self, codes: np.ndarray) -> np.ndarray:
        """Keras' (*spatial, C, M) depthwise kernel as ONNX's (C * M, 1, *spatial): channel-major."""
        c, m = codes.shape[-2], codes.shape[-1]
        moved = np.moveaxis(codes, (-2, -1), (0, 1))  # (C, M, *spatial)
        return moved.reshape(c * m, 1, *codes.shape[:-2])

    def op_depthwise(self, node: Node) -> None:
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        codes = node.weights[0].codes
        kernel = self.depthwise_kernel(codes)
        shape = self.shape(node.output_shape, CHANNELS_FIRST)
        out = self.conv(
            node,
            x,
            kernel,
            node.weights[0],
            "W",
            int(codes.shape[-2]),
            self.bias(node),
            self.out_name(node),
            shape,
        )
        self.activation(node, out, CHANNELS_FIRST)

    def op_separable(self, node: Node) -> None:
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        depthwise, pointwise = node.weights
        kernel = self.depthwise_kernel(depthwise.codes)
        mid_channels = int(kernel.shape[0])
        out_shape = self.shape(node.output_shape, CHANNELS_FIRST)
        mid_shape = (out_shape[0], mid_channels, *out_shape[2:])
        mid = self.conv(
            node,
            x,
            kernel,
            depthwise,
            "W_depthwise",
            int(depthwise.codes.shape[-2]),
            None,
            f"{node.name}_depthwise",
            mid_shape,
        )
        spatial_rank = len(out_shape) - 2
        point = pointwise.codes.reshape(pointwise.codes.shape[-2], pointwise.codes.shape[-1]).T
        point = point.reshape(*point.shape, *([1] * spatial_rank))
        out = self.conv(
            node,
            mid,
            point,
            pointwise,
            "W_pointwise",
            1,
            self.bias(node),
            self.out_name(node),
            out_shape,
            pointwise=True,
        )
        self.activation(node, out, CHANNELS_FIRST)

    def pool(self, node: Node, op: str, **extra: Any) -> None:
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        pool = [int(p) for p in node.attrs["pool_size"]]
        rank = 1 if node.attrs.get("rank", 2) == 1 else 2
        kernel = pool[-rank:]
        _, sizes = self.conv_geometry(node, tuple(kernel))
        out = self.g.add(
            op,
            [x],
            node.name,
            self.shape(node.output_shape, CHANNELS_FIRST),
            kernel_shape=kernel,
            strides=[int(s) for s in node.attrs["strides"]][-rank:],
            pads=self.pads(node, sizes, kernel),
            **extra,
        )
        self.emit(node, out, CHANNELS_FIRST)

    def op_maxpool(self, node: Node) -> None:
        self.pool(node, "MaxPool")

    def op_avgpool(self, node: Node) -> None:
        self.pool(node, "AveragePool", count_include_pad=0)  # Keras leaves the padding out

    def global_pool(self, node: Node, op: str) -> None:
        v = self.values[node.inputs[0]]
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        channels = v.keras_shape[-1]
        pooled = (self.g.batch, channels, *([1] * (len(v.keras_shape) - 1)))
        if node.attrs.get("keepdims"):  # (N, C, 1, 1): channels first, as the next Conv reads it
            self.emit(node, self.g.add(op, [x], node.name, pooled), CHANNELS_FIRST)
            return
        mid = self.g.add(op, [x], f"{node.name}_pooled", pooled)
        out = self.g.add("Flatten", [mid], node.name, self.shape(node.output_shape, CHANNELS_LAST), axis=1)
        self.emit(node, out, CHANNELS_LAST)

    def op_global_max(self, node: Node) -> None:
        self.global_pool(node, "GlobalMaxPool")

    def op_global_avg(self, node: Node) -> None:
        self.global_pool(node, "GlobalAveragePool")

    def op_flatten(self, node: Node) -> None:
        x = self.value(node.inputs[0], CHANNELS_LAST)  # Keras' order: (H, W, C) row-major
        out = self.g.add("Flatten", [x], node.name, self.shape(node.output_shape, CHANNELS_LAST), axis=1)
        self.emit(node, out, CHANNELS_LAST)

    def op_reshape(self, node: Node) -> None:
        """Keras' Reshape: channels last (its element order), then ``Reshape`` to the Keras shape."""
        x = self.value(node.inputs[0], CHANNELS_LAST)
        shape = self.shape(node.output_shape, CHANNELS_LAST)
        target = self.g.const(f"{node.name}_shape", np.asarray(shape, dtype=np.int64))
        self.emit(node, self.g.add("Reshape", [x, target], node.name, shape), CHANNELS_LAST)

    def op_pad(self, node: Node) -> None:
        """ZeroPadding: ONNX ``Pad`` (mode constant, value 0) on the spatial axes, in the input's layout."""
        v = self.values[node.inputs[0]]
        rank = len(v.keras_shape)  # spatial axes and the channel axis, per sample
        if len(node.pads) != rank - 1:
            raise DeployError(
                f"layer '{node.name}' ({node.source}): {len(node.pads)}-D padding of input shape "
                f"{v.keras_shape} has no QONNX mapping"
            )
        first = 2 if v.layout == CHANNELS_FIRST else 1  # the first spatial axis, batch axis included
        begins, ends = [0] * (rank + 1), [0] * (rank + 1)
        for axis, (before, after) in enumerate(node.pads, start=first):
            begins[axis], ends[axis] = before, after
        pads = self.g.const(f"{node.name}_pads", np.asarray(begins + ends, dtype=np.int64))
        zero = self.g.const(f"{node.name}_value", np.float32(0.0))
        shape = self.shape(node.output_shape, v.layout)
        self.emit(node, self.g.add("Pad", [v.name, pads, zero], node.name, shape, mode="constant"), v.layout)

    def merge_layout(self, node: Node) -> str:
        """The layout a merge computes in: its first input's."""
        return self.values[node.inputs[0]].layout

    def op_add(self, node: Node) -> None:
        layout = self.merge_layout(node)
        inputs = [self.value(i, layout) for i in node.inputs]
        shape = self.shape(node.output_shape, layout)
        total = inputs[0]
        for k, other in enumerate(inputs[1:], start=1):
            name = node.name if k == len(inputs) - 1 else f"{node.name}_sum{k}"
            total = self.g.add("Add", [total, other], name, shape)
        self.emit(node, total, layout)

    def op_concat(self, node: Node) -> None:
        layout = self.merge_layout(node)
        inputs = [self.value(i, layout) for i in node.inputs]
        rank = len(node.output_shape)
        axis = int(node.attrs["axis"])  # counted with the batch axis, Keras' layout
        if layout == CHANNELS_FIRST and rank > 1 and axis > 0:
            axis = 1 if axis == rank else axis + 1
        out = self.g.add("Concat", inputs, node.name, self.shape(node.output_shape, layout), axis=axis)
        self.emit(node, out, layout)

    def op_resize(self, node: Node) -> None:
        """Bilinear, half-pixel centres, no antialiasing: TensorFlow's resize as the netlist reads it."""
        x = self.value(node.inputs[0], CHANNELS_FIRST)
        shape = self.shape(node.output_shape, CHANNELS_FIRST)
        sizes = self.g.const(f"{node.name}_sizes", np.asarray(shape, dtype=np.int64))
        out = self.g.add(
            "Resize",
            [x, "", "", sizes],
            node.name,
            shape,
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        )
        self.emit(node, out, CHANNELS_FIRST)

    # --- the whole network -----------------------------------------------------------------------

    def run(self, source: str) -> QonnxExport:
        for node in self.netlist.nodes:
            self.node(node)
        output = self.value(self.netlist.output, CHANNELS_LAST)
        doc = (
            f"{self.netlist.name}, exported by optsearch from {source}: a QONNX Quant node (scale 2^-F, "
            "zero point 0, bit width BW, signed, narrow, ROUND = half to even) on every weight, bias "
            "and activation at its format (BW, F). Input and output are channels last, as in Keras."
        )
        model = self.g.model(self.netlist.name, output, doc)
        notes = [
            "input and output are channels last (the Keras shapes); Conv, pooling and BatchNormalization "
            "run channels first between Transpose nodes (docs/qonnx.md)",
            "for hls4ml: clean it and convert it to channels last with qonnx first "
            "(qonnx_clean, qonnx_to_channels_last, qonnx_clean; docs/qonnx.md)",
        ]
        if self.pruned:
            notes.append(
                f"pruned weights and biases (BW = 1, all zeros): {', '.join(self.pruned)}: zero constants "
                "without a Quant node; a pruned bias is left out"
            )
        if self.pruned_activations:
            notes.append(
                f"pruned activations (BW = 1): {', '.join(self.pruned_activations)}: unsigned narrow 1-bit "
                "Quant nodes (range {0}), exact in qonnx; hls4ml's QONNX reader does not take them (it "
                "supports narrow for signed Quant nodes only)"
            )
        tensors = {name: (v.name, v.layout) for name, v in self.values.items()}
        return QonnxExport(model, tensors, notes)


def export(netlist: Netlist, source: str = "", batch: int = 1) -> QonnxExport:
    """The QONNX model of ``netlist`` with a fixed ``batch`` size (hls4ml and qonnx need fixed shapes)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    return _Exporter(netlist, batch).run(source or netlist.name)


def quant_model(fmt: Format, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A model of one ``Quant`` node at ``fmt`` (input ``x``, output ``y``), built as the export builds
    every quantizer: for checking its semantics against ``fixedpoint.quantize``."""
    check_format(fmt, f"format {fmt}")
    g = _Graph(shape[0] if shape else 1)
    g.input("x", shape)
    g.quant("x", fmt, "y", shape)
    return g.model("quant", "y", f"Q at {fmt}")
