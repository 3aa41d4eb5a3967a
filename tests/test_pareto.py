"""--method pareto on synthetic evaluators (issue 21): the curves follow Alg. 2's candidates and stop
at the reach; the prediction never spends luck; repair raises until the network passes; refinement
lowers only while it still passes; the front answers every budget."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import pytest

from optsearch.core.confidence import AcceptanceTest
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.evaluator import Evaluation
from optsearch.methods.knapsack import CostModel
from optsearch.methods.pareto import (
    VIRTUAL_RUNGS,
    ParetoError,
    capacity,
    flip_scale,
    ladder,
    pareto_front,
    pareto_search,
)
from optsearch.methods.sensitivity import Curve, CurvePoint, measure_curve, measure_curves, predicted_curves

N = 1000
FLOAT_CORRECT = 900
PAPER = AcceptanceTest("paper")
GUARDED = AcceptanceTest("guarded", 0.95)
A, B, C = TensorId("a", "W"), TensorId("b", "A"), TensorId("c", "W")


class Noisy:
    """A network whose tensors inject output noise power ``4^(knee - BW)`` each (a tensor with fewer
    integer bits than ``ints`` saturates: power 10^4), summed as independent noises do (or, with
    ``coherent``, their amplitudes summed: more than the prediction assumes), and which flips
    ``floor(sqrt(power))`` samples."""

    def __init__(
        self,
        knees: Mapping[TensorId, float],
        *,
        ints: int = 2,
        coherent: bool = False,
        test: AcceptanceTest = PAPER,
    ) -> None:
        self.knees = knees
        self.ints = ints
        self.coherent = coherent
        self.test = test
        self.calls: list[dict[TensorId, Format]] = []

    @property
    def float_accuracy(self) -> float:
        return FLOAT_CORRECT / N

    def power(self, tensor: TensorId, fmt: Format) -> float:
        if fmt.integer_bits < self.ints:
            return 1e4
        return 4.0 ** (self.knees[tensor] - fmt.bw)

    def evaluate(
        self, formats: Mapping[TensorId, Format], *, max_loss: float | None = None, **_: object
    ) -> Evaluation:
        self.calls.append(dict(formats))
        powers = [self.power(t, f) for t, f in formats.items()]
        power = sum(math.sqrt(p) for p in powers) ** 2 if self.coherent else sum(powers)
        losses = min(math.floor(math.sqrt(power)), FLOAT_CORRECT)
        statistic = self.test.statistic(losses, 0, FLOAT_CORRECT, N)
        exact = max_loss is None or statistic <= max_loss
        return Evaluation(
            losses / FLOAT_CORRECT,
            FLOAT_CORRECT - losses,
            N,
            exact,
            0.0,
            self.test.bound(losses, 0, FLOAT_CORRECT, N),
            losses,
            0,
            power,
        )


def test_curve_descends_the_diagonal_to_the_reach_and_tries_one_integer_bit_fewer() -> None:
    evaluator = Noisy({A: 9.0}, ints=1)  # flips 2^(9 - BW); the range needs I >= 1
    curve = measure_curve(evaluator, A, 1.5, reach=0.05)  # 45 flips reach: 2^(9-3) = 64 is beyond
    diagonal = [p for p in curve.points if p.fmt.integer_bits == 2]
    assert diagonal[0].fmt == Format(8, 6)  # START_BW at eq. 8's offset for Z = 1.5 (I = 2); no climb
    assert [p.fmt.bw for p in diagonal] == [8, 7, 6, 5, 4, 3]
    assert not diagonal[-1].exact and all(p.exact for p in diagonal[:-1])
    assert [p.noise for p in diagonal[:3]] == [2.0**2, 2.0**4, 2.0**6]
    reduced = [p for p in curve.points if p.fmt.integer_bits == 1]
    assert [p.fmt for p in reduced] == [Format(7, 6)]  # one integer bit fewer: no better, so no more
    assert curve.evaluations == len(curve.points) == len(evaluator.calls)


def test_curve_climbs_only_while_beyond_the_reach() -> None:
    evaluator = Noisy({A: 14.0})  # 2^(14 - 8) = 64 flips at 8 bits: beyond a 45-flip reach
    curve = measure_curve(evaluator, A, 1.5, reach=0.05)
    climb = [p.fmt.bw for p in curve.points[:2]]
    assert climb == [8, 9] and curve.points[1].exact  # 32 flips at 9 bits: within, the climb stops


def test_all_zero_tensor_is_pruned_without_evaluation() -> None:
    evaluator = Noisy({A: 9.0})
    curve = measure_curve(evaluator, A, 0.0, reach=0.05)
    assert curve.evaluations == 0 and [p.fmt for p in curve.points] == [Format(1, 0)]


def test_prediction_quarters_per_bit_and_never_grows_with_the_bits() -> None:
    points = (
        CurvePoint(Format(6, 4), 0, 0, 0.0, 0.0, True, 1.0),
        CurvePoint(Format(5, 3), 0, 0, 0.0, 0.0, True, 0.5),  # lucky: below 16 / 4
        CurvePoint(Format(4, 2), 8, 0, 0.0, 0.0, True, 16.0),
        CurvePoint(Format(3, 1), 40, 0, 0.0, 0.0, False, 900.0),  # beyond the reach: left out
    )
    predicted = Curve(A, points, 4).predicted()
    assert predicted == {Format(6, 4): 1.0, Format(5, 3): 4.0, Format(4, 2): 16.0}
    rungs = ladder(Curve(A, points, 4))
    assert [(r.fmt, r.weight, r.measured) for r in rungs][:3] == [
        (Format(4, 2), 16.0, True),
        (Format(5, 3), 4.0, True),
        (Format(6, 4), 1.0, True),
    ]
    assert [r.weight for r in rungs[3:7]] == [0.25, 0.0625, 0.015625, 0.00390625]  # above the top
    assert len(rungs) == 3 + VIRTUAL_RUNGS
    assert all(a.weight > b.weight for a, b in itertools.pairwise(rungs))


def test_capacity_is_the_most_flips_the_test_lets_through() -> None:
    assert capacity(PAPER, 0.01, FLOAT_CORRECT, N) == 9
    k = capacity(GUARDED, 0.02, FLOAT_CORRECT, N)
    assert GUARDED.accepts(k, 0, FLOAT_CORRECT, N, 0.02) and not GUARDED.accepts(
        k + 1, 0, FLOAT_CORRECT, N, 0.02
    )
    assert capacity(GUARDED, 0.001, FLOAT_CORRECT, N) == -1
    scale = flip_scale({A: Curve(A, (CurvePoint(Format(4, 2), 8, 0, 0.0, 0.0, True, 16.0),), 1)})
    assert scale == 2.0  # 8 flips at amplitude 4


def _curves(evaluator: Noisy, tensors: list[TensorId], reach: float) -> dict[TensorId, Curve]:
    return measure_curves(evaluator, tensors, dict.fromkeys(tensors, 1.5), reach=reach)


def test_pareto_search_meets_eps_and_puts_bits_where_they_are_cheap() -> None:
    # C is a hundred times larger than A and B, equally sensitive: it should get the fewest bits.
    evaluator = Noisy({A: 9.0, B: 9.0, C: 9.0})
    model = CostModel({A: 1.0, B: 1.0, C: 100.0})
    curves = _curves(evaluator, [A, B, C], 0.04)
    outcome = pareto_search(evaluator, curves, model, PAPER, 0.02, samples=N)
    assert outcome.final.exact and outcome.final.loss <= 0.02
    assert evaluator.evaluate(outcome.formats).loss <= 0.02
    assert outcome.formats[C].bw < outcome.formats[A].bw
    assert outcome.steps[0].action == "front"
    assert outcome.front and any(p.formats == outcome.allocated.formats for p in outcome.front)


def test_a_superadditive_network_is_repaired_along_the_front() -> None:
    # Coherent noise (up to 3x the independent sum): the point at K fails, a more careful one passes.
    evaluator = Noisy({A: 9.0, B: 9.0, C: 9.0}, coherent=True)
    model = CostModel({A: 1.0, B: 1.0, C: 1.0})
    curves = _curves(evaluator, [A, B, C], 0.04)
    outcome = pareto_search(evaluator, curves, model, PAPER, 0.02, samples=N)
    front = [s for s in outcome.steps if s.action == "front"]
    assert not front[0].accepted and any(s.accepted for s in front)
    assert outcome.allocated.predicted < front[0].predicted  # a more careful point than the first
    assert outcome.final.loss <= 0.02 and outcome.final.exact
    assert evaluator.evaluate(outcome.formats).loss <= 0.02
    assert len(outcome.measured) == len(front)


def test_refine_keeps_only_steps_that_pass() -> None:
    evaluator = Noisy({A: 9.0, B: 7.0, C: 8.0})
    model = CostModel({A: 3.0, B: 2.0, C: 1.0})
    curves = _curves(evaluator, [A, B, C], 0.04)
    outcome = pareto_search(evaluator, curves, model, PAPER, 0.02, samples=N)
    refused = [s for s in outcome.steps if s.action == "refine" and not s.accepted]
    for step in refused:  # a refused step is undone and its tensor not tried again
        assert outcome.formats[step.tensor] == step.before  # type: ignore[index]
    assert len({s.tensor for s in refused}) == len(refused)
    assert outcome.final.exact and outcome.final.loss <= 0.02
    assert evaluator.evaluate(outcome.formats).loss <= 0.02


def test_no_format_fits() -> None:
    evaluator = Noisy({A: 30.0})  # flips at every bitwidth up to the cap
    curves = _curves(evaluator, [A], 0.04)
    with pytest.raises(ParetoError):
        pareto_search(evaluator, curves, CostModel({A: 1.0}), PAPER, 0.005, samples=N)


def test_front_costs_fall_as_the_budget_grows() -> None:
    evaluator = Noisy({A: 9.0, B: 8.0, C: 7.0})
    curves = _curves(evaluator, [A, B, C], 0.05)
    points = pareto_front(curves, CostModel({A: 1.0, B: 2.0, C: 3.0}), [2.0**k for k in range(-8, 12)])
    costs = [p.cost for p in points]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert all(p.predicted <= p.capacity * (1 + 1e-9) for p in points)


def test_curve_round_trip() -> None:
    curve = _curves(Noisy({A: 9.0}), [A], 0.05)[A]
    assert Curve.from_dict(curve.to_dict()) == Curve(
        curve.tensor, curve.points, curve.evaluations, round(curve.seconds, 3)
    )


def test_predicted_curves_weigh_each_format_by_its_lsb_squared_times_the_gain() -> None:
    curves = predicted_curves({A: 3.0, B: 0.5}, {A: 1.5, B: 0.0})
    points = {p.fmt: p.noise for p in curves[A].points}
    assert points[Format(8, 6)] == 3.0 * 2.0**-12 and points[Format(4, 2)] == 3.0 * 2.0**-4
    assert all(p.exact and p.losses == 0 for p in curves[A].points) and curves[A].evaluations == 0
    assert [p.fmt.pruned for p in curves[B].points] == [True]  # all zero: pruned
    assert flip_scale(curves) is None
