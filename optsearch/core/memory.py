"""Memory as the target hardware counts it: weights in flash, peak activations in RAM. No Keras.

Two layouts, since both exist on real targets:

- ``packed``: values stored back to back at their bitwidth (hls4ml / FPGA memories, bit-packed
  MCU kernels);
- ``aligned``: every value in the smallest C integer that holds it, as a C array of
  ``int8_t``/``int16_t``/``int32_t``/``int64_t`` stores it (1 byte for BW <= 8, 2 for <= 16,
  4 for <= 32, 8 for <= 64).

Pruned tensors (``BW = 1``) count one bit per value when packed, as in the paper's memory sum
(``costs``), and one byte per value when aligned, because the C export still writes them as an
``int8_t`` array of zeros. Float32 values count 32 bits (4 bytes) in both layouts.

Activations are counted per sample (batch 1), buffer by buffer, as an arena planner such as
TFLite Micro's keeps them: a buffer is alive from the step that writes it to the last step that
reads it (the model input from the start, the model output to the end).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from optsearch.core.costs import DEFAULT_INPUT_BITS, FLOAT_BITS, LayerSizes
from optsearch.core.tensors import TensorId, TensorKind

Layout = Literal["packed", "aligned"]
LAYOUTS: tuple[Layout, ...] = ("packed", "aligned")

#: Byte widths of the C integer types, smallest first.
_C_INT_BYTES = (1, 2, 4, 8)


def c_int_bytes(bits: int) -> int:
    """Bytes of the smallest C integer type holding a ``bits``-bit code (``BW = 1`` pruned: 1)."""
    if bits < 1:
        raise ValueError(f"a bitwidth must be at least 1 (1 = pruned), got {bits}")
    for size in _C_INT_BYTES:
        if bits <= 8 * size:
            return size
    raise ValueError(f"{bits} bits do not fit a 64-bit C integer; valid bitwidths: 1..64")


def tensor_bytes(count: int, bits: int, layout: Layout) -> int:
    """Bytes of ``count`` values at ``bits`` bits: ``ceil(count * bits / 8)`` packed, else C-aligned."""
    if count < 0:
        raise ValueError(f"a value count cannot be negative, got {count}")
    if layout == "packed":
        if bits < 1:
            raise ValueError(f"a bitwidth must be at least 1 (1 = pruned), got {bits}")
        return -(-count * bits // 8)
    if layout == "aligned":
        return count * c_int_bytes(bits)
    raise ValueError(f"unknown memory layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")


# --------------------------------------------------------------------------------------------------
# Weights memory (flash / ROM)


@dataclass(frozen=True)
class TensorMemory:
    """One stored tensor (``W_l`` or ``B_l``): its size in both layouts."""

    tensor: TensorId
    count: int
    bits: int
    packed_bits: int
    """``count * bits``."""
    aligned_bytes: int
    """``count`` values in the smallest C integer that holds ``bits`` bits."""


@dataclass(frozen=True)
class WeightsMemory:
    """Flash/ROM for every weight and bias of the quantizable layers."""

    tensors: tuple[TensorMemory, ...]
    packed_bits: int
    packed_bytes: int
    """``ceil(packed_bits / 8)``: the whole network packed back to back, rounded up once."""
    aligned_bytes: int
    """Sum over tensors of ``count * c_int_bytes(bits)``."""


def weights_memory(layers: Sequence[LayerSizes], bits: Mapping[TensorId, int]) -> WeightsMemory:
    """Weights memory of the ``W`` and ``B`` tensors at ``bits`` (``costs.bitwidths(formats)``).

    Counts what eq. 7 counts for weights and biases; parameters kept in float (an unfolded
    BatchNorm, PReLU) are not among them.
    """
    rows: list[TensorMemory] = []
    for layer in layers:
        kinds: tuple[TensorKind, ...] = ("W", "B") if layer.has_bias else ("W",)
        for kind in kinds:
            tensor = TensorId(layer.name, kind)
            if tensor not in bits:
                raise KeyError(f"no bitwidth for tensor {tensor}")
            count, bw = layer.value_count(kind), bits[tensor]
            rows.append(TensorMemory(tensor, count, bw, count * bw, tensor_bytes(count, bw, "aligned")))
    packed = sum(r.packed_bits for r in rows)
    return WeightsMemory(
        tensors=tuple(rows),
        packed_bits=packed,
        packed_bytes=-(-packed // 8),
        aligned_bytes=sum(r.aligned_bytes for r in rows),
    )


# --------------------------------------------------------------------------------------------------
# Peak activation memory (RAM)


@dataclass(frozen=True)
class Buffer:
    """One activation tensor that sits in RAM: ``elements`` values per sample."""

    name: str
    elements: int
    quantizer: TensorId | None = None
    """The activation tensor ``A_l`` whose format this buffer is stored at (None: not quantized)."""


@dataclass(frozen=True)
class Step:
    """One operation of the schedule: reads ``reads``, writes ``writes`` (buffer names)."""

    name: str
    reads: tuple[str, ...]
    writes: str
    layers: tuple[str, ...] = ()
    """The model layers this step runs (several when an activation chain is fused into its layer)."""


@dataclass(frozen=True)
class Schedule:
    """The operations of a network in execution order and the buffers they pass between them."""

    input: str
    output: str
    buffers: tuple[Buffer, ...]
    steps: tuple[Step, ...]

    def buffer(self, name: str) -> Buffer:
        for buffer in self.buffers:
            if buffer.name == name:
                return buffer
        raise KeyError(f"schedule has no buffer {name!r}")


@dataclass(frozen=True)
class ActivationPeak:
    """The largest set of activation buffers alive at once, in one layout."""

    layout: Layout
    bytes: int
    step: str
    """The step at which the peak occurs (the first one when several tie)."""
    step_index: int
    buffers: dict[str, int]
    """The buffers alive at that step and their bytes, in schedule order."""


def buffer_bits(
    schedule: Schedule, bits: Mapping[TensorId, int], input_bits: int = DEFAULT_INPUT_BITS
) -> dict[str, int]:
    """The bitwidth each buffer is stored at, given the ``A`` bitwidths ``bits``.

    - the model input: ``input_bits``;
    - a buffer an activation quantizer writes: that format's bitwidth (32, float, when ``bits``
      has no entry for it: that tensor stays in float);
    - any other buffer (pooling, flatten, concat, add, average, BatchNorm, rescaling, softmax):
      the widest bitwidth among the buffers its step reads. Layers that do not change precision
      keep it exactly; for those that compute new values this counts the result requantized to
      its inputs' format, as an integer deployment (TFLite int8) stores it.
    """
    result = {schedule.input: input_bits}
    by_name = {b.name: b for b in schedule.buffers}
    for step in schedule.steps:
        buffer = by_name[step.writes]
        if buffer.quantizer is not None:
            result[buffer.name] = bits.get(buffer.quantizer, FLOAT_BITS)
        else:
            result[buffer.name] = max((result[r] for r in step.reads), default=input_bits)
    return result


def uniform_buffer_bits(schedule: Schedule, bw: int) -> dict[str, int]:
    """Every buffer (the input too) at ``bw`` bits: the 8-bit and float32 baselines."""
    return {b.name: bw for b in schedule.buffers}


def lifetimes(schedule: Schedule) -> dict[str, tuple[int, int]]:
    """``(first, last)`` step index at which each buffer is alive (inclusive).

    Written at ``first`` (the input: 0), last read at ``last`` (the output: the last step; a buffer
    nothing reads: its own step).
    """
    if not schedule.steps:
        raise ValueError("a schedule needs at least one step")
    names = {b.name for b in schedule.buffers}
    if schedule.input not in names or schedule.output not in names:
        raise ValueError(f"the input {schedule.input!r} and output {schedule.output!r} must be buffers")
    span: dict[str, list[int]] = {schedule.input: [0, 0]}
    for i, step in enumerate(schedule.steps):
        for read in step.reads:
            if read not in span:
                raise ValueError(f"step {step.name!r} reads {read!r} before any step writes it")
            span[read][1] = i
        if step.writes in span:
            raise ValueError(f"buffer {step.writes!r} is written twice (by step {step.name!r})")
        if step.writes not in names:
            raise ValueError(f"step {step.name!r} writes {step.writes!r}, which is not a buffer")
        span[step.writes] = [i, i]
    if schedule.output not in span:
        raise ValueError(f"no step writes the output {schedule.output!r}")
    span[schedule.output][1] = len(schedule.steps) - 1
    unwritten = sorted(names - span.keys())
    if unwritten:
        raise ValueError(f"no step writes the buffers {', '.join(unwritten)}")
    return {name: (first, last) for name, (first, last) in span.items()}


def peak_activation_memory(
    schedule: Schedule, bits: Mapping[str, int], layout: Layout = "packed"
) -> ActivationPeak:
    """The peak of the summed sizes of live buffers over the steps, each buffer rounded to whole bytes.

    ``bits`` gives every buffer's bitwidth (``buffer_bits`` or ``uniform_buffer_bits``).
    """
    span = lifetimes(schedule)
    sizes = {b.name: tensor_bytes(b.elements, bits[b.name], layout) for b in schedule.buffers}
    best: ActivationPeak | None = None
    for i, step in enumerate(schedule.steps):
        live = {name: size for name, size in sizes.items() if span[name][0] <= i <= span[name][1]}
        total = sum(live.values())
        if best is None or total > best.bytes:
            best = ActivationPeak(layout, total, step.name, i, live)
    assert best is not None  # lifetimes() rejects a schedule without steps
    return best


__all__ = [
    "LAYOUTS",
    "ActivationPeak",
    "Buffer",
    "Layout",
    "Schedule",
    "Step",
    "TensorMemory",
    "WeightsMemory",
    "buffer_bits",
    "c_int_bytes",
    "lifetimes",
    "peak_activation_memory",
    "tensor_bytes",
    "uniform_buffer_bits",
]
