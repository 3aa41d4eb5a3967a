"""The allocation of issue 21: an exact multiple-choice knapsack, checked against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_costs import Sizes as Layer  # the LayerSizes of a tiny layer

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.knapsack import Choice, CostModel, Product, allocate, cost_model, front


def brute_force(choices: dict[TensorId, list[Choice]], capacity: float, model: CostModel) -> float | None:
    best = None
    tensors = list(choices)
    for pick in itertools.product(*(choices[t] for t in tensors)):
        if sum(c.weight for c in pick) > capacity + 1e-9:
            continue
        cost = model.cost({t: c.fmt.bw for t, c in zip(tensors, pick, strict=True)})
        best = cost if best is None else min(best, cost)
    return best


def options() -> st.SearchStrategy[list[Choice]]:
    choice = st.builds(
        Choice,
        st.builds(Format, st.integers(1, 12), st.integers(-2, 10)),
        st.integers(0, 6).map(float),
    )
    return st.lists(choice, min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(options(), min_size=1, max_size=4), st.integers(0, 12), st.lists(st.integers(1, 50), min_size=4)
)
def test_linear_knapsack_never_worse_than_any_feasible_choice(opts, capacity, counts):
    tensors = [TensorId(f"l{i}", "W") for i in range(len(opts))]
    choices = dict(zip(tensors, opts, strict=True))
    model = CostModel({t: float(c) for t, c in zip(tensors, counts, strict=False)})
    expected = brute_force(choices, capacity, model)
    found = allocate(choices, capacity, model)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found.weight <= capacity + 1e-9
        assert found.cost == pytest.approx(expected)
        assert found.cost == pytest.approx(model.cost({t: f.bw for t, f in found.formats.items()}))


@settings(max_examples=40, deadline=None)
@given(st.lists(options(), min_size=4, max_size=4), st.integers(0, 10), st.integers(1, 9))
def test_bilinear_bops_exact_against_brute_force(opts, capacity, input_bits):
    """Two layers, the second reading the first's activation and the input (a max over sources)."""
    w1, a1, w2, a2 = TensorId("c1", "W"), TensorId("c1", "A"), TensorId("c2", "W"), TensorId("c2", "A")
    choices = dict(zip((w1, a1, w2, a2), opts, strict=True))
    model = CostModel(
        {a2: 3.0},
        (Product(7, w1, (), input_bits), Product(5, w2, (a1,), input_bits), Product(2, w2, (a1, a2), 0)),
    )
    expected = brute_force(choices, capacity, model)
    found = allocate(choices, capacity, model)
    assert (found is None) == (expected is None)
    if found is not None:
        assert found.cost == pytest.approx(expected)


def test_cost_model_matches_the_report_costs():
    from optsearch.core.costs import network_cost

    layers = [
        Layer("c1", True, 100, (), (9, 3, 30)),
        Layer("c2", False, 50, ("c1",), (12, 0, 8)),
    ]
    bits = {
        TensorId("c1", "W"): 5,
        TensorId("c1", "B"): 7,
        TensorId("c1", "A"): 6,
        TensorId("c2", "W"): 4,
        TensorId("c2", "A"): 3,
    }
    cost = network_cost(layers, bits, 8)
    assert cost_model(layers, "memory", 8).cost(bits) == cost.memory_bits
    assert (
        cost_model(layers, "weights", 8).cost(bits)
        == cost.memory_bits_by_kind["W"] + cost.memory_bits_by_kind["B"]
    )
    assert cost_model(layers, "activations", 8).cost(bits) == cost.memory_bits_by_kind["A"]
    assert cost_model(layers, "bops", 8).cost(bits) == cost.bops


def test_front_is_monotone_and_tightens_with_capacity():
    t1, t2 = TensorId("a", "W"), TensorId("b", "W")
    choices = {
        t1: [Choice(Format(8, 6), 0.0), Choice(Format(4, 2), 2.0), Choice(Format(2, 0), 5.0)],
        t2: [Choice(Format(8, 6), 0.0), Choice(Format(3, 1), 1.0)],
    }
    model = CostModel({t1: 10.0, t2: 100.0})
    points = front(choices, [0, 1, 2, 3, 6], model)
    costs = [p.cost for p in points if p is not None]
    assert costs == sorted(costs, reverse=True)
    assert points[0] is not None and points[0].formats == {t1: Format(8, 6), t2: Format(8, 6)}
    assert points[1] is not None and points[1].formats[t2] == Format(3, 1)  # the expensive tensor first
    assert points[-1] is not None and points[-1].formats == {t1: Format(2, 0), t2: Format(3, 1)}


def test_infeasible_and_bad_input():
    t = TensorId("a", "W")
    assert allocate({t: [Choice(Format(4, 2), 3.0)]}, 2.0, CostModel({t: 1.0})) is None
    with pytest.raises(ValueError, match="no candidate"):
        allocate({t: []}, 1.0, CostModel({t: 1.0}))
    with pytest.raises(ValueError, match="without choices"):
        allocate({t: [Choice(Format(4, 2), 0.0)]}, 1.0, CostModel({TensorId("b", "A"): 1.0}))
    with pytest.raises(ValueError, match="objective must be one of"):
        cost_model([], "speed", 8)  # type: ignore[arg-type]
