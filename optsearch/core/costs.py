"""Memory and multiply cost of a quantized network (spec §8, eq. 7). No Keras: sizes come in as data.

- memory: ``sum_{p,l} BW_lp * n(p_l)`` bits, ``n(A_l)`` the output values per sample;
- multiply cost as the paper reports it: ``sum_l MACs_l * BW_lW * BW_lA`` (the layer's *output*
  activation bitwidth);
- bit operations (BOPs): ``sum_l MACs_l * BW_lW * BW_in_l`` with the *input* bitwidth (the producing
  layer's activation format, or the network input's bitwidth).

``BW = 1`` (pruned) counts as one bit everywhere. Float32 counts 32 bits everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TENSOR_KINDS, TensorId, TensorKind

FLOAT_BITS = 32
DEFAULT_INPUT_BITS = 8


class LayerSizes(Protocol):
    """What the cost model needs to know about one quantizable layer (``graph.QuantizableLayer``)."""

    @property
    def name(self) -> str: ...
    @property
    def has_bias(self) -> bool: ...
    @property
    def macs(self) -> int: ...
    @property
    def input_sources(self) -> tuple[str, ...]: ...
    def value_count(self, kind: TensorKind) -> int: ...


@dataclass(frozen=True)
class LayerCost:
    """Costs of one layer under one assignment of bitwidths."""

    layer: str
    memory_bits: dict[TensorKind, int]
    """Per tensor type ``W``/``B``/``A``: bits to store it (activations: per sample)."""
    multiply_cost: int
    """``MACs * BW_W * BW_A,out`` (the paper's figure)."""
    bops: int
    """``MACs * BW_W * BW_in``."""


@dataclass(frozen=True)
class NetworkCost:
    """Costs of a network: per layer, per tensor type, and totals."""

    layers: tuple[LayerCost, ...]
    memory_bits_by_kind: dict[TensorKind, int] = field(default_factory=dict)
    memory_bits: int = 0
    multiply_cost: int = 0
    bops: int = 0

    @property
    def memory_bytes(self) -> float:
        return self.memory_bits / 8

    def saving(self, baseline: NetworkCost) -> dict[str, float]:
        """Relative savings against ``baseline`` (0.5 = half the cost), per measure."""
        return savings(
            (self.memory_bits, self.multiply_cost, self.bops),
            (baseline.memory_bits, baseline.multiply_cost, baseline.bops),
        )


def savings(found: tuple[float, float, float], base: tuple[float, float, float]) -> dict[str, float]:
    """The one savings formula: ``1 - found / base`` for memory, multiply cost and BOPs (0.5 = half).

    ``found`` and ``base`` are ``(memory bits, multiply cost, BOPs)`` of two networks.
    """
    return {name: 1.0 - f / b for name, f, b in zip(SAVING_MEASURES, found, base, strict=True)}


#: The measures ``savings`` compares, in its tuples' order.
SAVING_MEASURES = ("memory", "multiply_cost", "bops")


def bitwidths(formats: Mapping[TensorId, Format]) -> dict[TensorId, int]:
    """The bitwidth of each tensor (``BW = 1`` pruned counts one bit)."""
    return {tensor: fmt.bw for tensor, fmt in formats.items()}


def tensor_memory_bits(counts: Mapping[TensorKind, int], bits: Mapping[TensorKind, int]) -> int:
    """``sum_p BW_lp * n(p_l)`` over one layer's tensors (eq. 7's memory term; activations per sample)."""
    return sum(counts[kind] * bw for kind, bw in bits.items())


def multiply_cost(macs: int, bw_w: int, bw_a: int) -> int:
    """The paper's multiply cost of one layer: ``MACs * BW_W * BW_A`` (eq. 7), with ``BW_A`` the layer's
    output activations (BOPs use its input's bitwidth instead)."""
    return macs * bw_w * bw_a


def network_cost(
    layers: Sequence[LayerSizes],
    bits: Mapping[TensorId, int],
    input_bits: int = DEFAULT_INPUT_BITS,
) -> NetworkCost:
    """Memory, multiply cost and BOPs for the bitwidths ``bits`` of every tensor (eq. 7)."""
    costs: list[LayerCost] = []
    for layer in layers:
        memory = {
            kind: tensor_memory_bits(
                {kind: layer.value_count(kind)}, {kind: bits[TensorId(layer.name, kind)]}
            )
            for kind in TENSOR_KINDS
            if kind != "B" or layer.has_bias
        }
        bw_w = bits[TensorId(layer.name, "W")]
        bw_out = bits[TensorId(layer.name, "A")]
        sources = [bits[TensorId(source, "A")] for source in layer.input_sources]
        bw_in = max(sources) if sources else input_bits
        costs.append(
            LayerCost(layer.name, memory, multiply_cost(layer.macs, bw_w, bw_out), layer.macs * bw_w * bw_in)
        )
    by_kind = {kind: sum(c.memory_bits.get(kind, 0) for c in costs) for kind in TENSOR_KINDS}
    return NetworkCost(
        layers=tuple(costs),
        memory_bits_by_kind=by_kind,
        memory_bits=sum(by_kind.values()),
        multiply_cost=sum(c.multiply_cost for c in costs),
        bops=sum(c.bops for c in costs),
    )


def uniform_bits(layers: Sequence[LayerSizes], bw: int) -> dict[TensorId, int]:
    """Every tensor at ``bw`` bits: the float32 (32) and uniform 8-bit baselines (spec §8)."""
    return {
        TensorId(layer.name, kind): bw
        for layer in layers
        for kind in TENSOR_KINDS
        if kind != "B" or layer.has_bias
    }
