"""OptSearchCNN (spec §6, Alg. 2): per tensor, diagonal descent, bitwidth reduction, 3x3 local search.

The search talks to an ``Evaluator`` only (no Keras), so it is tested against synthetic loss surfaces.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from optsearch.core.allocation import PAPER_ALLOCATION, Allocation, check_allocation, constant_allocation
from optsearch.core.confidence import DEFAULT_CONFIDENCE, DEFAULT_CRITERION, AcceptanceTest, Criterion
from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import PRUNED_BW, Format, OffsetRule, start_format
from optsearch.core.tensors import KIND_NAMES, TENSOR_KINDS, TensorId, TensorKind
from optsearch.methods.evaluator import Evaluation, Evaluator, eval_acc_loss
from optsearch.methods.knapsack import OBJECTIVES, Objective

LayerOrder = Literal["forward", "reverse"]
LAYER_ORDERS: tuple[LayerOrder, ...] = ("forward", "reverse")
Method = Literal["paper", "analytic", "pareto"]
METHODS: tuple[Method, ...] = ("paper", "analytic", "pareto")
WarmStart = Literal["none", "analytic"]
WARM_STARTS: tuple[WarmStart, ...] = ("none", "analytic")
#: ``--warm-start analytic``: each tensor's diagonal starts this many bits above its noise-gain-
#: predicted precision (``core.analytic``), so that the first candidates are usually acceptable and
#: the diagonal still has room to descend below the prediction, which is conservative (issue 23).
WARM_START_MARGIN = 2
Phase = Literal["start", "diagonal", "reduction", "local"]
Sensitivity = Literal["measured", "analytic"]
SENSITIVITIES: tuple[Sensitivity, ...] = ("measured", "analytic")

DEPENDENT_BW0: dict[TensorKind, int] = {"W": 12, "B": 8, "A": 12}
INDEPENDENT_BW0: dict[TensorKind, int] = {"W": 8, "B": 8, "A": 8}


class SearchError(OptsearchError):
    """The search cannot find an acceptable format for a tensor (budget too small)."""


@dataclass(frozen=True)
class SearchSettings:
    """Every setting of the search: the method, and Alg. 2's budget and order (spec §6-§7). The
    defaults here are Alg. 2's, the paper's, but for the acceptance test: ``guarded``
    (docs/algorithm.md), ``paper`` for Alg. 2's own. What a user gets by default (``--method pareto``,
    docs/allocation.md says why) is the settings schema's (``config.schema``)."""

    eps: float = 0.01
    independent: bool = False
    bw0: Mapping[TensorKind, int] = field(default_factory=lambda: dict(DEPENDENT_BW0))
    bw0_step: int = 4
    bw0_cap: int = 24
    delta: float = 0.0015
    offset_rule: OffsetRule = "paper"
    type_order: tuple[TensorKind, ...] = ("W", "B", "A")
    layer_order: LayerOrder = "forward"
    interleave: bool = False
    allocation: Mapping[TensorKind, Allocation] = field(default_factory=lambda: dict(PAPER_ALLOCATION))
    criterion: Criterion = DEFAULT_CRITERION
    """How a candidate's loss is tested against its budget: ``paper`` (Alg. 2: the observed loss) or
    ``guarded`` (its upper confidence bound at ``confidence``; ``core.confidence``)."""
    confidence: float = DEFAULT_CONFIDENCE
    certify_fraction: float = 0.0
    """Share of the search data kept away from every decision, to certify the final network on
    (``methods.certify``); 0 = off."""
    method: Method = "paper"
    """``paper``: search (Alg. 2). ``analytic``: no search, noise-gain-equalised precisions whose
    predicted mismatch bound fits ``eps * a`` (``core.analytic``, issue 23). ``pareto``: sensitivity
    curves, the cheapest formats predicted within eps, verified and repaired (``methods.pareto``)."""
    objective: Objective = "memory"
    """What ``pareto`` minimises: memory, weights, activations or bops (``methods.knapsack``)."""
    sensitivity: Sensitivity = "measured"
    """Where ``pareto``'s curves come from: ``measured`` (the engine) or ``analytic`` (noise gains,
    ``methods.sensitivity.predicted_curves``; issue 23)."""
    warm_start: WarmStart = "none"
    """``none``: every diagonal starts at BW0 (Alg. 2). ``analytic``: the runner passes each tensor's
    noise-gain-predicted precision plus ``WARM_START_MARGIN`` as ``opt_search``'s ``start_bits``;
    not Alg. 2 (issue 23)."""

    @property
    def acceptance(self) -> AcceptanceTest:
        """The acceptance test the evaluators apply for this search."""
        return AcceptanceTest(self.criterion, self.confidence)

    def __post_init__(self) -> None:
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1) (a relative accuracy loss, 0.01 = 1%), got {self.eps}")
        if sorted(self.type_order) != sorted(TENSOR_KINDS):
            raise ValueError(f"type order must be a permutation of W, B, A, got {self.type_order}")
        if self.layer_order not in LAYER_ORDERS:
            raise ValueError(f"layer order must be one of {LAYER_ORDERS}, got {self.layer_order!r}")
        if self.delta < 0:
            raise ValueError(f"delta must be non-negative, got {self.delta}")
        for kind in TENSOR_KINDS:
            if not 2 <= self.bw0.get(kind, 0) <= self.bw0_cap:
                raise ValueError(f"BW0 for {kind} must be in [2, {self.bw0_cap}], got {self.bw0.get(kind)}")
        check_allocation(self.allocation)
        self.acceptance  # noqa: B018  (checks criterion and confidence)
        if not 0.0 <= self.certify_fraction < 1.0:
            raise ValueError(f"certify fraction must be in [0, 1), got {self.certify_fraction}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "analytic" and self.certify_fraction > 0:
            raise ValueError(
                "method analytic makes no decisions to give bits back to: leave certify fraction at 0, "
                f"got {self.certify_fraction}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective != "memory" and self.method != "pareto":
            raise ValueError(
                f"objective {self.objective} is what method pareto minimises; method {self.method} "
                "minimises bits tensor by tensor: use --method pareto or leave the objective at memory"
            )
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(f"sensitivity must be one of {SENSITIVITIES}, got {self.sensitivity!r}")
        if self.sensitivity != "measured" and self.method != "pareto":
            raise ValueError(
                f"sensitivity {self.sensitivity} gives method pareto its curves; method {self.method} has "
                "none: use --method pareto or leave the sensitivity at measured"
            )
        if self.method == "pareto" and self.certify_fraction > 0:
            raise ValueError(
                "method pareto verifies and repairs the whole network itself: leave certify fraction at 0 "
                f"(got {self.certify_fraction}), or add --method paper to certify Alg. 2's result"
            )
        if self.method == "pareto" and self.independent:
            raise ValueError(
                "method pareto allocates over the whole network: leave independent off, or add "
                "--method paper for Alg. 2's independent search"
            )
        if self.method != "paper":
            self._refuse_search_only_settings()
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm start must be one of {WARM_STARTS}, got {self.warm_start!r}")
        if self.warm_start == "analytic" and self.method != "paper":
            raise ValueError(
                f"warm start analytic starts Alg. 2's diagonals: method {self.method} has none; "
                "add --method paper, or leave warm start at none"
            )
        if self.warm_start == "analytic" and self.independent:
            raise ValueError(
                "warm start analytic predicts precisions for the network as a whole (a dependent "
                "search): leave independent off or warm start at none"
            )

    def _refuse_search_only_settings(self) -> None:
        """Alg. 2's own settings (eq. 9's budget per position, BW0, delta) mean nothing to the other
        methods: refuse them rather than ignore them, naming the way to keep them."""
        changed = [
            name
            for name, value, default in (
                ("allocation / budget", dict(self.allocation), PAPER_ALLOCATION),
                ("bw0", dict(self.bw0), DEPENDENT_BW0),
                ("delta", self.delta, SearchSettings.delta),
            )
            if value != default
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} {'is' if len(changed) == 1 else 'are'} Alg. 2's; method "
                f"{self.method} does not use {'it' if len(changed) == 1 else 'them'}: add --method paper "
                "(method: paper in YAML), or leave the default"
            )

    @classmethod
    def independent_search(cls, eps: float = 0.003, **kwargs: object) -> SearchSettings:
        """The paper's independent search: every tensor gets ``eps`` alone, ``BW0 = 8`` (spec §7)."""
        options: dict[str, object] = {
            "method": "paper",
            "bw0": dict(INDEPENDENT_BW0),
            "allocation": constant_allocation(1.0),
        }
        options.update(kwargs)
        return cls(eps=eps, independent=True, **options)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EvaluationRecord:
    """One line of the search log: a candidate format of one tensor and its loss."""

    tensor: TensorId
    fmt: Format
    phase: Phase
    loss: float
    accepted: bool
    exact: bool
    eps: float
    seconds: float
    cached: bool
    bound: float | None = None
    """Under the guarded criterion: the upper confidence bound compared with ``eps``."""


@dataclass(frozen=True)
class TensorDecision:
    """The format chosen for one tensor (Alg. 2, lines 25-36) and how it was reached."""

    tensor: TensorId
    position: int
    """``l`` in the search order of its type (1-based), the position the budget uses (eq. 9)."""
    eps: float
    fmt: Format
    loss: float
    bw0: int
    start: Format
    diagonal: Format
    diagonal_loss: float
    local: Format
    local_loss: float
    rule: str
    """Why this format: "diagonal", "local: loss lower by >= delta", "diagonal: fewer bits", ..."""
    evaluations: int
    bound: float | None = None
    """Under the guarded criterion: the upper confidence bound of ``loss`` (what met ``eps``).
    ``diagonal_loss`` and ``local_loss`` are the criterion's statistic: the bound under guarded."""


@dataclass(frozen=True)
class SearchOutcome:
    """All decisions ``r_Q`` in search order, and the evaluation count."""

    decisions: tuple[TensorDecision, ...]
    evaluations: int
    seconds: float

    @property
    def formats(self) -> dict[TensorId, Format]:
        return {d.tensor: d.fmt for d in self.decisions}


def search_plan(
    tensors_by_layer: Sequence[Sequence[TensorId]], settings: SearchSettings, floor: float = 0.0
) -> list[tuple[TensorId, int, float]]:
    """The order in which tensors are searched, with each one's position and budget ``eps_lp``.

    Types in ``type_order``, layers forward or reverse, or all tensors of a layer before the next
    (``interleave``). The position ``l`` counts the layers that have that tensor type, in search
    order, so the budget of eq. 9 is the same whether or not the search interleaves.

    ``floor``: no budget below it (the smallest loss the data can certify, ``certifiable_loss``).
    A dependent search's budgets are cumulative (each is the loss of everything decided so far), so
    a raised early budget is taken from the later tensors' slots, and the last budget is still eps.
    """
    layers = list(tensors_by_layer)
    if settings.layer_order == "reverse":
        layers.reverse()
    by_kind: dict[TensorKind, list[TensorId]] = {kind: [] for kind in TENSOR_KINDS}
    for layer in layers:
        for tensor in layer:
            by_kind[tensor.kind].append(tensor)
    budget: dict[TensorId, tuple[int, float]] = {}
    for kind, tensors in by_kind.items():
        eps_values = settings.allocation[kind].budgets(settings.eps, len(tensors))
        for position, (tensor, eps) in enumerate(zip(tensors, eps_values, strict=True), start=1):
            budget[tensor] = (position, max(eps, floor))
    if settings.interleave:
        rank = {kind: i for i, kind in enumerate(settings.type_order)}
        ordered = [t for layer in layers for t in sorted(layer, key=lambda t: rank[t.kind])]
    else:
        ordered = [t for kind in settings.type_order for t in by_kind[kind]]
    return [(tensor, *budget[tensor]) for tensor in ordered]


def opt_search(
    evaluator: Evaluator,
    tensors_by_layer: Sequence[Sequence[TensorId]],
    magnitudes: Mapping[TensorId, float],
    settings: SearchSettings,
    *,
    on_evaluation: Callable[[EvaluationRecord], None] | None = None,
    on_decision: Callable[[TensorDecision], None] | None = None,
    decided: Mapping[TensorId, TensorDecision] | None = None,
    log: Callable[[str], None] | None = None,
    floor: float = 0.0,
    start_bits: Mapping[TensorId, int] | None = None,
) -> SearchOutcome:
    """OptSearchCNN (Alg. 2) over every tensor, in the order and with the budgets of ``settings``.

    ``magnitudes`` gives ``Z`` per tensor (eq. 8). ``decided`` holds decisions already made (a
    resumed search); they are applied and not searched again. ``floor``: see ``search_plan``.
    ``start_bits``: a start bitwidth per tensor used instead of its type's BW0 (a warm start; not
    Alg. 2), still raised by ``bw0_step`` up to ``bw0_cap`` while the start is not acceptable.
    """
    start_bits = dict(start_bits or {})
    for tensor, bits in start_bits.items():
        if not 2 <= bits <= settings.bw0_cap:
            raise ValueError(f"{tensor}: a start bitwidth must be in [2, {settings.bw0_cap}], got {bits}")
    started = time.perf_counter()
    done: dict[TensorId, TensorDecision] = dict(decided or {})
    total = 0
    latest: TensorDecision | None = None  # the last decision in search order: its loss is r_Q's so far
    for tensor, position, eps in search_plan(tensors_by_layer, settings, floor):
        if tensor in done:
            latest = done[tensor]
            continue
        r_q = {t: d.fmt for t, d in done.items()}
        before = None if settings.independent or latest is None else latest.loss
        tensor_search = _TensorSearch(
            evaluator, tensor, eps, settings, r_q, on_evaluation, log, before, start_bits.get(tensor)
        )
        decision = tensor_search.run(position, magnitudes[tensor])
        latest = decision
        total += decision.evaluations
        done[tensor] = decision
        if on_decision is not None:
            on_decision(decision)
    order = [t for t, _, _ in search_plan(tensors_by_layer, settings)]
    return SearchOutcome(tuple(done[t] for t in order), total, time.perf_counter() - started)


class _TensorSearch:
    """Alg. 2 lines 3-36 for one tensor, with its evaluations memoised by format."""

    def __init__(
        self,
        evaluator: Evaluator,
        tensor: TensorId,
        eps: float,
        settings: SearchSettings,
        decided: Mapping[TensorId, Format],
        on_evaluation: Callable[[EvaluationRecord], None] | None,
        log: Callable[[str], None] | None,
        before: float | None = None,
        start_bw: int | None = None,
    ) -> None:
        """``before``: in a dependent search, the loss of the tensors in ``decided``. ``start_bw``:
        the start bitwidth instead of BW0 (a warm start)."""
        self.evaluator = evaluator
        self.tensor = tensor
        self.eps = eps
        self.settings = settings
        self.decided = decided
        self.on_evaluation = on_evaluation
        self.log = log
        self.before = before
        self.start_bw = start_bw
        self.seen: dict[Format, Evaluation] = {}
        self.evaluations = 0

    def loss(
        self, fmt: Format, phase: Phase, max_loss: float | None = None, must_beat: float | None = None
    ) -> Evaluation:
        """EvalAccLossCNN for a candidate; a format already evaluated for this tensor is reused.

        The evaluator may stop once the loss exceeds ``max_loss`` (default: the budget) or can no
        longer be below ``must_beat``.
        """
        cached = fmt in self.seen
        if not cached:
            self.seen[fmt] = eval_acc_loss(
                self.evaluator,
                self.tensor,
                fmt,
                independent=self.settings.independent,
                decided=self.decided,
                max_loss=self.eps if max_loss is None else max_loss,
                must_beat=must_beat,
            )
            self.evaluations += 1
        result = self.seen[fmt]
        if self.on_evaluation is not None:
            self.on_evaluation(
                EvaluationRecord(
                    self.tensor,
                    fmt,
                    phase,
                    result.loss,
                    result.exact and result.accepted(self.eps),
                    result.exact,
                    self.eps,
                    0.0 if cached else result.seconds,
                    cached,
                    result.bound,
                )
            )
        return result

    def ok(self, fmt: Format, phase: Phase) -> bool:
        return self.loss(fmt, phase).accepted(self.eps)

    def run(self, position: int, z: float) -> TensorDecision:
        bw0, start = self._start(z)
        if start.pruned:  # Z == 0: pruned without evaluation (spec §2)
            return self._decision(
                position, bw0, start, (start, 0.0), (start, 0.0), start, "all zero: pruned", 0.0
            )
        # Diagonal (Alg. 2, lines 8-12): (BW, F) -= (1, 1) while acceptable, BW never below 1.
        best = start
        while best.bw > PRUNED_BW and self.ok(Format(best.bw - 1, best.f - 1), "diagonal"):
            best = Format(best.bw - 1, best.f - 1)
        # Bitwidth reduction at fixed F (lines 13-18).
        while best.bw > PRUNED_BW and self.ok(Format(best.bw - 1, best.f), "reduction"):
            best = Format(best.bw - 1, best.f)
        diagonal, diagonal_loss = best, self.seen[best].statistic
        # Local search over the 3x3 neighbourhood (lines 20-24): lowest loss, ties lower BW then F.
        # The centre is the best so far. A neighbour that would win a tie (fewer bits, or as many and a
        # lower F) may stop once its loss exceeds the best; one that would lose a tie needs a strictly
        # lower loss, so it may stop once its loss is certainly not below the best.
        leader: tuple[float, int, int, Format] = (diagonal_loss, diagonal.bw, diagonal.f, diagonal)
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                fmt = Format(diagonal.bw + i, diagonal.f + j) if diagonal.bw + i >= PRUNED_BW else None
                if fmt is None or fmt == diagonal:
                    continue
                if (fmt.bw, fmt.f) < leader[1:3]:
                    result = self.loss(fmt, "local", max_loss=min(self.eps, leader[0]))
                else:
                    result = self.loss(fmt, "local", must_beat=leader[0])
                if result.exact and result.statistic <= self.eps:
                    leader = min(leader, (result.statistic, fmt.bw, fmt.f, fmt))
        local_loss, _, _, local = leader
        fmt, rule = self._choose(diagonal, diagonal_loss, local, local_loss)
        chosen = self.seen[fmt]
        return self._decision(
            position,
            bw0,
            start,
            (diagonal, diagonal_loss),
            (local, local_loss),
            fmt,
            rule,
            chosen.loss,
            chosen.bound,
        )

    def _start(self, z: float) -> tuple[int, Format]:
        """``(BW0, F0)``, raising ``BW0`` by ``bw0_step`` up to the cap while unacceptable (line 5-7).

        A warm start replaces BW0 by ``start_bw``; the raise rule is the same."""
        bw0 = self.settings.bw0[self.tensor.kind] if self.start_bw is None else self.start_bw
        fmt = start_format(z, bw0, self.settings.offset_rule)
        if fmt.pruned:
            return bw0, fmt
        while not self.ok(fmt, "start"):
            if bw0 >= self.settings.bw0_cap:
                raise SearchError(self._no_format_message(fmt))
            bw0 = min(bw0 + self.settings.bw0_step, self.settings.bw0_cap)
            if self.log is not None:
                what = "BW0" if self.start_bw is None else "the warm start"
                self.log(f"{self.describe()}: start {fmt} is not acceptable, raising {what} to {bw0}")
            fmt = start_format(z, bw0, self.settings.offset_rule)
        return bw0, fmt

    def _no_format_message(self, fmt: Format) -> str:
        """Why the search stops at the ``BW0`` cap (spec §6 step 1), with what to change.

        An early-stopped evaluation only bounds the loss from below, so it is worded as a bound.
        """
        result = self.seen[fmt]
        what = "loss" if result.bound is None else f"{self.settings.confidence:.0%} upper bound of the loss"
        loss = (
            f"{what} {'' if result.exact else 'at least '}{result.statistic:.4%} > its budget {self.eps:.4%}"
        )
        message = f"{self.describe()}: no acceptable format even at {fmt} ({loss})"
        if self.before is not None:
            count = len(self.decided)
            decided = (
                "the tensor decided before it already loses"
                if count == 1
                else f"the {count} tensors decided before it already lose"
            )
            message += (
                f"; {decided} {self.before:.4%}, so an order or allocation that leaves later "
                "tensors more budget can help (--order, --budget)"
            )
        return message + "; or give a larger --eps"

    def describe(self) -> str:
        return f"layer '{self.tensor.layer}', {KIND_NAMES[self.tensor.kind]}"

    def _choose(
        self, diagonal: Format, diagonal_loss: float, local: Format, local_loss: float
    ) -> tuple[Format, str]:
        """The delta rule (Alg. 2, lines 25-34; spec §6 step 5)."""
        if local == diagonal:
            return diagonal, "diagonal (local search found nothing better)"
        if diagonal_loss - local_loss >= self.settings.delta:
            return local, "local: loss lower by at least delta"
        if local.bw < diagonal.bw:
            return local, "local: fewer bits"
        if diagonal.bw < local.bw:
            return diagonal, "diagonal: fewer bits"
        return local, "local: same bits, lower loss"

    def _decision(
        self,
        position: int,
        bw0: int,
        start: Format,
        diagonal: tuple[Format, float],
        local: tuple[Format, float],
        fmt: Format,
        rule: str,
        loss: float,
        bound: float | None = None,
    ) -> TensorDecision:
        return TensorDecision(
            tensor=self.tensor,
            position=position,
            eps=self.eps,
            fmt=fmt,
            loss=loss,
            bw0=bw0,
            start=start,
            diagonal=diagonal[0],
            diagonal_loss=diagonal[1],
            local=local[0],
            local_loss=local[1],
            rule=rule,
            evaluations=self.evaluations,
            bound=bound,
        )
