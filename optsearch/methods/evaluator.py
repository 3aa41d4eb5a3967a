"""The interface between the search and whatever measures accuracy (spec §4-§5, eq. 6, Alg. 1). No Keras.

The search asks one question: with these tensors quantized to these formats, what is the relative
accuracy loss? ``varying`` says which tensor changes between calls (an engine may cache everything
upstream of it), ``max_loss`` says which loss would already be rejected and ``must_beat`` which
loss the candidate must stay below to matter (the local search's tie rules). An engine may stop
as soon as the answer is settled (``settled``) and return a lower bound, marked ``exact=False``:
every decision of the search stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId


@dataclass(frozen=True)
class Evaluation:
    """The result of one evaluation of a quantized network on the search set."""

    loss: float
    """Relative accuracy loss ``da = (a - a_q) / a`` (eq. 6); a lower bound when ``exact`` is False."""
    correct: int
    """Correct top-1 predictions among the ``samples`` evaluated."""
    samples: int
    exact: bool
    """False when evaluation stopped early because the answer was settled (see ``settled``)."""
    seconds: float
    bound: float | None = None
    """Under the guarded criterion: the upper confidence bound of the loss (``core.confidence``), a
    lower bound of it when ``exact`` is False; None under the paper's criterion."""
    losses: int | None = None
    """Samples the float model gets right and the quantized network wrong (``L``), when counted."""
    gains: int | None = None
    """Samples the float model gets wrong and the quantized network right (``G``), when counted."""
    noise: float | None = None
    """Mean over the samples evaluated of the squared distance between the network's outputs and the
    float model's (the quantization noise power at the output), when measured; over the samples
    seen only when ``exact`` is False."""
    mismatches: int | None = None
    """Samples whose top-1 class differs from the float model's (what Sakr & Shanbhag's bound
    predicts, ``core.analytic``), when counted; among the samples seen when ``exact`` is False."""

    @property
    def statistic(self) -> float:
        """What the acceptance test compares with the budget: the bound (guarded) or the loss (paper)."""
        return self.loss if self.bound is None else self.bound

    def accepted(self, eps: float) -> bool:
        """``statistic <= eps`` (Alg. 2, lines 5, 8, 13); exact also for early-stopped evaluations."""
        return self.statistic <= eps


class Evaluator(Protocol):
    """Measures the relative loss of the network with some tensors quantized and the rest float."""

    @property
    def float_accuracy(self) -> float:
        """Top-1 accuracy ``a`` of the float model on the search set."""
        ...

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Evaluation:
        """Quantize exactly the tensors in ``formats`` (all others float) and measure the loss."""
        ...


def settled(bound: float, max_loss: float | None, must_beat: float | None) -> bool:
    """Whether a loss known to be at least ``bound`` already answers the search's question.

    It does when the candidate is rejected for sure (``bound > max_loss``) or can no longer be
    strictly better than the best so far (``bound >= must_beat``), so its exact loss is never used.
    """
    return (max_loss is not None and bound > max_loss) or (must_beat is not None and bound >= must_beat)


def relative_loss(float_correct: int, quantized_correct: int) -> float:
    """``da = (a - a_q) / a`` with both accuracies on the same samples (eq. 6).

    Written on correct counts so that every code path computes the same float for the same counts.
    """
    if float_correct <= 0:
        raise ValueError("the float model has no correct prediction: the relative loss is undefined")
    return (float_correct - quantized_correct) / float_correct


def candidate_formats(
    tensor: TensorId, fmt: Format, *, independent: bool, decided: Mapping[TensorId, Format]
) -> dict[TensorId, Format]:
    """The formats EvalAccLossCNN applies for a candidate (Alg. 1).

    Independent (``IND``): only the tensor under test is quantized. Dependent: every format already
    decided in ``r_Q`` plus the candidate.
    """
    if independent:
        return {tensor: fmt}
    return {**decided, tensor: fmt}


def eval_acc_loss(
    evaluator: Evaluator,
    tensor: TensorId,
    fmt: Format,
    *,
    independent: bool,
    decided: Mapping[TensorId, Format],
    max_loss: float | None = None,
    must_beat: float | None = None,
) -> Evaluation:
    """EvalAccLossCNN (Alg. 1): the loss of the network with ``tensor`` at ``fmt``."""
    formats = candidate_formats(tensor, fmt, independent=independent, decided=decided)
    return evaluator.evaluate(formats, varying=tensor, max_loss=max_loss, must_beat=must_beat)
