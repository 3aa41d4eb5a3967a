"""Weights memory and peak activation memory (issue 22) on hand-computed schedules and tiny models."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optsearch.core.costs import FLOAT_BITS, bitwidths
from optsearch.core.fixedpoint import Format
from optsearch.core.memory import (
    Buffer,
    Schedule,
    Step,
    buffer_bits,
    c_int_bytes,
    lifetimes,
    peak_activation_memory,
    tensor_bytes,
    uniform_buffer_bits,
    weights_memory,
)
from optsearch.core.tensors import TensorId, TensorKind
from optsearch.model.graph import find_quantizable_layers
from optsearch.model.schedule import activation_schedule

L = keras.layers


def _formats(**by_tensor: int) -> dict[TensorId, Format]:
    """``c1_W=5`` -> ``{TensorId("c1", "W"): Format(5, 0)}`` (F does not matter for memory)."""
    return {TensorId.parse(k.replace("_", ":")): Format(bw, 0) for k, bw in by_tensor.items()}


# --------------------------------------------------------------------------------------------------
# Sizes of single tensors


@pytest.mark.parametrize(
    ("bits", "size"), [(1, 1), (2, 1), (8, 1), (9, 2), (16, 2), (17, 4), (32, 4), (33, 8), (64, 8)]
)
def test_c_int_bytes(bits: int, size: int) -> None:
    assert c_int_bytes(bits) == size


def test_tensor_bytes_rounds_up_and_rejects_bad_input() -> None:
    assert tensor_bytes(10, 3, "packed") == 4  # 30 bits
    assert tensor_bytes(8, 1, "packed") == 1  # pruned: one bit per value
    assert tensor_bytes(8, 1, "aligned") == 8  # pruned: an int8_t array of zeros, as the C export writes
    assert tensor_bytes(0, 7, "packed") == 0
    assert tensor_bytes(5, 12, "aligned") == 10
    with pytest.raises(ValueError, match="64-bit"):
        c_int_bytes(65)
    with pytest.raises(ValueError, match="at least 1"):
        tensor_bytes(3, 0, "packed")
    with pytest.raises(ValueError, match="layout"):
        tensor_bytes(3, 8, "bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The pure peak computation on hand-built schedules

# x -> s1 -> a -> s2 -> b -> s3 -> c -> s4(a, c) -> d -> s5 -> out: `a` skips over s2 and s3.
SKIP = Schedule(
    input="x",
    output="out",
    buffers=(
        Buffer("x", 10),
        Buffer("a", 50),
        Buffer("b", 40),
        Buffer("c", 30),
        Buffer("d", 20),
        Buffer("out", 10),
    ),
    steps=(
        Step("s1", ("x",), "a"),
        Step("s2", ("a",), "b"),
        Step("s3", ("b",), "c"),
        Step("s4", ("a", "c"), "d"),
        Step("s5", ("d",), "out"),
    ),
)


def test_lifetimes_keep_a_skip_connection_alive() -> None:
    assert lifetimes(SKIP) == {
        "x": (0, 0),
        "a": (0, 3),  # written by s1, last read by s4
        "b": (1, 2),
        "c": (2, 3),
        "d": (3, 4),
        "out": (4, 4),
    }


def test_peak_with_a_skip_connection() -> None:
    # At 8 bits a buffer's bytes are its elements:
    #   s1: x + a = 60; s2: a + b = 90; s3: a + b + c = 120; s4: a + c + d = 100; s5: d + out = 30.
    # s3 does not read `a`, but `a` is alive there because s4 still needs it.
    peak = peak_activation_memory(SKIP, uniform_buffer_bits(SKIP, 8))
    assert (peak.bytes, peak.step, peak.step_index) == (120, "s3", 2)
    assert peak.buffers == {"a": 50, "b": 40, "c": 30}
    assert peak_activation_memory(SKIP, uniform_buffer_bits(SKIP, 8), "aligned").bytes == 120
    assert peak_activation_memory(SKIP, uniform_buffer_bits(SKIP, FLOAT_BITS)).bytes == 480


def test_peak_mixed_bits_packed_and_aligned() -> None:
    bits = {"x": 8, "a": 3, "b": 12, "c": 5, "d": 1, "out": 16}
    # packed, each buffer rounded up: x 80 b = 10, a 150 b -> 19, b 480 b = 60, c 150 b -> 19,
    # d 20 b -> 3, out 160 b = 20. Steps: 29, 79, 98, 41, 23.
    packed = peak_activation_memory(SKIP, bits, "packed")
    assert (packed.bytes, packed.step) == (98, "s3")
    assert packed.buffers == {"a": 19, "b": 60, "c": 19}
    # aligned: x 10, a 50, b 80 (int16), c 30, d 20 (pruned: int8), out 20. Steps: 60, 130, 160, 100, 40.
    aligned = peak_activation_memory(SKIP, bits, "aligned")
    assert (aligned.bytes, aligned.step) == (160, "s3")


def test_buffer_bits_rule() -> None:
    schedule = Schedule(
        input="in",
        output="add",
        buffers=(
            Buffer("in", 4),
            Buffer("q1", 4, TensorId("c1", "A")),
            Buffer("pool", 2),
            Buffer("q2", 2, TensorId("c2", "A")),
            Buffer("add", 2),
        ),
        steps=(
            Step("c1", ("in",), "q1"),
            Step("pool", ("q1",), "pool"),
            Step("c2", ("pool",), "q2"),
            Step("add", ("pool", "q2"), "add"),
        ),
    )
    bits = {TensorId("c1", "A"): 3, TensorId("c2", "A"): 7}
    # in: the input bits; q1, q2: their formats; pool keeps q1's 3; add takes the widest input, 7.
    assert buffer_bits(schedule, bits, input_bits=6) == {"in": 6, "q1": 3, "pool": 3, "q2": 7, "add": 7}
    # An activation tensor without a format stays in float, and so does what is computed from it.
    assert buffer_bits(schedule, {TensorId("c1", "A"): 3}) == {
        "in": 8,
        "q1": 3,
        "pool": 3,
        "q2": FLOAT_BITS,
        "add": FLOAT_BITS,
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "at least one step"),
        ((Step("s", ("y",), "y"),), "before any step writes it"),
        ((Step("s", ("x",), "y"), Step("t", ("y",), "y")), "written twice"),
        ((Step("s", ("x",), "z"),), "not a buffer"),
    ],
)
def test_invalid_schedules(steps: tuple[Step, ...], message: str) -> None:
    schedule = Schedule("x", "y", (Buffer("x", 1), Buffer("y", 1)), steps)
    with pytest.raises(ValueError, match=message):
        lifetimes(schedule)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Schedule, dict[str, int]]:
    """A random DAG in topological order: every step reads some earlier buffers and writes a new one."""
    n = draw(st.integers(1, 8))
    names = ["in", *(f"t{i}" for i in range(n))]
    steps = []
    for i in range(n):
        earlier = names[: i + 1]
        reads = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True))
        steps.append(Step(f"s{i}", tuple(reads), names[i + 1]))
    buffers = tuple(Buffer(name, draw(st.integers(0, 500))) for name in names)
    bits = {name: draw(st.integers(1, 32)) for name in names}
    return Schedule("in", names[-1], buffers, tuple(steps)), bits


@given(schedules(), st.sampled_from(["packed", "aligned"]))
def test_peak_bounds(drawn: tuple[Schedule, dict[str, int]], layout: str) -> None:
    schedule, bits = drawn
    size = {b.name: tensor_bytes(b.elements, bits[b.name], layout) for b in schedule.buffers}  # type: ignore[arg-type]
    peak = peak_activation_memory(schedule, bits, layout)  # type: ignore[arg-type]
    largest_step = max(sum(size[name] for name in {*step.reads, step.writes}) for step in schedule.steps)
    assert largest_step <= peak.bytes <= sum(size.values())
    assert peak.bytes == sum(peak.buffers.values())
    assert schedule.steps[peak.step_index].name == peak.step


@dataclass(frozen=True)
class Sizes:
    name: str
    has_bias: bool
    counts: tuple[int, int]
    macs: int = 0
    input_sources: tuple[str, ...] = ()

    def value_count(self, kind: TensorKind) -> int:
        return {"W": self.counts[0], "B": self.counts[1], "A": 0}[kind]


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 100), st.integers(1, 32), st.integers(1, 32)),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_weights_packed_never_exceeds_aligned(rows: list[tuple[int, int, int, int]], bias: bool) -> None:
    layers = [Sizes(f"l{i}", bias, (w, b)) for i, (w, b, _, _) in enumerate(rows)]
    bits = {}
    for i, (_, _, bw_w, bw_b) in enumerate(rows):
        bits[TensorId(f"l{i}", "W")] = bw_w
        bits[TensorId(f"l{i}", "B")] = bw_b
    memory = weights_memory(layers, bits)
    assert memory.packed_bytes <= memory.aligned_bytes
    assert memory.packed_bits <= 8 * memory.packed_bytes < memory.packed_bits + 8


# --------------------------------------------------------------------------------------------------
# Tiny Keras models, numbers by hand


def _sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),  # 64 values
            L.Conv2D(4, 3, name="c1"),  # 6x6x4 = 144; W 3*3*1*4 = 36, B 4
            L.ReLU(name="r1"),  # c1's activation point: fused into c1's step
            L.MaxPooling2D(2, name="p"),  # 3x3x4 = 36
            L.Flatten(name="f"),  # 36
            L.Dense(10, name="d"),  # 10; W 36*10 = 360, B 10
        ]
    )


def test_sequential_model() -> None:
    model = _sequential()
    layers = find_quantizable_layers(model)
    formats = _formats(c1_W=5, c1_B=1, c1_A=6, d_W=3, d_B=13, d_A=9)

    weights = weights_memory(layers, bitwidths(formats))
    # packed: 36*5 + 4*1 + 360*3 + 10*13 = 180 + 4 + 1080 + 130 = 1394 bits -> 174.25 -> 175 bytes.
    assert (weights.packed_bits, weights.packed_bytes) == (1394, 175)
    # aligned: 36 (int8) + 4 (pruned, int8) + 360 (int8) + 10 * 2 (int16) = 420 bytes.
    assert weights.aligned_bytes == 420

    schedule = activation_schedule(model, layers)
    input_name = schedule.input
    assert [s.name for s in schedule.steps] == ["c1", "p", "f", "d"]
    assert schedule.steps[0].layers == ("c1", "r1")
    assert [(b.name, b.elements) for b in schedule.buffers] == [
        (input_name, 64),
        ("r1", 144),
        ("p", 36),
        ("f", 36),
        ("d", 10),
    ]
    bits = buffer_bits(schedule, bitwidths(formats))
    assert bits == {input_name: 8, "r1": 6, "p": 6, "f": 6, "d": 9}
    # packed: input 64, r1 144*6 b = 108, p and f 36*6 b = 27, d 90 b -> 12.
    # Steps: c1 64 + 108 = 172; p 108 + 27 = 135; f 27 + 27 = 54; d 27 + 12 = 39.
    packed = peak_activation_memory(schedule, bits)
    assert (packed.bytes, packed.step, packed.buffers) == (172, "c1", {input_name: 64, "r1": 108})
    # aligned: input 64, r1 144, p 36, f 36, d 20 (int16). Steps: 208, 180, 72, 56.
    assert peak_activation_memory(schedule, bits, "aligned").bytes == 208
    assert peak_activation_memory(schedule, uniform_buffer_bits(schedule, 8)).bytes == 208
    assert peak_activation_memory(schedule, uniform_buffer_bits(schedule, FLOAT_BITS)).bytes == 832


def _branched() -> keras.Model:
    x = keras.Input((4, 4, 2), name="x")  # 32 values
    a = L.Conv2D(3, 1, activation="relu", name="a")(x)  # 4x4x3 = 48; W 1*1*2*3 = 6, B 3
    b = L.Conv2D(3, 3, padding="same", use_bias=False, name="b")(x)  # 48; W 3*3*2*3 = 54
    s = L.Add(name="add")([a, b])  # 48
    c = L.Concatenate(name="cat")([s, a])  # 4x4x6 = 96; reads `a` again: a skip over b and add
    g = L.GlobalAveragePooling2D(name="gap")(c)  # 6
    out = L.Dense(2, name="d")(g)  # 2; W 6*2 = 12, B 2
    return keras.Model(x, out)


def test_branched_model() -> None:
    model = _branched()
    layers = find_quantizable_layers(model)
    formats = _formats(a_W=4, a_B=8, a_A=4, b_W=6, b_A=5, d_W=2, d_B=16, d_A=12)

    weights = weights_memory(layers, bitwidths(formats))
    # packed: 6*4 + 3*8 + 54*6 + 12*2 + 2*16 = 24 + 24 + 324 + 24 + 32 = 428 bits -> 53.5 -> 54 bytes.
    assert (weights.packed_bits, weights.packed_bytes) == (428, 54)
    # aligned: 6 + 3 + 54 + 12 + 2 * 2 = 79 bytes.
    assert weights.aligned_bytes == 79
    assert [str(t.tensor) for t in weights.tensors] == ["a:W", "a:B", "b:W", "d:W", "d:B"]

    schedule = activation_schedule(model, layers)
    # model.layers order: x, a, b, add, cat, gap, d.
    assert [(s.name, s.reads, s.writes) for s in schedule.steps] == [
        ("a", ("x",), "a"),
        ("b", ("x",), "b"),
        ("add", ("a", "b"), "add"),
        ("cat", ("add", "a"), "cat"),
        ("gap", ("cat",), "gap"),
        ("d", ("gap",), "d"),
    ]
    bits = buffer_bits(schedule, bitwidths(formats))
    # add and cat take their widest input (5); gap keeps cat's 5.
    assert bits == {"x": 8, "a": 4, "b": 5, "add": 5, "cat": 5, "gap": 5, "d": 12}
    # packed: x 32, a 48*4 b = 24, b 48*5 b = 30, add 30, cat 96*5 b = 60, gap 30 b -> 4, d 24 b = 3.
    # Alive: x [a, b], a [a, cat], b [b, add], add [add, cat], cat [cat, gap], gap [gap, d], d [d].
    # Steps: a 32 + 24 = 56; b 32 + 24 + 30 = 86; add 24 + 30 + 30 = 84; cat 24 + 30 + 60 = 114;
    # gap 60 + 4 = 64; d 4 + 3 = 7.
    packed = peak_activation_memory(schedule, bits)
    assert (packed.bytes, packed.step, packed.buffers) == (114, "cat", {"a": 24, "add": 30, "cat": 60})
    # aligned: x 32, a 48, b 48, add 48, cat 96, gap 6, d 4. Steps: 80, 128, 144, 192, 102, 10.
    assert peak_activation_memory(schedule, bits, "aligned").bytes == 192
    # 8 bits everywhere: as aligned but d is 2 bytes; the peak is the same, at cat.
    eight = peak_activation_memory(schedule, uniform_buffer_bits(schedule, 8))
    assert (eight.bytes, eight.step) == (192, "cat")
    assert peak_activation_memory(schedule, uniform_buffer_bits(schedule, FLOAT_BITS)).bytes == 4 * 192


def test_fused_chains_dropout_and_softmax_split() -> None:
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(5, name="h"),
            L.BatchNormalization(name="bn"),
            L.ReLU(name="r"),  # h's activation point: h, bn, r are one step
            L.Dropout(0.5, name="drop"),  # identity at inference: no step, no buffer
            L.Dense(3, activation="softmax", name="out"),  # split: logits, then softmax
        ]
    )
    schedule = activation_schedule(model)
    assert [(s.name, s.writes, s.layers) for s in schedule.steps] == [
        ("h", "r", ("h", "bn", "r")),
        ("out", "out", ("out",)),
        ("out_softmax", "out_softmax", ("out",)),
    ]
    assert schedule.steps[1].reads == ("r",)
    assert schedule.output == "out_softmax"
    assert [b.quantizer for b in schedule.buffers] == [None, TensorId("h", "A"), TensorId("out", "A"), None]
    bits = buffer_bits(schedule, bitwidths(_formats(h_A=4, out_A=10)))
    assert (bits["out"], bits["out_softmax"]) == (10, 10)
