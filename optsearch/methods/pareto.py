"""``--method pareto`` (issue 21): spend the budget where it buys the most bits. No Keras.

1. **Sensitivity** (``methods.sensitivity``): each tensor's loss and output noise power along the
   candidates Alg. 2 visits, every other tensor float.
2. **Prediction**: independent rounding noises add in power (the premise of Sakr & Shanbhag's
   analysis, seeds 000/002), so a network's output noise power is predicted as the sum of its
   tensors' (``Curve.predicted``). Flips grow with the noise amplitude: from the curves' points,
   ``flips ~ a sqrt(power)`` (``flip_scale``), which turns the budget's ``K`` flips into a power.
3. **Allocation** (``methods.knapsack``): at a capacity ``P``, the cheapest formats with
   ``sum_t power_t <= P``; exact. Over a grid of capacities this is the predicted **front** of cost
   against loss, computed once from the curves.
4. **Dependent verification and repair**: the prediction orders formats well but its scale is only
   an estimate (noises are not exactly independent, flips not exactly proportional), so the whole
   network is measured along the front: first the point predicted at ``K``, the most flips the
   acceptance test lets through at eps, then a bisection for the cheapest point that passes. A step
   toward a more careful point is the repair: it raises the tensors whose bits buy the most
   predicted noise back per unit of cost, as the knapsack orders them, all at once.
5. **Refinement**: while evaluations are left, tensors are lowered one rung in order of cost saved
   per predicted noise added, each kept only if the whole network still passes.

Another budget needs only steps 4-5 over the stored curves (``optsearch pareto``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from optsearch.core.confidence import AcceptanceTest
from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.evaluator import Evaluation, Evaluator
from optsearch.methods.knapsack import Choice, CostModel, Program
from optsearch.methods.sensitivity import Curve

#: Rungs above a curve's highest measured point, each predicted at a quarter of the noise power of
#: the one below: the knapsack may go there when the measured points are not careful enough.
VIRTUAL_RUNGS = 8
#: Verification and refinement together take at most this many evaluations per tensor (at least
#: ``MIN_ADJUST``): the front's bracketing first, then up to ``BETWEEN`` allocations at capacities
#: between the last passing and failing points, then refinement with what is left. A second budget
#: from stored curves then costs about a tenth of a run that measures them.
ADJUST_PER_TENSOR = 0.55
MIN_ADJUST = 8
BETWEEN = 2
#: The front: capacities on a geometric grid of ``FRONT_POINTS`` from the most careful allocation to
#: the cheapest, the latter at most ``FRONT_SPAN`` times the capacity at the curves' reach.
FRONT_SPAN = 4.0
FRONT_POINTS = 40

Action = Literal["front", "refine"]


class ParetoError(OptsearchError):
    """No formats on the curves keep the whole network within the budget."""


@dataclass(frozen=True)
class Rung:
    """One format on a tensor's ladder with its predicted noise power; ``measured`` False for a rung
    above the curve's highest point (predicted by quartering)."""

    fmt: Format
    weight: float
    measured: bool = True


def ladder(curve: Curve, bw_cap: int = 24) -> list[Rung]:
    """The tensor's efficient formats, fewest bits first: every rung has more bits and a strictly
    lower prediction than the one below it (a dominated format is never worth choosing)."""
    predicted = curve.predicted()
    rungs = [Rung(fmt, w) for fmt, w in predicted.items()]
    if not rungs:
        raise ParetoError(f"{curve.tensor}: no format of its curve is within the reach")
    top = min(rungs, key=lambda r: (r.weight, -r.fmt.bw))
    fmt, weight = top.fmt, top.weight
    for _ in range(VIRTUAL_RUNGS):
        if fmt.pruned or fmt.bw >= bw_cap or weight == 0:
            break
        fmt, weight = Format(fmt.bw + 1, fmt.f + 1), weight / 4
        rungs.append(Rung(fmt, weight, measured=False))
    rungs.sort(key=lambda r: (r.fmt.bw, r.weight, r.fmt.f))
    efficient: list[Rung] = []
    for rung in rungs:
        if efficient and (rung.fmt.bw == efficient[-1].fmt.bw or rung.weight >= efficient[-1].weight):
            continue
        efficient.append(rung)
    return efficient


def capacity(test: AcceptanceTest, eps: float, float_correct: int, samples: int) -> int:
    """``K``: the most samples a network may flip (and gain none) and still pass the test at eps."""
    if not test.accepts(0, 0, float_correct, samples, eps):
        return -1
    low, high = 0, float_correct
    while low < high:  # the statistic grows with the flips: the largest k that passes
        mid = (low + high + 1) // 2
        if test.accepts(mid, 0, float_correct, samples, eps):
            low = mid
        else:
            high = mid - 1
    return low


def flip_scale(curves: Mapping[TensorId, Curve]) -> float | None:
    """``a`` in ``flips ~ a sqrt(noise power)``: the median over the curves' measured points that
    flip something; None when none does (the budget's power is then found by bisection alone)."""
    ratios = sorted(
        p.losses / math.sqrt(p.noise)
        for c in curves.values()
        for p in c.usable()
        if p.losses > 0 and p.noise > 0
    )
    if not ratios:
        return None
    return ratios[len(ratios) // 2]


@dataclass(frozen=True)
class AdjustStep:
    """One evaluation of the whole network after the curves: a point of the front (``front``), or one
    tensor moved one rung down (``refine``), and the verdict."""

    action: Action
    tensor: TensorId | None
    before: Format | None
    after: Format | None
    loss: float
    statistic: float
    exact: bool
    accepted: bool
    """Whether the network (after the step) met eps; a refine step is kept only if so."""
    predicted: float
    """The network's predicted output noise power after the step."""
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "tensor": None if self.tensor is None else str(self.tensor),
            "before": None if self.before is None else [self.before.bw, self.before.f],
            "after": None if self.after is None else [self.after.bw, self.after.f],
            "loss": self.loss,
            "statistic": self.statistic,
            "exact": self.exact,
            "accepted": self.accepted,
            "predicted": self.predicted,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class FrontPoint:
    """The allocation at one capacity: its predicted noise power (at most the capacity) and cost."""

    capacity: float
    predicted: float
    cost: float
    formats: dict[TensorId, Format]


@dataclass(frozen=True)
class ParetoOutcome:
    """What ``pareto_search`` found."""

    capacity: int
    """``K``: the most flips the acceptance test lets through at eps."""
    scale: float | None
    """``flip_scale`` of the curves: predicted flips are ``scale x sqrt(power)``."""
    allocated: FrontPoint
    """The front point the verification settled on (before refinement)."""
    formats: dict[TensorId, Format]
    """The final formats: within eps by the acceptance test."""
    final: Evaluation
    steps: tuple[AdjustStep, ...]
    front: tuple[FrontPoint, ...]
    measured: dict[float, float]
    """Front capacity -> the statistic measured there (the points the bisection evaluated)."""

    def flips(self, power: float) -> float | None:
        """The flips predicted for a network of this noise power (None without a scale)."""
        return None if self.scale is None else self.scale * math.sqrt(power)

    @property
    def evaluations(self) -> int:
        return len(self.steps)


def choices(curves: Mapping[TensorId, Curve], bw_cap: int = 24) -> dict[TensorId, list[Choice]]:
    """The knapsack's options: every ladder rung with its predicted noise power."""
    return _options({t: ladder(c, bw_cap) for t, c in curves.items()})


def _options(ladders: Mapping[TensorId, Sequence[Rung]]) -> dict[TensorId, list[Choice]]:
    return {t: [Choice(r.fmt, r.weight) for r in rungs] for t, rungs in ladders.items()}


def front_capacities(curves: Mapping[TensorId, Curve], top: float, bw_cap: int = 24) -> list[float]:
    """The front's grid: geometric from the most careful allocation's power (every tensor at its
    lowest prediction) to the cheapest's (every tensor at its fewest bits), at most ``top``."""
    return _grid({t: ladder(c, bw_cap) for t, c in curves.items()}, top)


def _grid(ladders: Mapping[TensorId, Sequence[Rung]], top: float) -> list[float]:
    low = max(sum(min(r.weight for r in rungs) for rungs in ladders.values()), 1e-30)
    high = min(sum(rungs[0].weight for rungs in ladders.values()), top)
    if high <= low:
        return [low]
    ratio = (high / low) ** (1 / (FRONT_POINTS - 1))
    return [low * ratio**i for i in range(FRONT_POINTS)]


def pareto_front(
    curves: Mapping[TensorId, Curve], model: CostModel, capacities: Sequence[float], bw_cap: int = 24
) -> tuple[FrontPoint, ...]:
    """The allocation at every capacity (a noise power; capacities with no answer, and those giving
    the same formats as the one before, left out)."""
    return _front(Program(choices(curves, bw_cap), model), capacities)


def _front(program: Program, capacities: Sequence[float]) -> tuple[FrontPoint, ...]:
    out: list[FrontPoint] = []
    for c in capacities:
        point = _point(program, c)
        if point is None or (out and out[-1].formats == point.formats):
            continue
        out.append(point)
    return tuple(out)


def _point(program: Program, c: float) -> FrontPoint | None:
    found = program.solve(c)
    return None if found is None else FrontPoint(c, found.weight, found.cost, found.formats)


def pareto_search(
    evaluator: Evaluator,
    curves: Mapping[TensorId, Curve],
    model: CostModel,
    test: AcceptanceTest,
    eps: float,
    *,
    samples: int,
    reach: float | None = None,
    bw_cap: int = 24,
    on_step: Callable[[AdjustStep], None] | None = None,
) -> ParetoOutcome:
    """The front over measured ``curves``, its verification and refinement (module doc).

    ``samples``: the search set's size (the capacities need it with the float-correct count);
    ``reach``: the statistic the curves were measured to (default ``eps``), which bounds the front.
    """
    float_correct = round(evaluator.float_accuracy * samples)
    k = capacity(test, eps, float_correct, samples)
    if k < 0:
        raise ParetoError(f"the search set cannot certify eps {eps:.3%} even for a network flipping nothing")
    scale = flip_scale(curves)
    top_flips = max(capacity(test, reach if reach is not None else eps, float_correct, samples), k, 1)
    top = math.inf if scale is None else FRONT_SPAN * (top_flips / scale) ** 2
    ladders = {t: ladder(c, bw_cap) for t, c in curves.items()}  # built once, used by every step
    program = Program(_options(ladders), model)
    grid = _grid(ladders, top)
    nominal = None if scale is None else (max(k, 1) / scale) ** 2
    if nominal is not None and grid[0] < nominal < grid[-1]:
        grid = sorted({*grid, nominal})
    frontier = list(_front(program, grid))
    if not frontier:
        raise ParetoError("no allocation of the curves' formats exists: every tensor's curve is empty")
    adjuster = _Adjuster(evaluator, ladders, model, eps, on_step)
    chosen = adjuster.bisect(frontier, nominal, lambda c: _point(program, c))
    if not adjuster.passes(adjuster.final):
        assert adjuster.final is not None
        raise ParetoError(
            f"even the most careful formats of the curves lose "
            f"{'' if adjuster.final.exact else 'at least '}{adjuster.final.statistic:.3%} > eps "
            f"{eps:.3%} on the whole network: give a larger --eps or use --method paper"
        )
    adjuster.refine(max(MIN_ADJUST, math.ceil(ADJUST_PER_TENSOR * len(curves))))
    assert adjuster.final is not None
    return ParetoOutcome(
        k,
        scale,
        chosen,
        dict(adjuster.formats),
        adjuster.final,
        tuple(adjuster.steps),
        tuple(frontier),
        adjuster.measured,
    )


class _Adjuster:
    """Steps 4-5 of the module doc: the whole network evaluated, along the front or one rung at a time."""

    def __init__(
        self,
        evaluator: Evaluator,
        ladders: Mapping[TensorId, list[Rung]],
        model: CostModel,
        eps: float,
        on_step: Callable[[AdjustStep], None] | None,
    ) -> None:
        self.evaluator = evaluator
        self.ladders = ladders
        self.model = model
        self.eps = eps
        self.on_step = on_step
        self.steps: list[AdjustStep] = []
        self.formats: dict[TensorId, Format] = {}
        self.position: dict[TensorId, int] = {}
        self.final: Evaluation | None = None
        self.measured: dict[float, float] = {}

    def _set(self, formats: Mapping[TensorId, Format]) -> None:
        self.formats = dict(formats)
        self.position = {t: [r.fmt for r in self.ladders[t]].index(f) for t, f in formats.items()}

    def passes(self, result: Evaluation | None) -> bool:
        return result is not None and result.exact and result.accepted(self.eps)

    def bisect(
        self,
        frontier: list[FrontPoint],
        nominal: float | None,
        solve: Callable[[float], FrontPoint | None],
    ) -> FrontPoint:
        """The cheapest front point that passes (the front's cost falls as its capacity grows), from
        the one at the ``nominal`` power (the middle without one), bracketing and then narrowing by
        ``_next_index``; then up to ``BETWEEN`` allocations (``solve``) at capacities between the
        last passing and failing points, inserted into ``frontier``. The most careful point when
        none passes."""
        results: dict[int, Evaluation] = {}

        def check(i: int) -> bool:
            if i not in results:
                self._set(frontier[i].formats)
                results[i] = self._evaluate("front", None, None, frontier[i].capacity)
                self.measured[frontier[i].capacity] = results[i].statistic
            return self.passes(results[i])

        if nominal is None:
            start = len(frontier) // 2
        else:
            start = max((i for i, p in enumerate(frontier) if p.capacity <= nominal * (1 + 1e-9)), default=0)
        good, bad = (start, len(frontier)) if check(start) else (-1, start)
        while bad - good > 1:
            i = self._next_index(frontier, results, good, bad)
            if check(i):
                good = i
            else:
                bad = i
        if good < 0:  # nothing passed: the most careful point, measured
            check(0)
            good = 0
        for _ in range(BETWEEN if self.passes(results[good]) and bad < len(frontier) else 0):
            point = solve(math.sqrt(frontier[good].capacity * frontier[bad].capacity))
            if point is None or point.formats in (frontier[good].formats, frontier[bad].formats):
                break
            frontier.insert(bad, point)  # between the two: indices from bad on move up by one
            results = {i + (i >= bad): r for i, r in results.items()}
            if check(bad):  # else the new point is the failing one: ``bad`` already names it
                good, bad = bad, bad + 1
        self._set(frontier[good].formats)
        self.final = results[good]
        return frontier[good]

    def _next_index(
        self, frontier: Sequence[FrontPoint], results: Mapping[int, Evaluation], good: int, bad: int
    ) -> int:
        """The next front point to measure, strictly between ``good`` (passes, or -1) and ``bad``
        (fails, or past the end): where the measured statistics put eps, the statistic taken to grow
        with the square root of the power (flips with the noise amplitude) through the nearest
        measured point, or as a line in log-log between two (the middle without a measurement).
        """
        measured = [(frontier[i].capacity, results[i].statistic) for i in (good, bad) if i in results]
        measured = [(c, st) for c, st in measured if c > 0 and st > 0]
        target: float | None = None
        if len(measured) == 2 and measured[0][1] != measured[1][1]:
            (c0, s0), (c1, s1) = measured
            slope = math.log(c1 / c0) / math.log(s1 / s0)
            target = c0 * (self.eps / s0) ** slope
        elif measured:
            c0, s0 = measured[0]
            target = c0 * (self.eps / s0) ** 2
        inside = range(good + 1, bad)
        if target is None or not math.isfinite(target) or target <= 0:
            return (good + bad) // 2
        return min(inside, key=lambda i: abs(math.log(frontier[i].capacity / target)))

    def weight(self, tensor: TensorId, position: int | None = None) -> float:
        return self.ladders[tensor][self.position[tensor] if position is None else position].weight

    def predicted(self) -> float:
        return sum(self.weight(t) for t in self.formats)

    def _cost_change(self, tensor: TensorId, fmt: Format) -> float:
        bits = {t: f.bw for t, f in self.formats.items()}
        before = self.model.cost(bits)
        bits[tensor] = fmt.bw
        return self.model.cost(bits) - before

    def _evaluate(
        self, action: Action, tensor: TensorId | None, before: Format | None, predicted: float | None = None
    ) -> Evaluation:
        t0 = time.perf_counter()
        result = self.evaluator.evaluate(self.formats, varying=tensor, max_loss=self.eps)
        step = AdjustStep(
            action,
            tensor,
            before,
            None if tensor is None else self.formats[tensor],
            result.loss,
            result.statistic,
            result.exact,
            self.passes(result),
            self.predicted() if predicted is None else predicted,
            time.perf_counter() - t0,
        )
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return result

    def _move(self, action: Action, tensor: TensorId, by: int) -> Evaluation:
        before = self.formats[tensor]
        self.position[tensor] += by
        self.formats[tensor] = self.ladders[tensor][self.position[tensor]].fmt
        return self._evaluate(action, tensor, before)

    def refine(self, limit: int) -> None:
        """Until ``limit`` evaluations in all: one rung down for the tensor that saves the most cost
        per predicted loss added, kept only when the network still passes; a tensor refused once is
        not tried again."""
        frozen: set[TensorId] = set()
        order = {t: i for i, t in enumerate(self.formats)}
        while len(self.steps) < limit:
            best: tuple[float, int] | None = None
            chosen: TensorId | None = None
            for t in self.formats:
                p = self.position[t]
                if t in frozen or p == 0:
                    continue
                added = self.weight(t, p - 1) - self.weight(t)
                saved = -self._cost_change(t, self.ladders[t][p - 1].fmt)
                if saved <= 0:
                    continue
                key = (saved / max(added, 1e-12), -order[t])
                if best is None or key > best:
                    best, chosen = key, t
            if chosen is None:
                return
            result = self._move("refine", chosen, -1)
            if self.passes(result):
                self.final = result
            else:
                frozen.add(chosen)
                self.position[chosen] += 1
                self.formats[chosen] = self.ladders[chosen][self.position[chosen]].fmt
