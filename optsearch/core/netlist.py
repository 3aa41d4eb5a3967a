"""A quantized network as plain data for deployment: nodes, integer weights, formats. numpy only.

``deploy_keras.read_netlist`` builds it from a result folder's ``quantized.keras``; the integer
reference (``integer_ref``) and the exporters (``export_hls4ml``, ``export_c``) only read it.

Every tensor of the network is either on a fixed-point grid (``Grid``: ``v = code * 2**-f`` with
integer codes, exact) or real-valued (float, e.g. after a BatchNorm). ``grids`` works out which,
statically, from the formats and the fan-in alone: this is what decides where the network can be
computed with integers and shifts only, and how wide an exact accumulator must be.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import Format

#: Operations of a netlist node. ``conv`` covers Conv1D/Conv2D (1-D as height 1).
OPS = (
    "input",
    "rescale",
    "resize",
    "conv",
    "depthwise",
    "separable",
    "dense",
    "batchnorm",
    "relu",
    "quantize",
    "maxpool",
    "avgpool",
    "global_max",
    "global_avg",
    "flatten",
    "reshape",
    "pad",
    "identity",
    "concat",
    "add",
    "softmax",
)
#: Operations with quantized weights (the quantizable layers of spec §3).
WEIGHTED_OPS = ("conv", "depthwise", "separable", "dense")
#: Built-in activations of a weighted node that the references implement.
BUILTIN_ACTIVATIONS = ("linear", "relu")


class DeployError(OptsearchError):
    """A result folder that cannot be read, or a model a reference or an exporter cannot handle."""


@dataclass(frozen=True, eq=False)
class FixedArray:
    """An array of integer codes in a format: the values are ``codes * 2**-fmt.f`` exactly."""

    codes: np.ndarray
    fmt: Format

    def values(self) -> np.ndarray:
        """The real values, float64 (exact: codes of at most 53 bits times a power of two)."""
        return np.ldexp(self.codes.astype(np.float64), -self.fmt.f)


@dataclass(frozen=True, eq=False)
class Node:
    """One operation of the network with its inputs, settings and arrays.

    ``weights`` are the kernels of a weighted node (two for a separable conv: depthwise, pointwise)
    in the layer's ``W`` format; ``bias`` its ``B`` codes or None. ``arrays`` hold float parameters
    (BatchNorm's gamma, beta, moving mean and variance). ``quantize`` nodes carry ``attrs["format"]``.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    source: str
    """The Keras class the node comes from (for messages)."""
    output_shape: tuple[int, ...]
    """Per sample (no batch axis)."""
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: tuple[FixedArray, ...] = ()
    bias: FixedArray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def activation(self) -> str:
        """The built-in activation of a weighted node (``linear`` or ``relu``)."""
        return str(self.attrs.get("activation", "linear"))

    @property
    def max_value(self) -> float | None:
        """The upper clip of a ``relu`` node or of a weighted node's built-in ``relu`` (ReLU6: 6.0),
        None for a plain ReLU: ``min(max(x, 0), max_value)``."""
        m = self.attrs.get("max_value")
        return None if m is None else float(m)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """A ``pad`` node's zeros (before, after) per spatial axis, in the order of the channels-last
        shape's spatial axes (1-D: width; 2-D: height, width)."""
        return tuple((int(b), int(a)) for b, a in self.attrs["pads"])

    @property
    def fan_in(self) -> int:
        """Products summed into one output of a weighted node (before the bias)."""
        if self.op == "dense":
            return int(self.weights[0].codes.shape[0])
        if self.op == "conv":
            kernel = self.weights[0].codes
            return int(np.prod(kernel.shape[:-1]))
        if self.op == "depthwise":
            return int(np.prod(self.weights[0].codes.shape[:-2]))
        if self.op == "separable":
            depthwise, pointwise = (w.codes for w in self.weights)
            return int(np.prod(depthwise.shape[:-2])) * int(pointwise.shape[-2])
        raise ValueError(f"{self.name} ({self.op}) has no weights")


@dataclass(frozen=True, eq=False)
class Netlist:
    """A network in topological order: ``nodes[0]`` is the input, ``output`` the node giving the scores."""

    name: str
    nodes: tuple[Node, ...]
    output: str

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"netlist {self.name}: node names are not unique")
        seen: set[str] = set()
        for node in self.nodes:
            if node.op not in OPS:
                raise ValueError(f"node {node.name}: unknown operation {node.op!r}")
            missing = [i for i in node.inputs if i not in seen]
            if missing:
                raise ValueError(f"node {node.name}: inputs {missing} are not computed before it")
            seen.add(node.name)
        if self.output not in seen:
            raise ValueError(f"netlist {self.name}: output {self.output!r} is not a node")

    @property
    def input(self) -> Node:
        return self.nodes[0]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}")

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def weighted(self) -> Iterator[Node]:
        """The quantizable layers, in order."""
        return (n for n in self.nodes if n.op in WEIGHTED_OPS)

    def is_sequential(self) -> bool:
        """True when every node has one input and one consumer (a chain)."""
        return all(len(n.inputs) == 1 for n in self.nodes[1:]) and all(
            len(self.consumers(n.name)) == 1 for n in self.nodes if n.name != self.output
        )

    def quantizer_of(self, name: str) -> Node | None:
        """The ``quantize`` node that takes ``name``'s output directly, if any."""
        for n in self.consumers(name):
            if n.op == "quantize":
                return n
        return None


@dataclass(frozen=True)
class Grid:
    """Values on a fixed-point grid: ``v = code * 2**-f``, integer ``|code| <= max_code``."""

    f: int
    max_code: int
    nonnegative: bool = False

    @property
    def bits(self) -> int:
        """Bits of a signed two's-complement integer holding every code (sign included)."""
        return max(int(self.max_code).bit_length() + 1, 1)

    def ap_fixed(self) -> str:
        """The exact ``ap_fixed<W,I>`` type of these values (no rounding or saturation needed)."""
        return f"ap_fixed<{self.bits},{self.bits - self.f}>"


def clip_code(max_value: float, f: int) -> int:
    """The code of ``max_value`` at ``2**-f`` (it must be on that grid: ``clip_grid`` chooses ``f``)."""
    code = Fraction(max_value) * 2**f if f >= 0 else Fraction(max_value) / 2**-f
    if code.denominator != 1:
        raise ValueError(f"{max_value!r} is not on the grid 2**-{f}")
    return int(code)


def clip_grid(x: Grid, max_value: float | None) -> Grid:
    """The grid of ``relu(x)`` (``max_value`` None) or ``min(max(x, 0), max_value)``: the input's ``f``,
    refined where ``max_value`` is not a multiple of its LSB (6 at LSB 4: ``f = -1``): an exact clip."""
    if max_value is None:
        return Grid(x.f, x.max_code, True)
    m = Fraction(max_value)
    if m <= 0:
        return Grid(x.f, 0, True)
    num, den = m.numerator, m.denominator
    f = max(x.f, (den.bit_length() - 1) - ((num & -num).bit_length() - 1))
    return Grid(f, min(x.max_code << (f - x.f), clip_code(max_value, f)), True)


def accumulator(node: Node, x: Grid) -> Grid:
    """The exact accumulator of weighted ``node`` on grid input ``x``: worst case over its formats.

    ``F_acc = max(F_x + F_W (+ F_W for the separable pointwise step), F_B)``; the bound is
    ``fan_in * t_x * t_W`` (in units of ``2**-F_acc``) plus ``t_B``, from the formats alone.
    """
    w = node.weights[0].fmt
    product_f = x.f + w.f * (2 if node.op == "separable" else 1)
    b = node.bias.fmt if node.bias is not None and not node.bias.fmt.pruned else None
    f = max(product_f, b.f) if b is not None else product_f
    product_max = x.max_code * w.max_code * (w.max_code if node.op == "separable" else 1)
    bound = node.fan_in * product_max << (f - product_f)
    if b is not None:
        bound += b.max_code << (f - b.f)
    return Grid(f, bound)


def propagate(node: Node, inputs: list[Grid | None]) -> Grid | None:
    """The grid of ``node``'s output given its inputs' grids (None: real-valued)."""
    op = node.op
    if op == "quantize":
        fmt: Format = node.attrs["format"]
        return Grid(0, 0, True) if fmt.pruned else Grid(fmt.f, fmt.max_code)
    if any(g is None for g in inputs):
        return None
    grids: list[Grid] = [g for g in inputs if g is not None]
    if op == "input":
        return None
    if op in ("identity", "flatten", "reshape", "pad", "maxpool", "global_max"):  # pad: 0 is on every grid
        return grids[0]
    if op == "relu":
        return clip_grid(grids[0], node.max_value)
    if op in WEIGHTED_OPS:
        acc = accumulator(node, grids[0])
        if node.activation == "relu":
            return clip_grid(acc, node.max_value)
        return acc
    if op in ("concat", "add"):
        f = max(g.f for g in grids)
        shifted = [g.max_code << (f - g.f) for g in grids]
        bound = max(shifted) if op == "concat" else sum(shifted)
        return Grid(f, bound, all(g.nonnegative for g in grids))
    if op == "rescale":
        scale, offset = node.attrs["scale"], node.attrs["offset"]
        mantissa, exponent = np.frexp(scale)
        if offset == 0 and mantissa == 0.5:  # scale = 2**(exponent - 1): exact
            return Grid(grids[0].f - int(exponent) + 1, grids[0].max_code, grids[0].nonnegative)
        return None
    if op == "resize" and node.attrs.get("interpolation") == "nearest":
        return grids[0]
    return None  # batchnorm, average pooling, bilinear resize, softmax: real-valued


def grids(netlist: Netlist, assumed: Mapping[str, Grid] | None = None) -> dict[str, Grid | None]:
    """For every node, the grid its output is on, or None where it is real-valued.

    ``assumed`` gives grids to real-valued outputs (e.g. the types an hls4ml export chooses for a
    BatchNorm's result, or an input format), so the rest is sized as the hardware would compute it.
    """
    assumed = dict(assumed or {})
    out: dict[str, Grid | None] = {}
    for node in netlist.nodes:
        if node.name in assumed:
            out[node.name] = assumed[node.name]
            continue
        out[node.name] = propagate(node, [out[i] for i in node.inputs])
    return out


def real_inputs(netlist: Netlist) -> dict[str, Node]:
    """The weighted layers whose input is real-valued, each with the node where its value leaves the
    fixed-point grid (a float BatchNorm, a non-power-of-two Rescaling, the raw input, ...).

    Hardware computes those in float or approximates them, and where an exact value sits on a
    rounding boundary of the next quantizer, float32 Keras and exact arithmetic can round apart:
    the reason ``optsearch verify`` compares end to end (docs/deployment.md).
    """
    on_grid = grids(netlist)
    out: dict[str, Node] = {}
    for layer in netlist.weighted():
        if on_grid[layer.inputs[0]] is not None:
            continue
        cause = netlist.node(layer.inputs[0])
        # Up through the operations that only pass a real input on (on a grid, they would stay on it).
        while cause.inputs and propagate(cause, [Grid(0, 1)] * len(cause.inputs)) is not None:
            cause = netlist.node(next(i for i in cause.inputs if on_grid[i] is None))
        out[layer.name] = cause
    return out


def smallest_c_int(bits: int) -> str:
    """The smallest C integer type (``int8_t`` ... ``int64_t``) holding a signed ``bits``-bit code."""
    for width in (8, 16, 32, 64):
        if bits <= width:
            return f"int{width}_t"
    raise ValueError(f"{bits} bits do not fit a 64-bit C integer")
