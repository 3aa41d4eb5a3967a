"""The integer reference: the quantized network computed from integer codes and shifts. numpy only.

Where a layer's input is on a fixed-point grid (``netlist.grids``), its multiply-accumulate runs on
integer codes with an exact, wide accumulator, the bias is aligned by a shift, and the activation
quantizer is a rounding right shift (half to even) and a symmetric clip: what fixed-point hardware
computes. Exactness does not depend on the order of the sums: integer MACs whose worst-case
accumulator fits 53 bits run as float64 matrix products of integer codes (every partial sum is an
integer below 2**53, so every one is exact); wider ones run in int64.

Where a layer's input is real-valued (after a float BatchNorm, a non-power-of-two Rescaling,
average pooling or a bilinear resize), no integer-only computation equals the model: the reference
then multiplies the real input by the layer's integer weight codes in float64 and quantizes the
result with the same rounding. See docs/deployment.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import FixedArray, Grid, Netlist, Node, accumulator, clip_code, grids

#: Integer accumulators up to this many bits (sign included) run as exact float64 products.
FLOAT64_EXACT_BITS = 53


@dataclass(frozen=True, eq=False)
class Value:
    """A batch of one tensor: integer codes at ``2**-f`` when ``f`` is set, else float64 values."""

    data: np.ndarray
    f: int | None
    bound: np.ndarray | float = 0.0
    """Teacher-forced runs only: how far, at most, the Keras model's float32 arithmetic can put this
    tensor from the exact value, given the same quantized inputs (absolute, per element)."""

    def real(self) -> np.ndarray:
        if self.f is None:
            return self.data
        return np.ldexp(self.data.astype(np.float64), -self.f)


def scores_node(netlist: Netlist) -> str:
    """The node whose values are the class scores compared with the model: the logits before a softmax
    (and before a Reshape of them: MobileNet's 1x1-conv classifier)."""
    node = netlist.node(netlist.output)
    while node.op in ("softmax", "identity", "reshape"):
        node = netlist.node(node.inputs[0])
    return node.name


def codes_of(values: np.ndarray, f: int) -> np.ndarray:
    """The integer codes of values that lie on the grid ``2**-f`` (e.g. a quantizer's float output)."""
    return np.rint(np.ldexp(np.asarray(values, dtype=np.float64), f)).astype(np.int64)


def boundary_distance(pre: Value, fmt: Format) -> np.ndarray:
    """How far (in LSBs of ``fmt``) each value lies from the nearest rounding boundary of ``Q``."""
    u = np.ldexp(pre.real(), fmt.f)
    distance: np.ndarray = np.abs(u - np.floor(u) - 0.5)
    return distance


def round_shift(codes: np.ndarray, shift: int) -> np.ndarray:
    """``codes * 2**-shift`` rounded half to even, on integers (``shift`` may be negative: exact)."""
    codes = codes.astype(np.int64, copy=False)
    if shift <= 0:
        return codes << -shift
    floor = codes >> shift  # arithmetic shift: floor division by 2**shift
    rest = codes - (floor << shift)
    half = np.int64(1) << (shift - 1)
    up = (rest > half) | ((rest == half) & ((floor & 1) == 1))
    result: np.ndarray = floor + up.astype(np.int64)
    return result


def quantize_value(value: Value, fmt: Format) -> Value:
    """The activation quantizer ``Q`` (eq. 1-2) on integer codes (a shift) or on real values."""
    if fmt.pruned:
        return Value(np.zeros(value.data.shape, dtype=np.int64), 0)
    t = fmt.max_code
    if value.f is None:
        codes = np.rint(np.ldexp(value.data, fmt.f))
        return Value(np.clip(codes, -t, t).astype(np.int64), fmt.f)
    return Value(np.clip(round_shift(value.data, value.f - fmt.f), -t, t), fmt.f)


def run(
    netlist: Netlist,
    x: np.ndarray,
    *,
    quantize_at: Mapping[str, Format] | None = None,
    keep: Iterable[str] = (),
    teacher: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Value]:
    """Run ``netlist`` on the batch ``x`` (float, as the model's input receives it).

    ``quantize_at`` adds quantizers at the outputs of named nodes (e.g. the input, quantized as an
    hls4ml input type does). ``teacher`` gives, per ``quantize`` node, the model's own quantized
    values: the reference's codes are returned, and the teacher's are passed on downstream, so that
    every layer is compared on the model's own inputs (layer by layer, no compounding), and every
    value carries its float32 error bound (``Value.bound``, ``float32_bound``).
    Returns the values of the scores node (``scores_node``), the output, every ``quantize`` node,
    and the nodes named in ``keep``.
    """
    extra = dict(quantize_at or {})
    assumed = {name: Grid(fmt.f, fmt.max_code) for name, fmt in extra.items()}
    static = grids(netlist, assumed)
    wanted = {scores_node(netlist), netlist.output, *keep}
    wanted |= {n.name for n in netlist.nodes if n.op == "quantize"}
    last_use = {name: i for i, node in enumerate(netlist.nodes) for name in node.inputs}
    values: dict[str, Value] = {}
    out: dict[str, Value] = {}
    for i, node in enumerate(netlist.nodes):
        inputs = [values[name] for name in node.inputs]
        value = _apply(node, inputs, static[node.name], x)
        if node.name in extra:
            value = quantize_value(value, extra[node.name])
        elif teacher is not None:
            value = Value(value.data, value.f, float32_bound(node, inputs, static[node.name]))
        expected = static[node.name]
        if expected is not None and value.f != expected.f:  # a bug, not a user error
            raise AssertionError(f"{node.name}: codes at F={value.f}, expected F={expected.f}")
        if node.name in wanted:
            out[node.name] = value
        if teacher is not None and node.name in teacher and value.f is not None:
            value = Value(codes_of(teacher[node.name], value.f), value.f)
        values[node.name] = value
        for name in node.inputs:  # free what no later node reads
            if last_use.get(name) == i and name not in wanted:
                values.pop(name, None)
    return out


def _apply(node: Node, inputs: list[Value], grid: Grid | None, x: np.ndarray) -> Value:
    op = node.op
    if op == "input":
        return Value(np.asarray(x, dtype=np.float64), None)
    if op == "quantize":
        return quantize_value(inputs[0], node.attrs["format"])
    if op in ("conv", "depthwise", "separable", "dense"):
        return _weighted(node, inputs[0], grid)
    if op == "relu":
        return _relu(inputs[0], node.max_value, grid)
    if op in ("identity",):
        return inputs[0]
    if op == "flatten":
        v = inputs[0]
        return Value(v.data.reshape(v.data.shape[0], -1), v.f)
    if op == "reshape":  # channels-last data reshape in Keras' (row-major) order
        v = inputs[0]
        return Value(v.data.reshape(v.data.shape[0], *node.output_shape), v.f)
    if op == "pad":
        v = inputs[0]
        return Value(_pad(v.data, node), v.f)
    if op == "batchnorm":
        return Value(_batchnorm(node, inputs[0].real()), None)
    if op == "rescale":
        return _rescale(node, inputs[0], grid)
    if op == "resize":
        return Value(_resize_bilinear(inputs[0].real(), node.attrs["size"]), None)
    if op == "maxpool":
        v = inputs[0]
        return Value(_pool(v.data, node, "max"), v.f)
    if op == "avgpool":
        return Value(_pool(inputs[0].real(), node, "avg"), None)
    if op == "global_max":
        v = inputs[0]
        return Value(_global(node, v.data.max(axis=_spatial(v.data))), v.f)
    if op == "global_avg":
        r = inputs[0].real()
        return Value(_global(node, r.mean(axis=_spatial(r))), None)
    if op in ("concat", "add"):
        return _merge(node, inputs, grid)
    if op == "softmax":
        r = inputs[0].real()
        e = np.exp(r - r.max(axis=-1, keepdims=True))
        return Value(e / e.sum(axis=-1, keepdims=True), None)
    raise ValueError(f"node {node.name}: no integer reference for operation {op!r}")


def _spatial(x: np.ndarray) -> tuple[int, ...]:
    """The spatial axes of a channels-last batch."""
    return tuple(range(1, x.ndim - 1))


def _global(node: Node, pooled: np.ndarray) -> np.ndarray:
    """A global pooling's (N, C) result in its output shape (keepdims: (N, 1, 1, C) or (N, 1, C))."""
    return pooled.reshape(pooled.shape[0], *node.output_shape)


def _pad(x: np.ndarray, node: Node) -> np.ndarray:
    """Zeros around the spatial axes of a (N, W, C) or (N, H, W, C) batch: codes or reals, exact."""
    if x.ndim != len(node.pads) + 2:
        raise ValueError(f"node {node.name}: {len(node.pads)}-D padding of a {x.ndim - 2}-D input")
    padded: np.ndarray = np.pad(x, ((0, 0), *node.pads, (0, 0)))
    return padded


def _rescale(node: Node, v: Value, grid: Grid | None) -> Value:
    scale, offset = float(node.attrs["scale"]), float(node.attrs["offset"])
    if grid is not None and v.f is not None:  # a power-of-two scale on codes: only F changes
        return Value(v.data, grid.f)
    # As Keras computes it, in float32 (one correctly rounded multiply and add), then widened.
    r32 = v.real().astype(np.float32) * np.float32(scale) + np.float32(offset)
    return Value(r32.astype(np.float64), None)


def _batchnorm(node: Node, r: np.ndarray) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` per channel (last axis), in float64."""
    a = node.arrays
    inv = a["gamma"] / np.sqrt(a["variance"] + float(node.attrs["epsilon"]))
    result: np.ndarray = r * inv + (a["beta"] - a["mean"] * inv)
    return result


def _merge(node: Node, inputs: list[Value], grid: Grid | None) -> Value:
    if grid is not None:
        datas = [round_shift(v.data, int(v.f or 0) - grid.f) for v in inputs]
        f: int | None = grid.f
    else:
        datas, f = [v.real() for v in inputs], None
    if node.op == "add":
        total = datas[0]
        for d in datas[1:]:
            total = total + d
        return Value(total, f)
    return Value(np.concatenate(datas, axis=int(node.attrs["axis"])), f)


# --- convolutions ------------------------------------------------------------------------------


def _as_2d(x: np.ndarray, node: Node) -> np.ndarray:
    """A 1-D input (N, W, C) as (N, 1, W, C); 1-D nodes store their settings in 2-D form."""
    return x[:, np.newaxis] if node.attrs.get("rank", 2) == 1 else x


def _padding(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """(pad before, pad after, output size), TensorFlow's rule for ``same``."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return 0, 0, (size - span) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2, out


def _patches(x: np.ndarray, kernel: tuple[int, int], node: Node, fill: float = 0) -> np.ndarray:
    """Sliding windows of a (N, H, W, C) batch: (N, Ho, Wo, kh, kw, C)."""
    strides = tuple(node.attrs.get("strides", (1, 1)))
    dilation = tuple(node.attrs.get("dilation", (1, 1)))
    padding = str(node.attrs.get("padding", "valid"))
    pads = [_padding(x.shape[1 + i], kernel[i], strides[i], dilation[i], padding) for i in range(2)]
    x = np.pad(x, ((0, 0), pads[0][:2], pads[1][:2], (0, 0)), constant_values=fill)
    spans = tuple((kernel[i] - 1) * dilation[i] + 1 for i in range(2))
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=(1, 2))  # (N, H', W', C, sh, sw)
    windows = windows[:, :: strides[0], :: strides[1], :, :: dilation[0], :: dilation[1]]
    windows = windows[:, : pads[0][2], : pads[1][2]]
    return np.moveaxis(windows, 3, -1)


def _matmul(a: np.ndarray, b: np.ndarray, exact_int: bool, wide: bool) -> np.ndarray:
    """``a @ b``: floats, or integer codes exactly (float64 while the accumulator fits 53 bits)."""
    if not exact_int:
        return a.astype(np.float64, copy=False) @ b.astype(np.float64, copy=False)
    if not wide:
        product = a.astype(np.float64) @ b.astype(np.float64)
        return product.astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def _weighted(node: Node, v: Value, grid: Grid | None) -> Value:
    """Conv, depthwise, separable or dense: integer MACs on grid input, else float64 on real input."""
    exact_int = v.f is not None
    wide = grid is not None and grid.bits > FLOAT64_EXACT_BITS
    if exact_int and node.max_value is not None:  # grid is the clip's: size the sums by the accumulator
        wide = (
            accumulator(node, Grid(int(v.f or 0), int(np.abs(v.data).max(initial=0)))).bits
            > FLOAT64_EXACT_BITS
        )
    x = v.data if exact_int else v.real()
    kernels = [w.codes for w in node.weights]
    if node.op == "dense":
        acc = _matmul(x, kernels[0], exact_int, wide)
    else:
        x4 = _as_2d(x, node)
        k = kernels[0] if node.attrs.get("rank", 2) == 2 else kernels[0][np.newaxis]
        patches = _patches(x4, (k.shape[0], k.shape[1]), node)
        n, ho, wo = patches.shape[:3]
        if node.op == "conv":
            acc = _grouped_conv(patches, k, int(node.attrs.get("groups", 1)), exact_int, wide)
        else:
            acc = _depthwise(patches, k, exact_int, wide)
            if node.op == "separable":
                pointwise = kernels[1].reshape(kernels[1].shape[-2], kernels[1].shape[-1])
                acc = _matmul(acc, pointwise, exact_int, wide)
        acc = acc.reshape(n, ho, wo, -1)
        if node.attrs.get("rank", 2) == 1:
            acc = acc[:, 0]
    w_f = node.weights[0].fmt.f * (2 if node.op == "separable" else 1)
    bias = node.bias if node.bias is not None and not node.bias.fmt.pruned else None
    if exact_int:
        assert grid is not None and v.f is not None
        codes = round_shift(acc, v.f + w_f - grid.f)  # a left shift: exact
        if bias is not None:
            codes = codes + round_shift(bias.codes, bias.fmt.f - grid.f)
        result = Value(codes, grid.f)
    else:
        real = np.ldexp(acc, -w_f)
        if bias is not None:
            real = real + bias.values()
        result = Value(real, None)
    if node.activation == "relu":
        result = _relu(result, node.max_value, grid)
    return result


def _relu(v: Value, max_value: float | None, grid: Grid | None) -> Value:
    """``max(x, 0)``, or ``min(max(x, 0), max_value)`` (ReLU6): on codes at ``grid.f`` (which holds
    ``max_value`` exactly, ``clip_grid``), else on reals; exact either way."""
    if max_value is None:
        return Value(np.maximum(v.data, 0), v.f)
    if v.f is not None and grid is not None:
        codes = round_shift(v.data, v.f - grid.f)  # a left shift (or none): exact
        return Value(np.clip(codes, 0, clip_code(max_value, grid.f)), grid.f)
    return Value(np.clip(v.real(), 0.0, max_value), None)


def _grouped_conv(
    patches: np.ndarray, kernel: np.ndarray, groups: int, exact_int: bool, wide: bool
) -> np.ndarray:
    kh, kw, cin_g, cout = kernel.shape
    rows = patches.reshape(-1, kh, kw, patches.shape[-1])
    if groups == 1:
        return _matmul(rows.reshape(rows.shape[0], -1), kernel.reshape(-1, cout), exact_int, wide)
    cout_g = cout // groups
    parts = [
        _matmul(
            rows[..., g * cin_g : (g + 1) * cin_g].reshape(rows.shape[0], -1),
            kernel[..., g * cout_g : (g + 1) * cout_g].reshape(-1, cout_g),
            exact_int,
            wide,
        )
        for g in range(groups)
    ]
    return np.concatenate(parts, axis=-1)


def _depthwise(patches: np.ndarray, kernel: np.ndarray, exact_int: bool, wide: bool) -> np.ndarray:
    """Per-channel windows times a (kh, kw, C, M) kernel: (rows, C * M), channel-major as Keras."""
    kh, kw, c, m = kernel.shape
    rows = patches.reshape(-1, kh * kw, c)
    k = kernel.reshape(kh * kw, c, m)
    if exact_int and wide:
        out = np.einsum("rkc,kcm->rcm", rows.astype(np.int64), k.astype(np.int64))
    else:
        out = np.einsum("rkc,kcm->rcm", rows.astype(np.float64), k.astype(np.float64))
        if exact_int:
            out = out.astype(np.int64)
    result: np.ndarray = out.reshape(rows.shape[0], c * m)
    return result


def _pool(x: np.ndarray, node: Node, kind: str) -> np.ndarray:
    """Max or average pooling of (N, H, W, C) or (N, W, C); padding excluded from both, as Keras does."""
    one_d = node.attrs.get("rank", 2) == 1
    x4 = x[:, np.newaxis] if one_d else x
    pool = tuple(node.attrs["pool_size"])  # 1-D layers are stored in 2-D form, (1, size)
    if kind == "max":
        fill = np.iinfo(np.int64).min if np.issubdtype(x4.dtype, np.integer) else -np.inf
        out = _patches(x4, (pool[0], pool[1]), node, fill).max(axis=(3, 4))
    else:
        sums = _patches(x4, (pool[0], pool[1]), node).sum(axis=(3, 4))
        counts = _patches(np.ones_like(x4[:1, ..., :1]), (pool[0], pool[1]), node).sum(axis=(3, 4))
        out = sums / counts
    result: np.ndarray = out[:, 0] if one_d else out
    return result


def _bilinear_taps(old: int, new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, for each output position: the two input positions and the second one's weight
    (half-pixel centres, as TensorFlow)."""
    centres = (np.arange(new) + 0.5) * (old / new) - 0.5
    low = np.floor(centres)
    lo = np.clip(low, 0, old - 1).astype(int)
    hi = np.clip(np.ceil(centres), 0, old - 1).astype(int)
    return lo, hi, centres - low


def _resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """TensorFlow's bilinear resize (half-pixel centres, no antialiasing) of (N, H, W, C), in float64."""
    out = x
    for axis, new in ((1, size[0]), (2, size[1])):
        lo, hi, lerp = _bilinear_taps(out.shape[axis], new)
        shape = [1] * out.ndim
        shape[axis] = new
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        out = a + (b - a) * lerp.reshape(shape)
    return out


def _resize_bound(magnitude: np.ndarray, bound: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The float32 error bound of ``_resize_bilinear``: per axis, the inputs' bounds interpolated, the
    rounding of ``a + (b - a)·t``, and the error of the weight ``t`` itself, which float32 computes from
    a coordinate as large as the input size (``γ_3·size``), times ``|b - a| <= |a| + |b|``."""
    for axis, new in ((1, size[0]), (2, size[1])):
        old = magnitude.shape[axis]
        lo, hi, lerp = _bilinear_taps(old, new)
        shape = [1] * magnitude.ndim
        shape[axis] = new
        t = lerp.reshape(shape)
        ra, rb = np.take(magnitude, lo, axis=axis), np.take(magnitude, hi, axis=axis)
        ba, bb = np.take(bound, lo, axis=axis), np.take(bound, hi, axis=axis)
        bound = ba + (bb - ba) * t + (gamma(3) * old + gamma(4)) * (ra + rb)
        magnitude = ra + (rb - ra) * t
    return bound


# --- how far float32 can be from exact ---------------------------------------------------------

#: float32's unit roundoff: one correctly rounded operation moves a result by at most this fraction.
UNIT_ROUNDOFF = 2.0**-24


def gamma(n: int) -> float:
    """Higham's ``γ_n = n·u / (1 - n·u)``: a float32 sum of ``n`` products is within ``γ_n·Σ|terms|``
    of the exact sum, in any order of summation (Accuracy and Stability of Numerical Algorithms, §3.1)."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1 - nu)


def _bound_array(v: Value) -> np.ndarray:
    return np.broadcast_to(np.asarray(v.bound, dtype=np.float64), v.data.shape)


def float32_bound(node: Node, inputs: list[Value], grid: Grid | None) -> np.ndarray | float:
    """A bound on ``|Keras float32 output - exact output|`` of ``node``, per element, from its inputs'
    bounds: each operation adds its own rounding (``gamma``) and passes on its inputs' errors scaled by
    its sensitivity. A quantizer's output is the model's own code (teacher-forced): 0."""
    op = node.op
    if op in ("input", "quantize", "softmax"):
        return 0.0
    if op in ("relu", "identity"):
        return inputs[0].bound
    if op == "concat":
        return np.concatenate([_bound_array(i) for i in inputs], axis=int(node.attrs["axis"]))
    if op == "add":
        bounds = np.sum([_bound_array(i) for i in inputs], axis=0)
        magnitude = np.sum([np.abs(i.real()) for i in inputs], axis=0)
        return np.asarray(bounds + gamma(len(inputs) - 1) * magnitude)
    if op in ("conv", "depthwise", "separable", "dense"):
        return _weighted_bound(node, inputs[0])
    v = inputs[0]
    b = _bound_array(v)
    if op == "flatten":
        return b.reshape(b.shape[0], -1)
    if op == "reshape":
        return b.reshape(b.shape[0], *node.output_shape)
    if op == "pad":  # the zeros are exact in float32 too
        return _pad(b, node)
    if op == "maxpool":
        return _pool(b, node, "max")
    if op == "global_max":
        return _global(node, b.max(axis=_spatial(b)))
    r = np.abs(v.real())  # the magnitudes each operation's own rounding is relative to
    result: np.ndarray
    if op == "batchnorm":  # the scale's own rounding, the multiply, the shift, the add
        a = node.arrays
        inv = np.abs(a["gamma"] / np.sqrt(a["variance"] + float(node.attrs["epsilon"])))
        result = inv * b + gamma(4) * (r * inv + np.abs(a["mean"]) * inv + np.abs(a["beta"]))
    elif op == "rescale":
        scale, offset = abs(float(node.attrs["scale"])), abs(float(node.attrs["offset"]))
        exact = grid is not None and v.f is not None  # a power-of-two scale of codes
        result = scale * b + (0.0 if exact else gamma(2) * (r * scale + offset))
    elif op == "resize":
        result = _resize_bound(r, b, node.attrs["size"])
    elif op == "avgpool":
        pool = node.attrs["pool_size"]
        result = _pool(b, node, "avg") + gamma(int(pool[0]) * int(pool[1]) + 1) * _pool(r, node, "avg")
    elif op == "global_avg":
        axes = _spatial(r)
        mean = b.mean(axis=axes) + gamma(int(np.prod(r.shape[1:-1])) + 1) * r.mean(axis=axes)
        result = _global(node, mean)
    else:
        raise ValueError(f"node {node.name}: no float32 error bound for operation {op!r}")
    return result


def _weighted_bound(node: Node, v: Value) -> np.ndarray:
    """``Σ|w|·((1 + γ)·δx + γ·|x|) + γ·|bias|`` with ``γ = γ_{n+1}`` (n: the fan-in): the input's own
    error carried through the weights, and the float32 sum of n products and the bias (Higham §3.1).
    The activation (ReLU) does not widen it."""
    g = gamma(node.fan_in + 1)
    magnitude = Value((1 + g) * _bound_array(v) + g * np.abs(v.real()), None)
    absolute = replace(
        node,
        weights=tuple(FixedArray(np.abs(w.codes), w.fmt) for w in node.weights),
        bias=None,
        attrs={**node.attrs, "activation": "linear"},
    )
    result = _weighted(absolute, magnitude, None).data
    if node.bias is not None and not node.bias.fmt.pruned:
        result = result + g * np.abs(node.bias.values())
    return np.asarray(result, dtype=np.float64)


#: Slack (in LSBs) on the comparison of a rounding boundary's distance with its float32 bound: the
#: distance itself is computed in float64.
BOUNDARY_SLACK = 2.0**-30


@dataclass(frozen=True)
class LayerAgreement:
    """One activation quantizer, computed from the model's own inputs: codes that differ, and why."""

    name: str
    codes: int
    differ: int
    max_diff: int
    """Largest difference, in LSBs of the format."""
    max_boundary_distance: float
    """Of the differing codes: how far the exact value lies from a rounding boundary (LSBs)."""
    beyond_bound: int = 0
    """Differing codes whose exact value lies farther from a rounding boundary than the model's float32
    arithmetic can move it (``float32_bound``): float32 does not explain them."""

    @property
    def explained(self) -> bool:
        """Every difference is one LSB where float32 rounding can cross a rounding boundary."""
        return self.differ == 0 or (self.max_diff <= 1 and self.beyond_bound == 0)

    def merge(self, other: LayerAgreement) -> LayerAgreement:
        return LayerAgreement(
            self.name,
            self.codes + other.codes,
            self.differ + other.differ,
            max(self.max_diff, other.max_diff),
            max(self.max_boundary_distance, other.max_boundary_distance),
            self.beyond_bound + other.beyond_bound,
        )


@dataclass(frozen=True)
class Logits:
    """The reference's scores against the model's on the same samples."""

    samples: int
    argmax_equal: int
    identical: int
    """Samples whose every logit is identical."""
    max_diff: float
    flipped_margins: tuple[float, ...] = ()
    """For each sample whose argmax differs: the model's top-1 minus top-2 score (0: a tie)."""
    correct: tuple[int, int] | None = None
    """With labels: how many samples the (reference, model) classify correctly."""

    def merge(self, other: Logits) -> Logits:
        correct = None
        if self.correct is not None and other.correct is not None:
            correct = (self.correct[0] + other.correct[0], self.correct[1] + other.correct[1])
        return Logits(
            self.samples + other.samples,
            self.argmax_equal + other.argmax_equal,
            self.identical + other.identical,
            max(self.max_diff, other.max_diff),
            self.flipped_margins + other.flipped_margins,
            correct,
        )


def compare_logits(reference: np.ndarray, model: np.ndarray, labels: np.ndarray | None = None) -> Logits:
    """Argmax and logits of the reference against the model's (rows are samples); with ``labels``,
    each one's correct predictions too, so a disagreement can be read as an accuracy difference."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    mod = np.asarray(model, dtype=np.float64).reshape(len(model), -1)
    diff = np.abs(ref - mod)
    ref_class, mod_class = np.argmax(ref, axis=1), np.argmax(mod, axis=1)
    flipped = ref_class != mod_class
    top2 = np.sort(mod[flipped], axis=1)[:, -2:] if flipped.any() else np.zeros((0, 2))
    correct = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        correct = (int(np.sum(ref_class == y)), int(np.sum(mod_class == y)))
    return Logits(
        samples=len(ref),
        argmax_equal=int(np.sum(~flipped)),
        identical=int(np.sum(np.all(diff == 0, axis=1))),
        max_diff=float(diff.max()) if diff.size else 0.0,
        flipped_margins=tuple(float(m) for m in top2[:, 1] - top2[:, 0]),
        correct=correct,
    )


@dataclass(frozen=True)
class Agreement:
    """How the integer reference agrees with the Keras quantized model on the same samples.

    ``layers`` and ``layer_logits``: each layer computed from the model's own (quantized) inputs, so
    every difference is that layer's alone. ``end_to_end``: the reference run alone from the input,
    where a difference in one layer carries on into the next.
    """

    layers: tuple[LayerAgreement, ...]
    layer_logits: Logits
    end_to_end: Logits
    logit_lsb: float | None
    """The LSB of the logits' format (None when the scores are not quantized)."""

    @property
    def samples(self) -> int:
        return self.end_to_end.samples

    def in_lsb(self, diff: float) -> float | None:
        return None if self.logit_lsb is None else diff / self.logit_lsb

    @property
    def layers_explained(self) -> bool:
        return all(layer.explained for layer in self.layers)

    @property
    def ok(self) -> bool:
        """Layer by layer: codes identical up to float32 rounding-boundary cases, the same argmax on
        every sample and logits within one LSB of their format."""
        within = (
            self.layer_logits.max_diff == 0
            if self.logit_lsb is None
            else self.layer_logits.max_diff <= self.logit_lsb
        )
        return self.layers_explained and self.layer_logits.argmax_equal == self.samples and within

    def merge(self, other: Agreement) -> Agreement:
        return Agreement(
            layers=tuple(a.merge(b) for a, b in zip(self.layers, other.layers, strict=True)),
            layer_logits=self.layer_logits.merge(other.layer_logits),
            end_to_end=self.end_to_end.merge(other.end_to_end),
            logit_lsb=self.logit_lsb,
        )


def layer_agreement(
    name: str, reference: Value, model_values: np.ndarray, pre: Value, fmt: Format
) -> LayerAgreement:
    """Compare one quantizer's codes (reference vs model) and locate the differences (``pre``: its
    input, with its float32 bound from a teacher-forced ``run``)."""
    assert reference.f is not None
    model_codes = codes_of(model_values, reference.f)
    diff = np.abs(reference.data - model_codes)
    differs = diff != 0
    distance = boundary_distance(pre, fmt)[differs] if differs.any() else np.zeros(0)
    reach = np.ldexp(_bound_array(pre)[differs], fmt.f) + BOUNDARY_SLACK
    return LayerAgreement(
        name=name,
        codes=int(diff.size),
        differ=int(np.count_nonzero(differs)),
        max_diff=int(diff.max()) if diff.size else 0,
        max_boundary_distance=float(distance.max()) if distance.size else 0.0,
        beyond_bound=int(np.count_nonzero(distance > reach)),
    )
