"""Loss-budget allocation across the layers of one tensor type (spec §7, eq. 9). numpy only.

``eps_lp = start_p + (end_p - start_p) * f(l) / f(L)`` for positions ``l = 1..L`` in search order,
with ``start_p`` and ``end_p`` given as fractions of the total budget ``eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from optsearch.core.tensors import TensorKind

Scheme = Literal["constant", "log", "linear", "quadratic", "exponential"]
SCHEMES: tuple[Scheme, ...] = ("constant", "log", "linear", "quadratic", "exponential")

_GROWTH: dict[Scheme, Callable[[int], float]] = {
    "constant": lambda x: 1.0,
    "log": lambda x: math.log(x),
    "linear": lambda x: float(x),
    "quadratic": lambda x: float(x * x),
    "exponential": lambda x: math.ldexp(1.0, x),
}


@dataclass(frozen=True)
class Allocation:
    """How one tensor type's share of the budget grows with the layer's position (eq. 9).

    ``start`` and ``end`` are fractions of the total ``eps``: the paper's weights are linear over
    ``(0, 1/2]``, its biases constant at ``1/2``, its activations linear over ``(1/2, 1]``.
    """

    scheme: Scheme = "linear"
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown allocation scheme {self.scheme!r}; valid: {', '.join(SCHEMES)}")
        for name, value in (("start", self.start), ("end", self.end)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"allocation {name} must be a non-negative fraction of eps, got {value!r}")

    def budgets(self, eps: float, count: int) -> list[float]:
        """``eps_lp`` for positions ``l = 1..count`` (eq. 9)."""
        if count < 1:
            return []
        growth = _GROWTH[self.scheme]
        start, end = self.start * eps, self.end * eps
        last = growth(count)
        if last == 0.0:  # log with L = 1: the only layer gets the end of the range (spec §7)
            return [end]
        return [start + (end - start) * growth(position) / last for position in range(1, count + 1)]


#: The paper's final method (spec §7): W linear (0, eps/2], B constant eps/2, A linear (eps/2, eps].
PAPER_ALLOCATION: dict[TensorKind, Allocation] = {
    "W": Allocation("linear", 0.0, 0.5),
    "B": Allocation("constant", 0.5, 0.5),
    "A": Allocation("linear", 0.5, 1.0),
}


def uniform_allocation(scheme: Scheme) -> dict[TensorKind, Allocation]:
    """The paper's ranges per type with one scheme for all three (for comparing schemes, §VI-C)."""
    return {kind: Allocation(scheme, rule.start, rule.end) for kind, rule in PAPER_ALLOCATION.items()}


def constant_allocation(fraction: float = 1.0) -> dict[TensorKind, Allocation]:
    """Every tensor gets ``fraction * eps``: the independent search's per-tensor budget (spec §7)."""
    return {kind: Allocation("constant", fraction, fraction) for kind in PAPER_ALLOCATION}


def check_allocation(allocation: Mapping[TensorKind, Allocation]) -> None:
    """Every tensor type must have a rule."""
    missing = [kind for kind in ("W", "B", "A") if kind not in allocation]
    if missing:
        raise ValueError(f"allocation has no rule for tensor type(s) {', '.join(missing)}")
