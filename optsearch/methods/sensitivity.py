"""Sensitivity curves (issue 21, step 1): each tensor's loss as a function of its own format. No Keras.

Every other tensor stays float, so the engine's prefix cache computes everything upstream of the tensor
once and each candidate runs only the downstream part. The candidates are those Alg. 2 visits:

- the **diagonal** ``(BW - 1, F - 1)`` (the range kept, the LSB doubled; Alg. 2 lines 8-12), from
  ``START_BW`` bits at the offset of eq. 8 (first climbing ``(BW + 1, F + 1)`` only while that is
  beyond the curve's reach), descending until the loss leaves the reach. Rungs above are predicted,
  not measured: rounding noise quarters in power per bit. (Climbing until nothing flips cost up to
  twelve evaluations per tensor on a CIFAR-10 MobileNet whose near-tie samples flip at 16 bits.)
- the **bitwidth reduction** at fixed ``F`` (one integer bit fewer; lines 13-18): from the cheapest
  lossless diagonal point, the line ``BW - F = I0 - 1`` is descended while it beats the diagonal at
  the same bitwidth (a range cut short can buy a finer LSB), up to the reach.

A curve stops at ``reach`` (a relative loss, by the acceptance test's statistic): beyond it the
evaluation stops early and the point is kept only as a lower bound. Each point keeps the paired
counts ``L`` (float right, quantized wrong) and ``G`` of ``core.confidence``, and the output noise
power (the mean squared distance of the network's outputs to the float model's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optsearch.core.fixedpoint import PRUNED_BW, Format, OffsetRule, start_format
from optsearch.core.tensors import TensorId
from optsearch.methods.evaluator import Evaluator

#: Where every curve starts: 8 bits at the offset of eq. 8.
START_BW = 8
#: Curves are measured up to this multiple of eps: ``optsearch pareto`` answers any budget up to it
#: from the stored curves.
CURVE_REACH = 2.0


@dataclass(frozen=True)
class CurvePoint:
    """One measured format of one tensor, every other tensor float."""

    fmt: Format
    losses: int
    """``L``: samples the float model gets right and the network with this tensor quantized wrong; a
    lower bound when ``exact`` is False."""
    gains: int
    loss: float
    """The observed relative loss ``(L - G) / C``; a lower bound when not exact."""
    statistic: float
    """What the acceptance test compares with the budget (the upper bound under the guarded test)."""
    exact: bool
    """False: the evaluation stopped once the point was beyond the curve's reach."""
    noise: float = 0.0
    """The output noise power (``Evaluation.noise``): mean squared distance to the float outputs."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "bw": self.fmt.bw,
            "f": self.fmt.f,
            "losses": self.losses,
            "gains": self.gains,
            "loss": self.loss,
            "statistic": self.statistic,
            "exact": self.exact,
            "noise": self.noise,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurvePoint:
        return cls(
            Format(int(data["bw"]), int(data["f"])),
            int(data["losses"]),
            int(data["gains"]),
            float(data["loss"]),
            float(data["statistic"]),
            bool(data["exact"]),
            float(data.get("noise", 0.0)),
        )


@dataclass(frozen=True)
class Curve:
    """A tensor's sensitivity curve: its measured points in the order they were measured."""

    tensor: TensorId
    points: tuple[CurvePoint, ...]
    evaluations: int
    seconds: float = 0.0

    def usable(self) -> list[CurvePoint]:
        """The points measured exactly (within the reach)."""
        return [p for p in self.points if p.exact]

    def predicted(self) -> dict[Format, float]:
        """Each usable point's predicted output noise power, never below what fewer bits predict.

        A point's prediction is the largest of its own measured noise and ``noise(q) / 4^(BW_p -
        BW_q)`` over the measured points ``q`` of the same line (same ``BW - F``) with fewer bits: one
        more bit halves the LSB and quarters the power of the rounding noise it injects. So the
        prediction never grows with the bits; unlike a count of flipped samples, a noise power is
        measured on every sample, flipped or not, and a tensor that flips nothing still shows how
        close it is to flipping.
        """
        out: dict[Format, float] = {}
        usable = self.usable()
        for p in usable:
            line = [q for q in usable if q.fmt.integer_bits == p.fmt.integer_bits and q.fmt.bw <= p.fmt.bw]
            out[p.fmt] = max(q.noise / 4.0 ** (p.fmt.bw - q.fmt.bw) for q in line)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": str(self.tensor),
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "points": [p.to_dict() for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Curve:
        return cls(
            TensorId.parse(str(data["tensor"])),
            tuple(CurvePoint.from_dict(p) for p in data["points"]),
            int(data["evaluations"]),
            float(data.get("seconds", 0.0)),
        )


def measure_curve(
    evaluator: Evaluator,
    tensor: TensorId,
    z: float,
    *,
    reach: float,
    offset_rule: OffsetRule = "paper",
    bw_cap: int = 24,
    on_point: Callable[[TensorId, CurvePoint, str, float], None] | None = None,
) -> Curve:
    """The sensitivity curve of ``tensor`` (module doc). ``z``: its largest magnitude (eq. 8);
    ``reach``: the statistic beyond which evaluations stop early; ``on_point`` sees every point with
    its phase (``climb``, ``diagonal``, ``reduction``) and the seconds it took."""
    started = time.perf_counter()
    start = start_format(z, START_BW, offset_rule)
    if start.pruned:  # all zero: pruned without evaluation (spec §2)
        return Curve(tensor, (CurvePoint(start, 0, 0, 0.0, 0.0, True),), 0, 0.0)
    seen: dict[Format, CurvePoint] = {}

    def point(fmt: Format, phase: str) -> CurvePoint:
        if fmt not in seen:
            result = evaluator.evaluate({tensor: fmt}, varying=tensor, max_loss=reach)
            losses = result.losses if result.losses is not None else 0
            gains = result.gains if result.gains is not None else 0
            noise = result.noise if result.noise is not None else 0.0
            seen[fmt] = CurvePoint(fmt, losses, gains, result.loss, result.statistic, result.exact, noise)
            if on_point is not None:
                on_point(tensor, seen[fmt], phase, result.seconds)
        return seen[fmt]

    top = point(start, "climb")
    while not top.exact and top.fmt.bw < bw_cap:  # beyond the reach at START_BW: more bits first
        top = point(Format(top.fmt.bw + 1, top.fmt.f + 1), "climb")
    # The diagonal, down from there until beyond the reach. Above its top the noise power quarters
    # per bit (``methods.pareto.ladder`` predicts those rungs): no need to measure them.
    diagonal = {top.fmt.bw: top}
    lowest = top
    while lowest.exact and lowest.fmt.bw > PRUNED_BW:
        lowest = point(Format(lowest.fmt.bw - 1, lowest.fmt.f - 1), "diagonal")
        diagonal[lowest.fmt.bw] = lowest
    cheapest_lossless = min(
        (p for p in diagonal.values() if p.exact and p.losses == 0), key=lambda p: p.fmt.bw, default=top
    )
    # The reduction line (one integer bit fewer), while it beats the diagonal at the same bitwidth.
    bw, f = cheapest_lossless.fmt.bw - 1, cheapest_lossless.fmt.f
    while bw > PRUNED_BW:
        reduced = point(Format(bw, f), "reduction")
        other = diagonal.get(bw)
        beats = other is None or not other.exact or reduced.losses < other.losses
        if not (reduced.exact and beats):
            break
        bw, f = bw - 1, f - 1
    return Curve(tensor, tuple(seen.values()), len(seen), time.perf_counter() - started)


#: ``--sensitivity analytic``: predicted curves span these bitwidths (the diagonal at eq. 8's offset).
PREDICTED_BITS = range(2, 17)


def predicted_curves(
    gains: Mapping[TensorId, float],
    magnitudes: Mapping[TensorId, float],
    offset_rule: OffsetRule = "paper",
) -> dict[TensorId, Curve]:
    """``--sensitivity analytic`` (issue 23): curves predicted from Sakr & Shanbhag's noise gains
    instead of measured. A tensor's point at ``BW`` bits (the diagonal, ``F`` from eq. 8) is weighted
    by its term of the mismatch bound, ``Delta^2 E_t`` with ``Delta = 2^-F`` (Sakr, Kim & Shanbhag
    2017, Thm. 1), which adds over tensors as the measured noise powers do; nothing is evaluated
    (every point has no flips and ``exact`` True, so no flip scale: the front is searched from its
    middle). An all-zero tensor is pruned."""
    curves: dict[TensorId, Curve] = {}
    for tensor, gain in gains.items():
        z = magnitudes[tensor]
        if z == 0:
            curves[tensor] = Curve(tensor, (CurvePoint(start_format(0.0, 2), 0, 0, 0.0, 0.0, True),), 0)
            continue
        points = []
        for bw in PREDICTED_BITS:
            fmt = start_format(z, bw, offset_rule)
            points.append(CurvePoint(fmt, 0, 0, 0.0, 0.0, True, gain * fmt.lsb**2))
        curves[tensor] = Curve(tensor, tuple(points), 0)
    return curves


def measure_curves(
    evaluator: Evaluator,
    tensors: Sequence[TensorId],
    magnitudes: Mapping[TensorId, float],
    *,
    reach: float,
    offset_rule: OffsetRule = "paper",
    bw_cap: int = 24,
    measured: Mapping[TensorId, Curve] | None = None,
    on_point: Callable[[TensorId, CurvePoint, str, float], None] | None = None,
    on_curve: Callable[[Curve], None] | None = None,
) -> dict[TensorId, Curve]:
    """Every tensor's curve in ``tensors`` order (forward, so the prefix cache grows with the cut);
    ``measured`` curves (a resumed run, or stored curves) are kept, not measured again."""
    curves: dict[TensorId, Curve] = {}
    for tensor in tensors:
        if measured is not None and tensor in measured:
            curves[tensor] = measured[tensor]
            continue
        curves[tensor] = measure_curve(
            evaluator,
            tensor,
            magnitudes[tensor],
            reach=reach,
            offset_rule=offset_rule,
            bw_cap=bw_cap,
            on_point=on_point,
        )
        if on_curve is not None:
            on_curve(curves[tensor])
    return curves
