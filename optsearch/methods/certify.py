"""Certify the searched network on samples the search never saw, backing off where it fails.

Every decision of Alg. 2 picks the cheapest candidate whose loss (or its bound) fits, among hundreds,
on one set of samples: the chosen network's loss on that set is biased low, whatever the test. A
part of the search data kept away from every decision (``--certify-fraction``) sees only the final
network: the acceptance test there is a test of one network chosen in advance. While it fails, the
tensor whose decision added the most loss gets one bit back along the diagonal, ``(BW+1, F+1)``
(Alg. 2's last step undone: the range is kept, the LSB halves), and the network is tested again.
No Keras here: it talks to an ``Evaluator`` like the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.evaluator import Evaluation, Evaluator
from optsearch.methods.opt_search import TensorDecision

#: Back-off steps before giving up: each costs one evaluation of the certification set.
MAX_BACK_OFFS = 64


@dataclass(frozen=True)
class BackOff:
    """One tensor given one more bit, and the certification set's verdict on the network after it."""

    tensor: TensorId
    before: Format
    after: Format
    loss: float
    statistic: float
    """The acceptance test's statistic (the upper bound under the guarded criterion)."""
    exact: bool


@dataclass(frozen=True)
class Certification:
    """The formats after certification, the back-off steps that led there, and the verdict."""

    formats: dict[TensorId, Format]
    first: Evaluation
    """The searched network, as the search left it, on the certification set."""
    steps: tuple[BackOff, ...]
    certified: bool
    """Whether the final network meets eps on the certification set."""
    why: str = ""
    """When not certified: why the back-off stopped."""

    @property
    def added_bits(self) -> dict[TensorId, int]:
        """Per tensor: the bits the back-off gave it (tensors it did not touch are left out)."""
        out: dict[TensorId, int] = {}
        for step in self.steps:
            out[step.tensor] = out.get(step.tensor, 0) + 1
        return out


def loss_increments(decisions: Sequence[TensorDecision]) -> dict[TensorId, float]:
    """What each decision added to the network's loss (dependent search: its loss minus the previous
    decision's; a pruned all-zero tensor adds nothing)."""
    out: dict[TensorId, float] = {}
    previous = 0.0
    for decision in decisions:
        loss = decision.loss if decision.evaluations else previous
        out[decision.tensor] = loss - previous
        previous = loss
    return out


def certify(
    evaluator: Evaluator,
    decisions: Sequence[TensorDecision],
    eps: float,
    *,
    max_back_offs: int = MAX_BACK_OFFS,
    on_step: Callable[[BackOff], None] | None = None,
) -> Certification:
    """Test the searched network on the certification set; while it fails, back off (module doc).

    The tensor backed off is the one with the largest loss increment still owed; each bit given
    back halves what it is taken to owe (one more bit quarters the noise power it injects), so the
    back-off moves on to the next tensor rather than spending many bits on one. A tensor is never
    raised above the format its search started from.
    """
    formats = {d.tensor: d.fmt for d in decisions}
    owed = loss_increments(decisions)
    ceiling = {d.tensor: d.start for d in decisions}
    first = result = evaluator.evaluate(formats, max_loss=eps)
    steps: list[BackOff] = []
    why = ""
    while not (result.exact and result.accepted(eps)):
        # An all-zero tensor was pruned at its start (BW 1): its ceiling keeps it pruned.
        open_ = [t for t, fmt in formats.items() if fmt.bw < ceiling[t].bw]
        if not open_:
            why = "every tensor is back at the format its search started from"
            break
        if len(steps) >= max_back_offs:
            why = f"{max_back_offs} bits given back, the most it gives"
            break
        tensor = max(open_, key=lambda t: (owed[t], -list(formats).index(t)))
        before = formats[tensor]
        formats[tensor] = Format(before.bw + 1, before.f + 1)
        owed[tensor] /= 2
        result = evaluator.evaluate(formats, max_loss=eps)
        step = BackOff(tensor, before, formats[tensor], result.loss, result.statistic, result.exact)
        steps.append(step)
        if on_step is not None:
            on_step(step)
    certified = result.exact and result.accepted(eps)
    return Certification(dict(formats), first, tuple(steps), certified, "" if certified else why)
