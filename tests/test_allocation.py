"""Loss-budget allocation (spec §7, eq. 9)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optsearch.core.allocation import PAPER_ALLOCATION, SCHEMES, Allocation, uniform_allocation


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("constant", [0.01, 0.01, 0.01, 0.01]),
        ("linear", [0.0025, 0.005, 0.0075, 0.01]),
        ("quadratic", [0.01 / 16, 0.01 * 4 / 16, 0.01 * 9 / 16, 0.01]),
        ("exponential", [0.01 * 2 / 16, 0.01 * 4 / 16, 0.01 * 8 / 16, 0.01]),
        ("log", [0.0, 0.01 * math.log(2) / math.log(4), 0.01 * math.log(3) / math.log(4), 0.01]),
    ],
)
def test_schemes_from_zero(scheme: str, expected: list[float]) -> None:
    assert Allocation(scheme, 0.0, 1.0).budgets(0.01, 4) == pytest.approx(expected)  # type: ignore[arg-type]


def test_paper_final_method() -> None:
    """W linear (0, eps/2] (layer 1 gets eps/(2L)), B constant eps/2, A linear (eps/2, eps]."""
    eps, layers = 0.01, 5
    w = PAPER_ALLOCATION["W"].budgets(eps, layers)
    assert w[0] == pytest.approx(eps / (2 * layers)) and w[-1] == pytest.approx(eps / 2)
    assert PAPER_ALLOCATION["B"].budgets(eps, layers) == pytest.approx([eps / 2] * layers)
    a = PAPER_ALLOCATION["A"].budgets(eps, layers)
    assert a[0] == pytest.approx(eps / 2 + eps / (2 * layers)) and a[-1] == pytest.approx(eps)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_single_layer_gets_the_end_of_the_range(scheme: str) -> None:
    """L = 1 must work for every scheme; log's f(1) = 0 is the special case (spec §7)."""
    assert Allocation(scheme, 0.25, 0.75).budgets(0.02, 1) == pytest.approx([0.015])  # type: ignore[arg-type]


@given(st.sampled_from(SCHEMES), st.integers(1, 30), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_budgets_are_monotone_and_end_at_end(scheme: str, count: int, a: float, b: float) -> None:
    start, end = min(a, b), max(a, b)
    budgets = Allocation(scheme, start, end).budgets(0.01, count)  # type: ignore[arg-type]
    assert len(budgets) == count
    assert budgets[-1] == pytest.approx(end * 0.01)
    assert all(x <= y + 1e-15 for x, y in itertools.pairwise(budgets))
    assert all(start * 0.01 - 1e-15 <= x <= end * 0.01 + 1e-15 for x in budgets)


def test_uniform_allocation_keeps_the_paper_ranges() -> None:
    rules = uniform_allocation("quadratic")
    assert {k: (r.scheme, r.start, r.end) for k, r in rules.items()} == {
        "W": ("quadratic", 0.0, 0.5),
        "B": ("quadratic", 0.5, 0.5),
        "A": ("quadratic", 0.5, 1.0),
    }


@given(st.sampled_from([0.0025, 0.01, 0.04]), st.integers(1, 40))
def test_the_linear_scheme_is_the_papers_allocation(eps: float, count: int) -> None:
    """The biases' range has equal ends, so linear and constant give them the same budgets: the
    reproduction's linear-scheme row is the paper's run (scripts/reproduce_paper.py)."""
    linear = uniform_allocation("linear")
    for kind, rule in PAPER_ALLOCATION.items():
        assert linear[kind].budgets(eps, count) == rule.budgets(eps, count)


def test_bad_rules() -> None:
    with pytest.raises(ValueError, match="unknown allocation scheme"):
        Allocation("cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        Allocation("linear", -0.1, 1.0)
    assert Allocation().budgets(0.01, 0) == []
