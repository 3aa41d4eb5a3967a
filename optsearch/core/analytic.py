"""Precisions predicted from quantization noise gains, without search (issue 23, spec §10). numpy only.

Sakr, Kim & Shanbhag, "Analytical Guarantees on Numerical Precision of Deep Neural Networks"
(ICML 2017), Theorem 1, bound the probability ``p_m`` that quantization changes a prediction
(the *mismatch probability*). Model each quantized tensor element ``h`` as ``h + q_h`` with
``q_h`` independent and uniform on ``[-Delta/2, Delta/2]`` (variance ``Delta**2 / 12``), linearise
the margins ``D_i = z_yhat - z_i`` to first order, and apply a union bound over ``i != yhat`` and
Chebyshev's inequality, halved because the noise is symmetric (``P(dD < -D) = P(|dD| > D) / 2``)::

    p_m <= sum_t Delta_t**2 * E_t,                                                   (Thm. 1)
    E_t  = E_x[ sum_{i != yhat} sum_{h in t} |d(z_yhat - z_i)/dh|**2 / (24 * (z_yhat - z_i)**2) ]

with ``Delta_t = 2**-F_t`` the tensor's LSB. The ``1/24`` is ``1/12`` (the uniform noise
variance, not ``1/4``: ``Delta**2 / 4`` would be the worst case ``|q| <= Delta/2``) times ``1/2``
(symmetry); it sits inside ``E`` as in the paper, so the bound has no further constant. Sakr &
Shanbhag (ICLR 2019, "Per-tensor fixed-point quantization of the back-propagation algorithm",
Criterion 1; seeds 000/002) sum it over every layer's tensors (``E_{W_l -> p_m}``,
``E_{A_l -> p_m}``); we add the biases ``E_{B_l}`` the same way.

Equalising the per-tensor terms ``Delta_t**2 E_t`` gives (ICLR 2019, Criterion 1; spec §10)::

    B_t = B_min + round(log2 sqrt(E_t / E_min))

where the papers' tensors lie in ``[-1, 1]`` and ``Delta = 2**-(B-1)``. Our tensors keep their
own range, so the gains are first scaled into ``[-1, 1]`` by the power of two above each tensor's
largest magnitude ``Z`` (``normalised_gains``); ``F`` then follows from ``Z`` exactly as the search
starts (``fixedpoint.start_format``), and the bound is computed on those formats.

Park et al., "Training deep neural network in limited precision" (2018, seed 004), eq. 4-5: the
last FC layer before a softmax needs ``BW > log2(classes - 1) + log2(2 / alpha)`` bits.

**Reading of eps.** ``eps`` bounds the relative accuracy loss ``(a - a_q) / a`` (eq. 6). A sample
can turn from right to wrong only if its prediction changes, so ``a - a_q <= p_m`` and
``p_m <= eps * a`` implies ``(a - a_q) / a <= eps``: eps is read as a budget on the mismatch
probability relative to the float accuracy ``a`` (``mismatch_budget``). It is conservative: flips of
wrong predictions cost nothing and flips of right ones may be repaid by wrong ones turning right.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optsearch.core.fixedpoint import Format, OffsetRule, start_format
from optsearch.core.tensors import TensorId

#: ``1/24`` in ``E`` (Sakr et al. 2017, Thm. 1): uniform noise variance ``Delta**2/12`` times 1/2.
GAIN_CONSTANT = 1.0 / 24.0
#: Park et al. (2018): "alpha = 0.5 is a reasonable choice" (below eq. 5).
PARK_ALPHA = 0.5
#: ``B_min`` candidates tried by ``choose_b_min``; BW = 1 is pruning, not a precision.
B_MIN_RANGE = (2, 32)


@dataclass(frozen=True)
class NoiseGains:
    """Per-tensor noise gains ``E_t`` measured on ``samples`` samples of data (Thm. 1's ``E``).

    ``ambiguous`` samples have a tie at the top of the float scores (a zero margin, ``E`` infinite):
    they are left out of ``gains`` and counted whole in the bound (a probability is at most 1).
    """

    gains: dict[TensorId, float]
    samples: int
    ambiguous: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"noise gains need at least one sample, got {self.samples}")
        if not 0 <= self.ambiguous <= self.samples:
            raise ValueError(f"ambiguous samples must be in [0, {self.samples}], got {self.ambiguous}")
        for tensor, gain in self.gains.items():
            if not (math.isfinite(gain) and gain >= 0.0):
                raise ValueError(f"{tensor}: a noise gain is finite and non-negative, got {gain!r}")

    @property
    def ambiguous_fraction(self) -> float:
        """Share of samples whose float prediction is a tie; their mismatch is bounded by 1."""
        return self.ambiguous / self.samples

    def as_dict(self) -> dict[str, Any]:
        """JSON form: tensors as ``"layer:K"`` strings, in tensor order."""
        return {
            "gains": {str(t): self.gains[t] for t in sorted(self.gains)},
            "samples": self.samples,
            "ambiguous": self.ambiguous,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoiseGains:
        gains = {TensorId.parse(k): float(v) for k, v in data["gains"].items()}
        return cls(gains, int(data["samples"]), int(data.get("ambiguous", 0)))


def _gain_table(gains: NoiseGains | Mapping[TensorId, float]) -> tuple[Mapping[TensorId, float], float]:
    if isinstance(gains, NoiseGains):
        return gains.gains, gains.ambiguous_fraction
    return gains, 0.0


def noise_variance(lsb: float) -> float:
    """Variance ``Delta**2 / 12`` of rounding noise, uniform on ``[-Delta/2, Delta/2]``."""
    return lsb * lsb / 12.0


def tensor_bounds(
    gains: NoiseGains | Mapping[TensorId, float],
    formats: Mapping[TensorId, Format],
    magnitudes: Mapping[TensorId, float] | None = None,
) -> dict[TensorId, float]:
    """Each quantized tensor's term ``Delta_t**2 E_t`` of the bound (Thm. 1), ``Delta_t = 2**-F_t``.

    A tensor with ``Z = 0`` (from ``magnitudes``) quantizes exactly: 0. A pruned tensor (BW = 1)
    of non-zero values is no small rounding noise: ``inf`` (the bound says nothing).
    """
    table, _ = _gain_table(gains)
    terms: dict[TensorId, float] = {}
    for tensor, fmt in formats.items():
        if tensor not in table:
            raise KeyError(f"no noise gain for {tensor}; estimate the gains of every tensor in the formats")
        if magnitudes is not None and magnitudes.get(tensor) == 0:
            terms[tensor] = 0.0
        elif fmt.pruned:
            terms[tensor] = math.inf
        else:
            terms[tensor] = fmt.lsb * fmt.lsb * table[tensor]
    return terms


def mismatch_bound(
    gains: NoiseGains | Mapping[TensorId, float],
    formats: Mapping[TensorId, Format],
    magnitudes: Mapping[TensorId, float] | None = None,
) -> float:
    """Predicted mismatch probability ``p_m <= sum_t Delta_t**2 E_t`` (Sakr et al. 2017, Thm. 1).

    Tensors not in ``formats`` stay float (no term). With ``NoiseGains`` the share of tied samples
    is added. A value of 1 or more says nothing; so does any first-order bound when the noise is
    large or a format clips (the noise is then neither small nor within ``Delta/2``).
    """
    _, ambiguous = _gain_table(gains)
    return ambiguous + math.fsum(tensor_bounds(gains, formats, magnitudes).values())


def mismatch_budget(eps: float, float_accuracy: float) -> float:
    """The mismatch budget ``eps * a`` that keeps the relative loss within eps (module docstring)."""
    if not (math.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps must be a positive fraction, got {eps!r}")
    if not (0.0 < float_accuracy <= 1.0):
        raise ValueError(f"the float accuracy must be in (0, 1], got {float_accuracy!r}")
    return eps * float_accuracy


def range_scale(z: float) -> float:
    """``2**ceil(log2 Z)``: the power of two that scales a tensor of largest magnitude ``Z`` into
    ``[-1, 1]``, where ``start_format(Z, B, "paper")`` has LSB ``2**-(B-1)`` exactly as in the papers."""
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"the largest magnitude must be positive and finite, got {z}")
    return math.ldexp(1.0, -start_format(z, 2, "paper").f + 1)


def normalised_gains(
    gains: NoiseGains | Mapping[TensorId, float], magnitudes: Mapping[TensorId, float]
) -> dict[TensorId, float]:
    """``E_t * range_scale(Z_t)**2``: the gain of the tensor scaled into ``[-1, 1]`` (the papers'
    ``E``, for ``Delta = 2**-(B-1)``). Tensors with ``Z = 0`` are left out (they are pruned exactly)."""
    table, _ = _gain_table(gains)
    missing = [str(t) for t in magnitudes if t not in table]
    if missing:
        raise KeyError(f"no noise gain for {', '.join(missing)}")
    return {t: table[t] * range_scale(z) ** 2 for t, z in magnitudes.items() if z != 0}


def equalised_bitwidths(normalised: Mapping[TensorId, float], b_min: int) -> dict[TensorId, int]:
    """``B_t = max(2, B_min + round(log2 sqrt(E_t / E_min)))`` (Sakr & Shanbhag 2019, Criterion 1).

    ``E_min`` is the smallest positive gain; a tensor with gain 0 (no first-order effect) gets
    ``B_min``. Halves round up (``floor(x + 1/2)``): the tie goes to the side that keeps the bound.
    ``B_min`` below 2 extends the criterion where even ``B_min = 2`` is more than the budget needs
    (a tensor with a near-zero gain would otherwise hold every other one far above it): the terms
    stay equal, except that no tensor goes below 2 bits (BW = 1 prunes).
    """
    positive = [g for g in normalised.values() if g > 0.0]
    if not positive:
        return dict.fromkeys(normalised, max(2, b_min))
    e_min = min(positive)
    return {t: max(2, b_min + (equalised_offset(g, e_min) if g > 0.0 else 0)) for t, g in normalised.items()}


def equalised_offset(gain: float, e_min: float) -> int:
    """``round(log2 sqrt(E_t / E_min))``, halves up: a tensor's bits above ``B_min``."""
    return math.floor(0.5 * math.log2(gain / e_min) + 0.5)


def analytic_formats(
    gains: NoiseGains | Mapping[TensorId, float],
    magnitudes: Mapping[TensorId, float],
    b_min: int,
    rule: OffsetRule = "paper",
    floors: Mapping[TensorId, int] | None = None,
) -> dict[TensorId, Format]:
    """Noise-gain-equalised bitwidths for ``b_min``, raised to ``floors`` (e.g. Park's bound),
    with ``F`` from each tensor's range (``start_format``); ``Z = 0`` tensors are pruned ``(1, 0)``."""
    bits = equalised_bitwidths(normalised_gains(gains, magnitudes), b_min)
    floors = floors or {}
    # start_format prunes Z = 0 tensors whatever the bitwidth.
    return {
        t: start_format(z, max(bits.get(t, b_min), floors.get(t, 0)), rule) for t, z in magnitudes.items()
    }


@dataclass(frozen=True)
class AnalyticPlan:
    """The analytic mode's choice: the smallest ``B_min`` whose formats' bound fits ``budget``."""

    b_min: int
    formats: dict[TensorId, Format]
    bound: float
    budget: float
    offsets: dict[TensorId, int]
    """``B_t - B_min`` before floors: each tensor's noise-gain offset."""


def choose_b_min(
    gains: NoiseGains | Mapping[TensorId, float],
    magnitudes: Mapping[TensorId, float],
    budget: float,
    rule: OffsetRule = "paper",
    floors: Mapping[TensorId, int] | None = None,
    b_min_range: tuple[int, int] = B_MIN_RANGE,
) -> AnalyticPlan:
    """The smallest ``B_min`` up to ``b_min_range[1]`` whose ``analytic_formats`` have
    ``mismatch_bound <= budget``.

    Raising ``B_min`` by one raises every bitwidth not held at 2 bits, and its ``F``, by one, so the
    bound falls monotonically and the first fit is the smallest. The search starts below
    ``b_min_range[0]`` (the paper's smallest, 2) by the largest offset, where every tensor is at 2
    bits: where ``B_min = 2`` already fits, the lowest-gain tensors are held at 2 bits and the others
    lowered while the bound fits (``equalised_bitwidths``); otherwise the result is the paper's.
    """
    if not (math.isfinite(budget) and budget > 0.0):
        raise ValueError(f"the mismatch budget must be positive, got {budget!r}")
    lo, hi = b_min_range
    if not 2 <= lo <= hi:
        raise ValueError(f"b_min_range must satisfy 2 <= low <= high, got {b_min_range}")
    _, ambiguous = _gain_table(gains)
    if ambiguous > budget:
        raise ValueError(
            f"{ambiguous:.4g} of the samples tie at the top of the float scores, more than the mismatch "
            f"budget {budget:.4g}: no precision can meet it; raise eps or use other data"
        )
    offsets = equalised_bitwidths(normalised_gains(gains, magnitudes), 2)
    offsets = {t: b - 2 for t, b in offsets.items()}
    bound = math.inf
    for b_min in range(lo - max(offsets.values(), default=0), hi + 1):
        formats = analytic_formats(gains, magnitudes, b_min, rule, floors)
        bound = mismatch_bound(gains, formats, magnitudes)
        if bound <= budget:
            return AnalyticPlan(b_min, formats, bound, budget, offsets)
    raise ValueError(
        f"no B_min up to {hi} brings the predicted mismatch bound within {budget:.4g} "
        f"(at B_min = {hi} it is {bound:.4g}); raise eps or the B_min range"
    )


def classifier_min_bits(classes: int, alpha: float = PARK_ALPHA) -> float:
    """Park et al. (2018), eq. 5: ``log2(|class| - 1) + log2(2 / alpha)``, the classifier's bit floor."""
    if classes < 2:
        raise ValueError(f"a classifier has at least 2 classes, got {classes}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return math.log2(classes - 1) + math.log2(2.0 / alpha)


def classifier_min_bitwidth(classes: int, alpha: float = PARK_ALPHA) -> int:
    """The smallest integer bitwidth meeting eq. 4, ``alpha / (|class| - 1) >= 2**-(BW - 1)``,
    i.e. ``BW >= classifier_min_bits`` (eq. 5 writes ``>``; the two differ only at integers)."""
    return math.ceil(classifier_min_bits(classes, alpha) - 1e-12)


def classifier_floors(
    tensors: Iterable[TensorId], classes: int, alpha: float = PARK_ALPHA
) -> dict[TensorId, int]:
    """Park's floor for each of the classifier layer's ``tensors`` (for ``floors=`` above)."""
    bw = classifier_min_bitwidth(classes, alpha)
    return dict.fromkeys(tensors, bw)


__all__ = [
    "B_MIN_RANGE",
    "GAIN_CONSTANT",
    "PARK_ALPHA",
    "AnalyticPlan",
    "NoiseGains",
    "analytic_formats",
    "choose_b_min",
    "classifier_floors",
    "classifier_min_bits",
    "classifier_min_bitwidth",
    "equalised_bitwidths",
    "mismatch_bound",
    "mismatch_budget",
    "noise_variance",
    "normalised_gains",
    "range_scale",
    "tensor_bounds",
]
