"""Memory, multiply cost and BOPs (spec §8, eq. 7) on hand-computed examples."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from optsearch.core.costs import FLOAT_BITS, network_cost, uniform_bits
from optsearch.core.tensors import TensorId, TensorKind


@dataclass(frozen=True)
class Sizes:
    name: str
    has_bias: bool
    macs: int
    input_sources: tuple[str, ...]
    counts: tuple[int, int, int]

    def value_count(self, kind: TensorKind) -> int:
        return dict(zip("WBA", self.counts, strict=True))[kind]


LAYERS = [
    Sizes("c1", True, macs=1000, input_sources=(), counts=(90, 10, 400)),
    Sizes("c2", False, macs=2000, input_sources=("c1",), counts=(200, 0, 100)),
    Sizes("d", True, macs=300, input_sources=("c1", "c2"), counts=(300, 3, 3)),
]


def _bits(**by_tensor: int) -> dict[TensorId, int]:
    return {TensorId.parse(k.replace("_", ":")): v for k, v in by_tensor.items()}


def test_memory_multiply_cost_and_bops() -> None:
    bits = _bits(c1_W=4, c1_B=1, c1_A=6, c2_W=3, c2_A=5, d_W=5, d_B=2, d_A=7)
    cost = network_cost(LAYERS, bits, input_bits=8)
    assert cost.memory_bits_by_kind == {
        "W": 4 * 90 + 3 * 200 + 5 * 300,
        "B": 1 * 10 + 2 * 3,
        "A": 6 * 400 + 5 * 100 + 7 * 3,
    }
    assert cost.memory_bits == sum(cost.memory_bits_by_kind.values())
    assert cost.memory_bytes == cost.memory_bits / 8
    # The paper's multiply cost uses each layer's own output activation bitwidth.
    assert cost.multiply_cost == 1000 * 4 * 6 + 2000 * 3 * 5 + 300 * 5 * 7
    # BOPs use the input: the network input (8), c1's activations (6), max of c1 and c2 (6).
    assert cost.bops == 1000 * 4 * 8 + 2000 * 3 * 6 + 300 * 5 * 6
    assert [c.layer for c in cost.layers] == ["c1", "c2", "d"]
    assert "B" not in cost.layers[1].memory_bits


def test_baselines_and_savings() -> None:
    float_cost = network_cost(LAYERS, uniform_bits(LAYERS, FLOAT_BITS), input_bits=FLOAT_BITS)
    eight = network_cost(LAYERS, uniform_bits(LAYERS, 8))
    assert float_cost.memory_bits == 4 * eight.memory_bits
    assert eight.saving(float_cost) == pytest.approx(
        {"memory": 0.75, "multiply_cost": 0.9375, "bops": 0.9375}
    )
    assert TensorId("c2", "B") not in uniform_bits(LAYERS, 8)


def test_pruned_tensors_count_one_bit() -> None:
    bits = uniform_bits(LAYERS, 1)
    cost = network_cost(LAYERS, bits, input_bits=1)
    assert cost.memory_bits == sum(sum(layer.counts) for layer in LAYERS)
    assert cost.multiply_cost == cost.bops == 1000 + 2000 + 300
