"""The certification step on synthetic evaluators: it backs off only while the certification set
rejects the network, in order of what each decision owed, never above a tensor's start."""

from __future__ import annotations

from collections.abc import Mapping

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.certify import certify, loss_increments
from optsearch.methods.evaluator import Evaluation
from optsearch.methods.opt_search import TensorDecision

A, B, C = TensorId("a", "W"), TensorId("b", "W"), TensorId("c", "W")


START = Format(8, 6)


def _decision(tensor: TensorId, fmt: Format, loss: float) -> TensorDecision:
    return TensorDecision(tensor, 1, 0.01, fmt, loss, 8, START, fmt, loss, fmt, loss, "diagonal", 5)


class Additive:
    """A network whose loss adds up over tensors, each ``weight * 4^(6 - BW)`` (noise power per bit)."""

    def __init__(self, weights: Mapping[TensorId, float]) -> None:
        self.weights = weights
        self.calls: list[dict[TensorId, Format]] = []

    @property
    def float_accuracy(self) -> float:
        return 0.9

    def evaluate(self, formats: Mapping[TensorId, Format], **_: object) -> Evaluation:
        self.calls.append(dict(formats))
        loss = sum(self.weights[t] * 4.0 ** (6 - f.bw) for t, f in formats.items())
        return Evaluation(loss, 0, 100, True, 0.0)


DECISIONS = [
    _decision(A, Format(4, 2), 0.001),
    _decision(B, Format(3, 1), 0.006),
    _decision(C, Format(5, 3), 0.007),
]


def test_increments_are_what_each_decision_added() -> None:
    assert loss_increments(DECISIONS) == {A: 0.001, B: 0.005, C: 0.001}


def test_a_network_that_passes_is_not_touched() -> None:
    evaluator = Additive({A: 0.0, B: 0.0, C: 0.0})
    result = certify(evaluator, DECISIONS, 0.01)
    assert result.certified and not result.steps and result.formats == {d.tensor: d.fmt for d in DECISIONS}
    assert len(evaluator.calls) == 1


def test_back_off_starts_with_the_tensor_that_owed_most_and_stops_once_certified() -> None:
    # B at (3, 1) costs 0.0005 * 64 = 0.032: over eps; one bit back gives 0.008, which passes.
    evaluator = Additive({A: 0.0001, B: 0.0005, C: 0.0001})
    result = certify(evaluator, DECISIONS, 0.01)
    assert result.certified and [s.tensor for s in result.steps] == [B]
    assert result.formats[B] == Format(4, 2) and result.steps[0].before == Format(3, 1)
    assert result.added_bits == {B: 1}


def test_never_above_the_start_and_gives_up_when_nothing_is_left() -> None:
    evaluator = Additive({A: 1.0, B: 1.0, C: 1.0})  # nothing passes
    result = certify(evaluator, DECISIONS, 0.01)
    assert not result.certified
    assert all(result.formats[d.tensor].bw == d.start.bw for d in DECISIONS)
    assert sum(result.added_bits.values()) == sum(d.start.bw - d.fmt.bw for d in DECISIONS)


def test_back_off_spreads_over_tensors() -> None:
    """Each bit given back halves what a tensor owes: B owes 0.005, A and C 0.001 each, so B gets
    three bits (0.0025, 0.00125, 0.000625 left), then A (the earlier of a tie), C, and B again."""
    evaluator = Additive({A: 1.0, B: 1.0, C: 1.0})
    result = certify(evaluator, DECISIONS, 0.001)
    assert [s.tensor for s in result.steps][:6] == [B, B, B, A, C, B]


def test_it_says_why_it_stopped() -> None:
    evaluator = Additive({A: 1.0, B: 1.0, C: 1.0})
    assert "started from" in certify(evaluator, DECISIONS, 0.01).why
    assert "2 bits given back" in certify(evaluator, DECISIONS, 0.01, max_back_offs=2).why
    assert certify(Additive({A: 0.0, B: 0.0, C: 0.0}), DECISIONS, 0.01).why == ""
