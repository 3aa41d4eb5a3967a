"""OptSearchCNN (Alg. 2) against synthetic loss surfaces: exact expectations in milliseconds."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optsearch.core.allocation import Allocation, constant_allocation
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.evaluator import Evaluation
from optsearch.methods.opt_search import (
    EvaluationRecord,
    SearchError,
    SearchSettings,
    opt_search,
    search_plan,
)

T = TensorId("conv", "W")
REJECT = 1.0


class TableEvaluator:
    """Loss = sum over quantized tensors of a per-tensor table (missing formats cost ``REJECT``).

    The sum makes dependent evaluation visible: a tensor's loss includes the decided ones'.
    With ``early`` set, rejected candidates come back as inexact lower bounds, as an engine may.
    """

    def __init__(self, tables: Mapping[TensorId, Mapping[Format, float]], early: bool = False) -> None:
        self.tables = tables
        self.early = early
        self.calls: list[dict[TensorId, Format]] = []

    @property
    def float_accuracy(self) -> float:
        return 0.99

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Evaluation:
        self.calls.append(dict(formats))
        loss = sum(self.tables.get(t, {}).get(f, REJECT) for t, f in formats.items())
        if self.early and max_loss is not None and loss > max_loss:
            return Evaluation(max_loss + 1e-9, 0, 1, False, 0.0)
        if self.early and must_beat is not None and loss >= must_beat:
            return Evaluation(must_beat, 0, 1, False, 0.0)  # the weakest bound an engine may return
        return Evaluation(loss, 0, 10, True, 0.0)


def _settings(eps: float = 0.005, **kwargs: object) -> SearchSettings:
    """One tensor gets the whole eps: a constant allocation at 100%."""
    options: dict[str, object] = {
        "eps": eps,
        "allocation": constant_allocation(1.0),
        "bw0": {"W": 8, "B": 8, "A": 8},
    }
    options.update(kwargs)
    return SearchSettings(**options)  # type: ignore[arg-type]


def _run_one(table: Mapping[Format, float], z: float = 1.0, **kwargs: object):  # type: ignore[no-untyped-def]
    evaluator = TableEvaluator({T: table})
    records: list[EvaluationRecord] = []
    outcome = opt_search(evaluator, [[T]], {T: z}, _settings(**kwargs), on_evaluation=records.append)
    return outcome.decisions[0], records, evaluator


# Z = 1 and BW0 = 8 give F0 = 7 (paper rule). The diagonal (8,7) .. (5,4) is acceptable, (4,3) is not.
DIAGONAL = {Format(8, 7): 0.0, Format(7, 6): 0.001, Format(6, 5): 0.002, Format(5, 4): 0.004}


def test_diagonal_then_reduction() -> None:
    table = {**DIAGONAL, Format(4, 3): 0.02, Format(4, 4): 0.003, Format(3, 4): 0.05}
    decision, records, _ = _run_one(table)
    assert decision.start == Format(8, 7)
    assert decision.diagonal == Format(4, 4) and decision.diagonal_loss == 0.003
    assert decision.fmt == Format(4, 4) and decision.rule.startswith("diagonal")
    phases = [(r.phase, r.fmt) for r in records if not r.cached]
    assert phases[:7] == [
        ("start", Format(8, 7)),
        ("diagonal", Format(7, 6)),
        ("diagonal", Format(6, 5)),
        ("diagonal", Format(5, 4)),
        ("diagonal", Format(4, 3)),
        ("reduction", Format(4, 4)),
        ("reduction", Format(3, 4)),
    ]


def test_local_search_wins_when_loss_is_lower_by_delta() -> None:
    table = {**DIAGONAL, Format(4, 4): 0.003, Format(5, 5): 0.0005}
    decision, _, _ = _run_one(table)
    assert decision.local == Format(5, 5) and decision.local_loss == 0.0005
    assert decision.fmt == Format(5, 5) and "delta" in decision.rule


def test_fewer_bits_win_when_loss_gain_is_below_delta() -> None:
    table = {**DIAGONAL, Format(4, 4): 0.003, Format(5, 5): 0.002}
    decision, _, _ = _run_one(table)
    assert decision.local == Format(5, 5)
    assert decision.fmt == Format(4, 4) and decision.rule == "diagonal: fewer bits"


def test_local_with_fewer_bits_wins_below_delta() -> None:
    """The local search can find a lower bitwidth at another F: it wins on bits."""
    table = {**DIAGONAL, Format(4, 4): 0.003, Format(3, 5): 0.0025}
    decision, _, _ = _run_one(table)
    assert decision.fmt == Format(3, 5) and decision.rule == "local: fewer bits"


def test_equal_bits_keep_the_local_result() -> None:
    table = {**DIAGONAL, Format(4, 4): 0.003, Format(4, 5): 0.0025}
    decision, _, _ = _run_one(table)
    assert decision.fmt == Format(4, 5) and decision.rule == "local: same bits, lower loss"


def test_delta_boundary_is_inclusive() -> None:
    table = {**DIAGONAL, Format(4, 4): 0.004, Format(5, 5): 0.002}
    decision, _, _ = _run_one(table, delta=0.002)
    assert decision.fmt == Format(5, 5)


def test_local_ties_prefer_lower_bw_then_lower_f() -> None:
    table = {**DIAGONAL, Format(4, 4): 0.003, Format(5, 3): 0.001, Format(5, 5): 0.001, Format(3, 5): 0.001}
    decision, _, _ = _run_one(table)
    assert decision.local == Format(3, 5)
    table = {**DIAGONAL, Format(4, 4): 0.003, Format(5, 3): 0.001, Format(5, 5): 0.001}
    decision, _, _ = _run_one(table)
    assert decision.local == Format(5, 3)


def test_bw_never_below_one_and_everything_acceptable() -> None:
    table = {Format(bw, f): 0.0 for bw in range(1, 9) for f in range(-10, 12)}
    decision, records, _ = _run_one(table)
    assert decision.fmt.bw == 1 and all(r.fmt.bw >= 1 for r in records)
    assert decision.diagonal == Format(1, 0)  # (8, 7) down the diagonal to (1, 0)


def test_each_format_is_evaluated_once_per_tensor() -> None:
    table = {**DIAGONAL, Format(4, 4): 0.003}
    decision, records, evaluator = _run_one(table)
    formats = [call[T] for call in evaluator.calls]
    assert len(formats) == len(set(formats)) == decision.evaluations
    assert sum(not r.cached for r in records) == decision.evaluations
    assert any(r.cached for r in records)  # the local search reuses the diagonal's evaluations


def test_zero_tensor_is_pruned_without_evaluation() -> None:
    decision, records, evaluator = _run_one({}, z=0.0)
    assert decision.fmt == Format(1, 0) and decision.evaluations == 0 and not records and not evaluator.calls


def test_bw0_is_raised_by_four_when_the_start_fails() -> None:
    # Z = 1: (8, 7) fails, (12, 11) is fine.
    table = {Format(12, 11): 0.0, Format(11, 10): 0.001}
    messages: list[str] = []
    evaluator = TableEvaluator({T: table})
    outcome = opt_search(evaluator, [[T]], {T: 1.0}, _settings(), log=messages.append)
    assert outcome.decisions[0].bw0 == 12 and outcome.decisions[0].start == Format(12, 11)
    assert messages == ["layer 'conv', weights: start (8, 7) is not acceptable, raising BW0 to 12"]


def test_past_the_cap_the_error_names_layer_and_tensor() -> None:
    with pytest.raises(
        SearchError, match=r"layer 'conv', weights: no acceptable format even at \(24, 23\).*--eps"
    ):
        opt_search(TableEvaluator({T: {}}), [[T]], {T: 1.0}, _settings())


def test_past_the_cap_a_dependent_search_says_what_the_decided_tensors_lose() -> None:
    # a takes (6, 5) at 0.002 of its 0.005 (local search); b's only format adds 0.004: nothing fits.
    a, b = TensorId("l1", "W"), TensorId("l2", "W")
    tables = {a: DIAGONAL, b: {Format(24, 23): 0.004}}
    with pytest.raises(SearchError) as raised:
        opt_search(TableEvaluator(tables, early=True), [[a], [b]], {a: 1.0, b: 1.0}, _settings())
    message = str(raised.value)
    # The early-stopped evaluation is a lower bound, and is worded as one.
    assert "layer 'l2', weights: no acceptable format even at (24, 23) (loss at least 0.5000%" in message
    assert "the tensor decided before it already loses 0.2000%" in message and "--order" in message
    # Independent: the other tensors play no part, so the message does not mention them.
    with pytest.raises(SearchError) as raised:
        opt_search(TableEvaluator({T: {}}), [[T]], {T: 1.0}, _settings(independent=True))
    assert "decided before" not in str(raised.value) and "(loss 100.0000% >" in str(raised.value)


def test_dependent_search_sees_decided_formats_and_independent_does_not() -> None:
    a, b = TensorId("l1", "W"), TensorId("l2", "W")
    # (8, 7) is a neighbour of (7, 6): at 0.002 it is not better by delta, so fewer bits win.
    table = {Format(8, 7): 0.002, Format(7, 6): 0.003, Format(6, 5): 0.02}
    tables = {a: table, b: table}
    dep = opt_search(TableEvaluator(tables), [[a], [b]], {a: 1.0, b: 1.0}, _settings())
    # a takes (7, 6) at 0.003; b at (7, 6) would total 0.006 > 0.005, so it stays at (8, 7) (0.005).
    assert dep.formats[a].bw == 7 and dep.formats[b] == Format(8, 7)
    ind = opt_search(TableEvaluator(tables), [[a], [b]], {a: 1.0, b: 1.0}, _settings(independent=True))
    assert ind.formats[a].bw == ind.formats[b].bw == 7


def test_resume_applies_decided_and_skips_them() -> None:
    a, b = TensorId("l1", "W"), TensorId("l2", "W")
    tables = {a: {Format(8, 7): 0.0, Format(7, 6): 0.003}, b: {Format(8, 7): 0.0, Format(7, 6): 0.003}}
    first = opt_search(TableEvaluator(tables), [[a], [b]], {a: 1.0, b: 1.0}, _settings())
    evaluator = TableEvaluator(tables)
    resumed = opt_search(
        evaluator, [[a], [b]], {a: 1.0, b: 1.0}, _settings(), decided={a: first.decisions[0]}
    )
    assert resumed.formats == first.formats
    assert all(call[a] == first.formats[a] and b in call for call in evaluator.calls)


tables_strategy = st.dictionaries(
    st.builds(Format, st.integers(1, 9), st.integers(-2, 10)),
    st.sampled_from([0.0, 0.001, 0.002, 0.003, 0.004, 0.0045, 0.02]),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(tables_strategy, st.sampled_from([0.0, 0.0015, 0.01]))
def test_early_rejection_never_changes_a_decision(table: dict[Format, float], delta: float) -> None:
    table = {**table, Format(8, 7): 0.0}
    exact = opt_search(TableEvaluator({T: table}), [[T]], {T: 1.0}, _settings(delta=delta))
    early = opt_search(TableEvaluator({T: table}, early=True), [[T]], {T: 1.0}, _settings(delta=delta))
    assert early.decisions == exact.decisions


@settings(max_examples=200, deadline=None)
@given(tables_strategy)
def test_decision_is_acceptable_and_no_worse_in_bits_than_the_diagonal(table: dict[Format, float]) -> None:
    table = {**table, Format(8, 7): 0.0}
    decision = opt_search(TableEvaluator({T: table}), [[T]], {T: 1.0}, _settings()).decisions[0]
    assert table.get(decision.fmt, REJECT) <= 0.005
    assert decision.loss == table.get(decision.fmt, REJECT)
    assert decision.local_loss <= decision.diagonal_loss
    assert decision.fmt in (decision.diagonal, decision.local)


def _layers(names: list[str], kinds: str = "WBA") -> list[list[TensorId]]:
    return [[TensorId(n, k) for k in kinds] for n in names]  # type: ignore[arg-type]


def test_plan_paper_order_and_budgets() -> None:
    plan = search_plan(_layers(["a", "b"]), SearchSettings(eps=0.01))
    assert [(str(t), p) for t, p, _ in plan] == [
        ("a:W", 1), ("b:W", 2), ("a:B", 1), ("b:B", 2), ("a:A", 1), ("b:A", 2),
    ]  # fmt: skip
    budgets = [eps for _, _, eps in plan]
    assert budgets == pytest.approx([0.0025, 0.005, 0.005, 0.005, 0.0075, 0.01])


def test_plan_reverse_permuted_and_interleaved() -> None:
    layers = _layers(["a", "b"])
    reverse = search_plan(layers, SearchSettings(layer_order="reverse", type_order=("A", "W", "B")))
    assert [str(t) for t, _, _ in reverse] == ["b:A", "a:A", "b:W", "a:W", "b:B", "a:B"]
    assert [p for _, p, _ in reverse][:2] == [1, 2]
    inter = search_plan(layers, SearchSettings(interleave=True))
    assert [str(t) for t, _, _ in inter] == ["a:W", "a:B", "a:A", "b:W", "b:B", "b:A"]
    assert {t: e for t, _, e in inter} == {t: e for t, _, e in search_plan(layers, SearchSettings())}


def test_plan_layers_without_bias_do_not_count_for_biases() -> None:
    layers = [
        [TensorId("a", "W"), TensorId("a", "A")],
        [TensorId("b", "W"), TensorId("b", "B"), TensorId("b", "A")],
    ]
    plan = {str(t): p for t, p, _ in search_plan(layers, SearchSettings())}
    assert plan["b:B"] == 1 and plan["b:W"] == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": 1.5},
        {"eps": 0.0},
        {"type_order": ("W", "W", "A")},
        {"layer_order": "sideways"},
        {"delta": -1.0},
        {"bw0": {"W": 1, "B": 8, "A": 8}},
        {"allocation": {"W": Allocation()}},
    ],
)
def test_settings_are_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SearchSettings(**kwargs)  # type: ignore[arg-type]


def test_independent_settings_match_the_paper() -> None:
    s = SearchSettings.independent_search()
    assert s.independent and s.eps == 0.003 and dict(s.bw0) == {"W": 8, "B": 8, "A": 8}
    assert s.allocation["A"].budgets(0.003, 3) == [0.003, 0.003, 0.003]
