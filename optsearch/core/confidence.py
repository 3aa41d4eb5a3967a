"""The statistically guarded acceptance test (issue 20): a bound on the true relative loss. numpy/scipy only.

The search evaluates a candidate on ``n`` search samples and sees, per sample, whether the float model
(F) and the quantized network (Q) are right. The paired counts are

- ``L`` losses: F right and Q wrong;
- ``G`` gains: F wrong and Q right;
- ``C`` the float-correct count (``n a``).

The paper's test (Alg. 2) accepts when the observed relative loss ``(L - G) / C`` is within the budget.
The guarded test accepts when a one-sided upper confidence bound of the *true* relative loss is::

    delta = (P(L) - P(G)) / a = q_L - h,   a = P(F),  q_L = P(L) / a = P(Q wrong | F right),  h = P(G) / a.

Both parts have an exact Clopper-Pearson limit (Clopper & Pearson 1934, Biometrika 26:404-413), each
conditional on its own denominator, so the randomness of ``C`` is accounted for, not assumed away:

- ``L | C ~ Binomial(C, q_L)``: the float-correct samples are an i.i.d. sample of the float-correct
  population. Upper limit ``U = Beta^-1(conf; L + 1, C - L)``.
- ``G | m ~ Binomial(m, v)`` with ``m = C + G`` (the samples that F or Q gets right) and
  ``v = P(G) / (a + P(G))``, so that ``h = v / (1 - v)``. Lower limit
  ``v_lo = Beta^-1(1 - conf; G, m - G + 1)``, ``h_lo = v_lo / (1 - v_lo)``.

The two limits are combined by MOVER, Newcombe's square-and-add (Newcombe 1998, Stat Med 17:873-890,
method 10; Zou & Donner 2008, Stat Med 27:1693-1702), around the paper's estimate
(``q_L^ = L / C``, ``h^ = v^ / (1 - v^) = G / C``)::

    delta_U = (L - G) / C + sqrt((U - L / C)^2 + (G / C - h_lo)^2)

With no gains it is exactly the Clopper-Pearson limit of ``L / C`` (an exact bound, conservative by
construction), and with many flips both ways its width is about ``z sqrt(L + G) / C``, the McNemar
variance, where a union (Bonferroni) of the two limits would add ``z (sqrt L + sqrt G) / C``. With
gains, MOVER is an approximation: its coverage is checked against exact enumeration and by simulation
in tests/test_confidence.py (never below the stated level on the grids there).

What it guarantees: for one fixed network, the true loss exceeds the bound with probability about
``1 - conf`` (at most ``1 - conf`` when ``G = 0``). A search tests hundreds of networks on the same data
and keeps the cheapest that passes; the bound is not a family-wise guarantee over those, and a
Bonferroni correction over ``K`` tests would need ``(1 - conf) / K``, which lifts the smallest
certifiable loss from ``ln(1/(1-conf)) / C`` (3.0 samples at 95%) to ``ln(K/(1-conf)) / C``
(9.5 samples at K = 700). Early rejection is not a sequential test: it stops only when the full
evaluation's decision is already known (``best_case_upper_bound``), so it adds no error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

from optsearch.core.errors import OptsearchError

__all__ = [
    "CRITERIA",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_CRITERION",
    "METHOD",
    "SIZE_TABLE_ACCURACIES",
    "SIZE_TABLE_SAMPLES",
    "AcceptanceTest",
    "Criterion",
    "CriterionError",
    "SizeRow",
    "accuracy_interval",
    "best_case_upper_bound",
    "certifiable_loss",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "loss_interval",
    "loss_lower_bound",
    "loss_upper_bound",
    "observed_loss",
    "render_size_table",
    "resolution",
    "samples_needed",
    "size_table",
    "validate_confidence",
]

Criterion = Literal["guarded", "losses", "paper"]
"""``guarded``: the upper confidence bound is within the budget; ``losses``: the same bound with the
gains left out (the Clopper-Pearson limit of ``L / C``); ``paper``: Alg. 2's ``da <= eps``."""
CRITERIA: tuple[Criterion, ...] = ("guarded", "losses", "paper")
DEFAULT_CRITERION: Criterion = "guarded"
DEFAULT_CONFIDENCE = 0.95
METHOD = "MOVER (Newcombe's square-and-add) of exact Clopper-Pearson limits"
"""How every loss interval here is computed, in words for reports."""

SIZE_TABLE_SAMPLES: tuple[int, ...] = (500, 1000, 2000, 5000, 10000, 50000)
SIZE_TABLE_ACCURACIES: tuple[float, ...] = (0.99, 0.90, 0.75)


class CriterionError(OptsearchError, ValueError):
    """A bad ``--criterion`` or ``--confidence``: the CLI prints it on one line and exits with code 2."""


def validate_confidence(confidence: float) -> float:
    """``confidence`` itself when it lies in the open interval (0.5, 1), else a ``CriterionError``.

    At 0.5 or below a one-sided "upper" bound would sit at or below the estimate; 1 would need
    infinitely many samples.
    """
    if not (isinstance(confidence, numbers.Real) and 0.5 < confidence < 1.0):
        raise CriterionError(
            f"--confidence must be in the open interval (0.5, 1), got {confidence!r}; "
            f"for example {DEFAULT_CONFIDENCE}"
        )
    return float(confidence)


def _check_counts(losses: int, gains: int, float_correct: int, samples: int) -> None:
    """Counts that can come from ``samples`` paired outcomes, with at least one float-correct sample."""
    if not 0 < float_correct <= samples:
        raise ValueError(
            f"float_correct must be in 1..samples ({samples}), got {float_correct}: "
            "with no float-correct sample the relative loss is undefined"
        )
    if not 0 <= losses <= float_correct:
        raise ValueError(f"losses must be in 0..float_correct ({float_correct}), got {losses}")
    if not 0 <= gains <= samples - float_correct:
        wrong = samples - float_correct
        raise ValueError(f"gains must be in 0..samples - float_correct ({wrong}), got {gains}")


def clopper_pearson_upper(successes: int, trials: int, confidence: float) -> float:
    """One-sided exact upper limit of a binomial proportion (Clopper & Pearson 1934).

    ``Beta^-1(conf; x + 1, n - x)``, the ``p`` with ``P(X <= x | n, p) = 1 - conf``; 1 when ``x = n``.
    """
    if successes >= trials:
        return 1.0
    return float(stats.beta.ppf(confidence, successes + 1, trials - successes))


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """One-sided exact lower limit of a binomial proportion (Clopper & Pearson 1934).

    ``Beta^-1(1 - conf; x, n - x + 1)``, the ``p`` with ``P(X >= x | n, p) = 1 - conf``; 0 when ``x = 0``.
    """
    if successes <= 0:
        return 0.0
    return float(stats.beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def observed_loss(losses: int, gains: int, float_correct: int) -> float:
    """The paper's relative loss ``da = (a - a_q) / a = (L - G) / C`` (eq. 6).

    The numerator is the integer ``C - C_q``, so this is the same float as the evaluator's
    ``relative_loss(C, C_q)`` for the same counts.
    """
    return (losses - gains) / float_correct


def _gain_share_lower(gains: int, float_correct: int, level: float) -> float:
    """Lower limit of ``h = P(G) / a`` from ``G | m ~ Binomial(m, h / (1 + h))``, ``m = C + G``."""
    v = clopper_pearson_lower(gains, float_correct + gains, level)
    return v / (1.0 - v)


def _gain_share_upper(gains: int, float_correct: int, level: float) -> float:
    """Upper limit of ``h = P(G) / a`` (``v < 1`` because ``C >= 1``)."""
    v = clopper_pearson_upper(gains, float_correct + gains, level)
    return v / (1.0 - v)


def loss_upper_bound(losses: int, gains: int, float_correct: int, samples: int, confidence: float) -> float:
    """One-sided upper confidence bound, at ``confidence``, of the true relative loss ``(P(L) - P(G)) / a``.

    MOVER of Clopper-Pearson limits (module docstring; Newcombe 1998, method 10; Zou & Donner 2008)::

        (L - G) / C + sqrt((U - L / C)^2 + (G / C - h_lo)^2)

    Exactly the Clopper-Pearson limit of ``L / C`` when ``G = 0`` (``1 - (1 - conf)^(1/C)`` at
    ``L = 0``). Non-decreasing in ``losses`` and non-increasing in ``gains``: raising ``L`` by one adds
    ``1/C`` to the estimate and takes at most ``1/C`` from ``U - L/C`` (``U`` grows), and the square
    root is 1-Lipschitz in each term; raising ``G`` takes ``1/C`` from the estimate and adds at most
    ``1/C`` to ``G/C - h_lo`` (``h_lo`` grows).
    """
    validate_confidence(confidence)
    _check_counts(losses, gains, float_correct, samples)
    upper = clopper_pearson_upper(losses, float_correct, confidence)
    if gains == 0:
        return upper
    share = losses / float_correct
    gain_share = gains / float_correct
    gain_lower = _gain_share_lower(gains, float_correct, confidence)
    return observed_loss(losses, gains, float_correct) + math.hypot(upper - share, gain_share - gain_lower)


def loss_lower_bound(losses: int, gains: int, float_correct: int, samples: int, confidence: float) -> float:
    """One-sided lower confidence bound of the true relative loss: the mirror of ``loss_upper_bound``.

    ``(L - G) / C - sqrt((L / C - q_lo)^2 + (h_up - G / C)^2)``, Clopper-Pearson limits, MOVER.
    """
    validate_confidence(confidence)
    _check_counts(losses, gains, float_correct, samples)
    share = losses / float_correct
    gain_share = gains / float_correct
    lower = clopper_pearson_lower(losses, float_correct, confidence)
    gain_upper = _gain_share_upper(gains, float_correct, confidence)
    return observed_loss(losses, gains, float_correct) - math.hypot(share - lower, gain_upper - gain_share)


def loss_interval(
    losses: int, gains: int, float_correct: int, samples: int, confidence: float
) -> tuple[float, float]:
    """Two-sided ``confidence`` interval of the true relative loss (``METHOD``), for reports.

    Each side is the one-sided bound at ``(1 + confidence) / 2``.
    """
    validate_confidence(confidence)
    side = (1.0 + confidence) / 2.0
    return (
        loss_lower_bound(losses, gains, float_correct, samples, side),
        loss_upper_bound(losses, gains, float_correct, samples, side),
    )


def accuracy_interval(correct: int, samples: int, confidence: float) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) ``confidence`` interval of an accuracy, for reports."""
    validate_confidence(confidence)
    if not 0 <= correct <= samples or samples <= 0:
        raise ValueError(f"correct must be in 0..samples with samples >= 1, got {correct} of {samples}")
    side = (1.0 + confidence) / 2.0
    return clopper_pearson_lower(correct, samples, side), clopper_pearson_upper(correct, samples, side)


def _check_partial(
    losses: int,
    gains: int,
    float_correct: int,
    samples: int,
    unseen_float_correct: int,
    unseen_float_wrong: int,
) -> None:
    """Counts on a seen prefix that fit the totals and the unseen split."""
    seen_float_correct = float_correct - unseen_float_correct
    seen_float_wrong = samples - float_correct - unseen_float_wrong
    if min(unseen_float_correct, unseen_float_wrong, seen_float_correct, seen_float_wrong) < 0:
        raise ValueError(
            f"the unseen samples ({unseen_float_correct} float-correct, {unseen_float_wrong} float-wrong) "
            f"do not fit in {samples} samples with {float_correct} float-correct"
        )
    _check_counts(losses, gains, float_correct, samples)
    if losses > seen_float_correct or gains > seen_float_wrong:
        raise ValueError(
            f"{losses} losses and {gains} gains do not fit in the {seen_float_correct} float-correct and "
            f"{seen_float_wrong} float-wrong samples seen"
        )


def best_case_upper_bound(
    losses: int,
    gains: int,
    float_correct: int,
    samples: int,
    unseen_float_correct: int,
    unseen_float_wrong: int,
    confidence: float,
) -> float:
    """The smallest ``loss_upper_bound`` any completion of a partial evaluation can still reach.

    ``losses`` and ``gains`` are counted on the samples seen so far; ``float_correct`` and ``samples``
    are the totals of the whole search set (the float predictions are known in advance), and
    ``unseen_float_correct`` / ``unseen_float_wrong`` split the samples not yet seen. A completion
    ends with ``L = losses + x`` and ``G = gains + y``, ``0 <= x <= unseen_float_correct``,
    ``0 <= y <= unseen_float_wrong``. The bound is non-decreasing in ``L`` and non-increasing in ``G``
    (``loss_upper_bound``), so its minimum over completions is at ``x = 0``, ``y = unseen_float_wrong``
    (no further loss, every remaining float-wrong sample a gain), a completion that can happen. An
    evaluator that stops once this exceeds the budget therefore rejects only candidates the full
    evaluation rejects, as ``settled`` does for the paper's test.
    """
    _check_partial(losses, gains, float_correct, samples, unseen_float_correct, unseen_float_wrong)
    return loss_upper_bound(losses, gains + unseen_float_wrong, float_correct, samples, confidence)


def resolution(samples: int, accuracy: float) -> float:
    """The relative loss of one flipped sample, ``1 / (n a)``: no budget finer than this can be measured."""
    _check_size(samples, accuracy)
    return 1.0 / (samples * accuracy)


def certifiable_loss(samples: int, accuracy: float, confidence: float) -> float:
    """The bound of a candidate that flips nothing (``L = G = 0``): the smallest budget it can meet.

    ``1 - (1 - conf)^(1 / (n a))`` (Clopper-Pearson at zero), about ``ln(1 / (1 - conf))`` samples
    of relative loss (3.0 at 95%). A budget below it is met only by a candidate with gains.
    """
    validate_confidence(confidence)
    _check_size(samples, accuracy)
    return -math.expm1(math.log1p(-confidence) / (samples * accuracy))


def samples_needed(eps: float, accuracy: float, confidence: float) -> int:
    """The smallest ``n`` with ``certifiable_loss(n, accuracy, confidence) <= eps``.

    Closed form ``n >= ln(1 - conf) / (a ln(1 - eps))``, rounded up and checked against
    ``certifiable_loss`` so that the two agree to the last float.
    """
    validate_confidence(confidence)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    _check_size(1, accuracy)
    needed = max(1, math.ceil(math.log1p(-confidence) / (accuracy * math.log1p(-eps))))
    while needed > 1 and certifiable_loss(needed - 1, accuracy, confidence) <= eps:
        needed -= 1
    while certifiable_loss(needed, accuracy, confidence) > eps:
        needed += 1
    return needed


def _check_size(samples: int, accuracy: float) -> None:
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not 0.0 < accuracy <= 1.0:
        raise ValueError(f"accuracy must be in (0, 1], got {accuracy}")


@dataclass(frozen=True)
class SizeRow:
    """What ``samples`` search samples at float accuracy ``accuracy`` can resolve and certify."""

    samples: int
    accuracy: float
    confidence: float
    resolution: float
    """One sample of relative loss, ``1 / (n a)``."""
    certifiable_loss: float
    """The smallest budget a candidate that flips nothing meets (``certifiable_loss``)."""


def size_table(
    confidence: float = DEFAULT_CONFIDENCE,
    samples: Sequence[int] = SIZE_TABLE_SAMPLES,
    accuracies: Sequence[float] = SIZE_TABLE_ACCURACIES,
) -> list[SizeRow]:
    """Guidance on data size: one row per (n, a), n outer, in the given orders."""
    return [
        SizeRow(n, a, confidence, resolution(n, a), certifiable_loss(n, a, confidence))
        for n in samples
        for a in accuracies
    ]


def _percent(value: float) -> str:
    return f"{100 * value:.3g}%"


def render_size_table(rows: Sequence[SizeRow]) -> str:
    """``size_table`` as Markdown: one line per n, one column per accuracy, "certifiable (one sample)"."""
    samples = list(dict.fromkeys(row.samples for row in rows))
    accuracies = list(dict.fromkeys(row.accuracy for row in rows))
    confidences = sorted({row.confidence for row in rows})
    cells = {(row.samples, row.accuracy): row for row in rows}
    level = ", ".join(f"{c:g}" for c in confidences)
    lines = [
        f"| search samples n | {' | '.join(f'a = {_percent(a)}' for a in accuracies)} |",
        "|---:|" + "---:|" * len(accuracies),
    ]
    for n in samples:
        row_cells = []
        for a in accuracies:
            row = cells.get((n, a))
            row_cells.append(
                "" if row is None else f"{_percent(row.certifiable_loss)} ({_percent(row.resolution)})"
            )
        lines.append(f"| {n:,} | {' | '.join(row_cells)} |")
    lines.append("")
    lines.append(
        f"Smallest certifiable relative loss at confidence {level} (one sample of relative loss, 1/(n a))."
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class AcceptanceTest:
    """The one object the search and the evaluators ask whether a candidate fits its budget.

    ``paper``: the observed loss ``(L - G) / C`` is within the budget (Alg. 2, lines 5, 8, 13).
    ``guarded``: its upper confidence bound at ``confidence`` is (``loss_upper_bound``). The
    ``statistic`` is what is compared with the budget (and with ``must_beat`` in the local search);
    ``best_case`` is its smallest value over the completions of a partial evaluation, for early
    rejection with ``settled``.
    """

    criterion: Criterion = DEFAULT_CRITERION
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise CriterionError(f"--criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        validate_confidence(self.confidence)

    def statistic(self, losses: int, gains: int, float_correct: int, samples: int) -> float:
        """The number compared with the budget: the observed loss (paper) or its upper bound (guarded)."""
        if self.criterion == "paper":
            _check_counts(losses, gains, float_correct, samples)
            return observed_loss(losses, gains, float_correct)
        return loss_upper_bound(losses, self._gains(gains), float_correct, samples, self.confidence)

    def _gains(self, gains: int) -> int:
        """The gains the bound nets against the losses: none under ``losses`` (a float error that
        quantization noise turns right by chance is no budget: docs/budget.md)."""
        return 0 if self.criterion == "losses" else gains

    def bound(self, losses: int, gains: int, float_correct: int, samples: int) -> float | None:
        """The upper confidence bound under the guarded criterion; None under the paper's (whose
        statistic is the observed loss itself)."""
        if self.criterion == "paper":
            return None
        return loss_upper_bound(losses, self._gains(gains), float_correct, samples, self.confidence)

    def accepts(self, losses: int, gains: int, float_correct: int, samples: int, budget: float) -> bool:
        """``statistic <= budget``."""
        return self.statistic(losses, gains, float_correct, samples) <= budget

    def best_case(
        self,
        losses: int,
        gains: int,
        float_correct: int,
        samples: int,
        unseen_float_correct: int,
        unseen_float_wrong: int,
    ) -> float:
        """The smallest ``statistic`` any completion reaches (``best_case_upper_bound`` for guarded).

        For the paper's test it is ``(L - G - unseen float-wrong) / C``, the evaluator's bound today.
        """
        if self.criterion == "paper":
            _check_partial(losses, gains, float_correct, samples, unseen_float_correct, unseen_float_wrong)
            return observed_loss(losses, gains + unseen_float_wrong, float_correct)
        if self.criterion == "losses":  # the unseen samples can add losses, never take one away
            _check_partial(losses, gains, float_correct, samples, unseen_float_correct, unseen_float_wrong)
            return loss_upper_bound(losses, 0, float_correct, samples, self.confidence)
        return best_case_upper_bound(
            losses, gains, float_correct, samples, unseen_float_correct, unseen_float_wrong, self.confidence
        )

    def certifiable_loss(self, samples: int, accuracy: float) -> float:
        """The smallest budget a candidate that flips nothing meets: 0 (paper) or ``certifiable_loss``."""
        if self.criterion == "paper":
            _check_size(samples, accuracy)
            return 0.0
        return certifiable_loss(samples, accuracy, self.confidence)

    def describe(self) -> str:
        """One line for reports and logs."""
        if self.criterion == "paper":
            return "paper: the observed relative loss is within the budget (Alg. 2)"
        if self.criterion == "losses":
            return (
                f"losses: the one-sided {self.confidence:.0%} upper confidence bound of the share of "
                "float-correct samples the network gets wrong (gains not netted; exact Clopper-Pearson) "
                "is within the budget"
            )
        return (
            f"guarded: the one-sided {self.confidence:.0%} upper confidence bound of the relative loss "
            f"is within the budget ({METHOD})"
        )
