"""Fixed-point formats and the quantizer of the paper (spec §2, eq. 1-3, eq. 8). numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

OffsetRule = Literal["paper", "noclip"]
OFFSET_RULES: tuple[OffsetRule, ...] = ("paper", "noclip")

#: How ``x * 2**F`` becomes an integer code: ``convergent`` rounds half to even (Xilinx
#: ``AP_RND_CONV``), ``truncate`` floors toward minus infinity (``AP_TRN``, hls4ml's default).
Rounding = Literal["convergent", "truncate"]
ROUNDINGS: tuple[Rounding, ...] = ("convergent", "truncate")
#: What happens to a code outside the format: ``saturate_symmetric`` clips to ``[-t, t]``
#: (``AP_SAT_SYM``); ``wrap`` keeps its low ``BW`` bits, two's complement, in
#: ``[-2**(BW-1), 2**(BW-1) - 1]`` (``AP_WRAP``, hls4ml's default).
Overflow = Literal["saturate_symmetric", "wrap"]
OVERFLOWS: tuple[Overflow, ...] = ("saturate_symmetric", "wrap")

_AP_ROUNDING: dict[str, str] = {"convergent": "AP_RND_CONV", "truncate": "AP_TRN"}
_AP_OVERFLOW: dict[str, str] = {"saturate_symmetric": "AP_SAT_SYM", "wrap": "AP_WRAP"}

#: The format of a tensor that is pruned away: every value is zero (spec §2: BW = 1).
PRUNED_BW = 1


@dataclass(frozen=True, order=True)
class Format:
    """A signed, symmetric fixed-point format ``(BW, F)``: ``BW`` bits, ``F`` fractional bits.

    ``F`` may be negative (more integer range) or exceed ``BW`` (small values only).
    ``BW = 1`` means the tensor is pruned: it holds only zeros and costs one bit per value.
    """

    bw: int
    f: int

    def __post_init__(self) -> None:
        if isinstance(self.bw, bool) or not isinstance(self.bw, (int, np.integer)):
            raise TypeError(f"bitwidth must be an integer, got {self.bw!r}")
        if isinstance(self.f, bool) or not isinstance(self.f, (int, np.integer)):
            raise TypeError(f"fractional offset must be an integer, got {self.f!r}")
        if self.bw < 1:
            raise ValueError(f"bitwidth must be at least 1 (1 = pruned), got {self.bw}")
        object.__setattr__(self, "bw", int(self.bw))
        object.__setattr__(self, "f", int(self.f))

    @property
    def pruned(self) -> bool:
        """True when the format holds only zeros (BW = 1)."""
        return self.bw <= PRUNED_BW

    @property
    def max_code(self) -> int:
        """The largest integer code ``t = 2**(BW-1) - 1`` (0 when pruned), eq. 1."""
        return 0 if self.pruned else 2 ** (self.bw - 1) - 1

    @property
    def lsb(self) -> float:
        """The step between representable values, ``2**-F``."""
        return math.ldexp(1.0, -self.f)

    @property
    def max_value(self) -> float:
        """``m = t / 2**F``: the format represents ``[-m, m]`` (eq. 3)."""
        return math.ldexp(float(self.max_code), -self.f)

    @property
    def integer_bits(self) -> int:
        """Bits left of the binary point, sign included: ``I = BW - F`` (hls4ml's I)."""
        return self.bw - self.f

    def ap_fixed(self, rounding: str = "AP_RND_CONV", saturation: str = "AP_SAT_SYM") -> str:
        """The equivalent Xilinx/hls4ml type ``ap_fixed<W,I,Q,O>`` with ``W = BW``, ``I = BW - F``.

        The defaults are this quantizer exactly: round half to even, symmetric saturation
        (``DEFAULT_MODE``); ``QuantizerMode.ap_fixed`` passes the suffixes of another mode.
        A pruned tensor (BW = 1) has no ap_fixed equivalent: its values are all zero.
        """
        if self.pruned:
            raise ValueError(f"{self} is pruned (all zeros): remove the tensor, there is no ap_fixed type")
        return f"ap_fixed<{self.bw},{self.integer_bits},{rounding},{saturation}>"

    def __str__(self) -> str:
        return f"({self.bw}, {self.f})"

    @classmethod
    def parse(cls, text: str) -> Format:
        """Read the ``str()`` form ``"(BW, F)"`` (spaces and parentheses optional)."""
        parts = text.strip().strip("()").split(",")
        if len(parts) != 2:
            raise ValueError(f"a format is written '(BW, F)', e.g. '(8, 5)', got {text!r}")
        try:
            return cls(int(parts[0]), int(parts[1]))
        except ValueError as err:
            raise ValueError(f"a format is written '(BW, F)' with integers, got {text!r}") from err


@dataclass(frozen=True)
class QuantizerMode:
    """How the quantizer rounds and overflows: a pair of Xilinx ``ap_fixed`` modes.

    ``DEFAULT_MODE`` (convergent, saturate_symmetric) is the paper's quantizer and the only mode the
    search uses; ``HLS4ML_DEFAULT_MODE`` (truncate, wrap) is what hls4ml's default ``ap_fixed<W,I>``
    types do, for comparing with an untuned hls4ml deployment.
    """

    rounding: Rounding = "convergent"
    overflow: Overflow = "saturate_symmetric"

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {self.rounding!r}; valid: {', '.join(ROUNDINGS)}")
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"unknown overflow {self.overflow!r}; valid: {', '.join(OVERFLOWS)}")

    @property
    def ap_rounding(self) -> str:
        """The ``ap_fixed`` quantization-mode suffix: ``AP_RND_CONV`` or ``AP_TRN``."""
        return _AP_ROUNDING[self.rounding]

    @property
    def ap_overflow(self) -> str:
        """The ``ap_fixed`` overflow-mode suffix: ``AP_SAT_SYM`` or ``AP_WRAP``."""
        return _AP_OVERFLOW[self.overflow]

    def ap_fixed(self, fmt: Format) -> str:
        """``fmt`` as the ``ap_fixed<W,I,Q,O>`` type that quantizes in this mode."""
        return fmt.ap_fixed(self.ap_rounding, self.ap_overflow)

    def __str__(self) -> str:
        return f"{self.rounding}/{self.overflow}"


#: The paper's quantizer: round half to even, symmetric saturation (``AP_RND_CONV``, ``AP_SAT_SYM``).
DEFAULT_MODE = QuantizerMode("convergent", "saturate_symmetric")
#: hls4ml's default ``ap_fixed<W,I>``: truncation and wrap-around (``AP_TRN``, ``AP_WRAP``).
HLS4ML_DEFAULT_MODE = QuantizerMode("truncate", "wrap")


def quantize(x: npt.ArrayLike, fmt: Format, mode: QuantizerMode = DEFAULT_MODE) -> np.ndarray:
    """``Q(x) = clip(round(x * 2**F), -t, t) / 2**F`` with round-half-to-even (eq. 1-2), by default.

    ``mode`` may floor instead of rounding (``truncate``) and wrap the code around to its low ``BW``
    bits instead of clipping it (``wrap``); a pruned format (BW = 1) gives zeros in every mode.

    Computed in the input's floating dtype (float32 stays float32) so that it matches, bit for
    bit, the TensorFlow op inside quantized models: scaling by a power of two is exact, and so are
    rounding, flooring, clipping and the wrap-around of integer-valued floats (see ``_wrap``).
    The result is the exact ``ap_fixed`` value within these limits (float32):

    * saturation: ``t = 2**(BW-1) - 1`` is exact for ``BW <= 25``; above, ``t`` rounds to
      ``2**(BW-1)`` (so does the Keras layer's threshold variable, so both still agree);
    * truncation: a subnormal ``x`` or ``x * 2**F`` (``|.| < 2**-126``) counts as a signed zero, as
      TensorFlow's CPU kernels flush them: a tiny negative value truncates to 0, not to ``-2**-F``
      (rounding is unaffected: such values round to zero either way);
    * wrap-around: ``2**BW`` must be finite (``BW <= 127``, else ``ValueError``) and
      ``|x * 2**F| < 2**127``; no other limit on ``BW`` (exact also for ``BW > 24``, see ``_wrap``).
    """
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if fmt.pruned:  # all +0.0 (the Keras layer returns zeros too, not a clip to [-0, 0])
        return np.zeros_like(a)
    scale = np.asarray(math.ldexp(1.0, fmt.f), dtype=a.dtype)
    result: np.ndarray = (_codes(a, scale, fmt, mode, a.dtype) / scale).astype(a.dtype, copy=False)
    return result


def to_codes(x: npt.ArrayLike, fmt: Format, mode: QuantizerMode = DEFAULT_MODE) -> np.ndarray:
    """The integer codes ``clip(round(x * 2**F), -t, t)`` that hardware stores (eq. 1), or those of
    ``mode`` (floored; wrapped to ``[-2**(BW-1), 2**(BW-1) - 1]``). Computed in float64 (subnormals
    are flushed by the input's dtype, as in ``quantize``); codes must fit in int64."""
    given = np.asarray(x).dtype
    a = np.asarray(x, dtype=np.float64)
    if fmt.pruned:
        return np.zeros(a.shape, dtype=np.int64)
    scale = np.asarray(math.ldexp(1.0, fmt.f), dtype=np.float64)
    codes = _codes(a, scale, fmt, mode, given if np.issubdtype(given, np.floating) else a.dtype)
    return codes.astype(np.int64)


def _codes(
    a: np.ndarray, scale: np.ndarray, fmt: Format, mode: QuantizerMode, flush: npt.DTypeLike
) -> np.ndarray:
    """The integer-valued codes of ``a`` (not pruned) in ``a``'s dtype: round or floor, then overflow.

    Truncation first flushes values that are subnormal in dtype ``flush`` to signed zeros, as the
    TensorFlow op does (denormals-are-zero on its inputs, flush-to-zero on its results).
    """
    if mode.rounding == "convergent":
        codes: np.ndarray = np.rint(a * scale)
    else:
        tiny = np.finfo(flush).tiny
        codes = np.floor(_flush_subnormal(_flush_subnormal(a, tiny) * scale, tiny))
    if mode.overflow == "saturate_symmetric":
        t = np.asarray(fmt.max_code, dtype=a.dtype)
        clipped: np.ndarray = np.clip(codes, -t, t)
        return clipped
    return _wrap(codes, fmt.bw)


def _flush_subnormal(v: np.ndarray, tiny: float) -> np.ndarray:
    """``v`` with every value below ``tiny`` in magnitude replaced by a zero of the same sign."""
    flushed: np.ndarray = np.where(np.abs(v) < tiny, np.copysign(np.zeros((), v.dtype), v), v)
    return flushed


def _wrap(codes: np.ndarray, bw: int) -> np.ndarray:
    """Two's-complement wrap-around of integer-valued float ``codes`` to ``[-2**(BW-1), 2**(BW-1))``.

    Codes already in range are returned as they are. Any other code ``c`` maps to
    ``m = c - 2**BW * floor(c / 2**BW)`` in ``[0, 2**BW)``, less ``2**BW`` when ``m >= 2**(BW-1)``.
    Every step is exact in the codes' dtype, with no limit on ``BW`` relative to the significand:
    an out-of-range code has ``|c| >= 2**(BW-1)``, so it is a multiple of ``2**(BW-1-p)`` (``p``
    significand bits, 23 for float32) and so are ``m`` and ``m - 2**BW``, which fit in ``p + 1``
    bits. Limits: ``2**BW`` must be finite in the dtype (float32: BW <= 127) and ``|c| < 2**127``
    (float32); a non-finite code becomes NaN. The Keras layer computes the same steps.
    """
    if bw >= np.finfo(codes.dtype).maxexp:
        raise ValueError(f"wrap-around at BW = {bw} needs 2**BW to be finite in {codes.dtype}")
    span = np.asarray(math.ldexp(1.0, bw), dtype=codes.dtype)
    half = span * np.asarray(0.5, dtype=codes.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        m = codes - np.floor(codes / span) * span
        wrapped = np.where(m >= half, m - span, m)
    inside = (codes >= -half) & (codes < half)
    result: np.ndarray = np.where(inside, codes, wrapped).astype(codes.dtype, copy=False)
    return result


def largest_magnitude(x: npt.ArrayLike) -> float:
    """``Z = max |x|``, the value the initial offset is sized for (Alg. 2, line 4)."""
    a = np.asarray(x)
    return float(np.max(np.abs(a))) if a.size else 0.0


def initial_offset(z: float, bw0: int, rule: OffsetRule = "paper") -> int:
    """The starting fractional offset ``F0`` for a tensor of largest magnitude ``z`` (eq. 8).

    ``paper``: ``F0 = BW0 - 1 - ceil(log2 Z)`` (Alg. 2, line 4); may clip the largest value by at
    most one LSB when ``Z`` is a power of two or just below one. ``noclip``:
    ``F0 = floor(log2((2**(BW0-1) - 1) / Z))``, the largest F that represents ``Z`` unclipped.
    ``z`` must be positive and finite: a tensor with ``Z = 0`` is pruned, see ``start_format``.
    """
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"the largest magnitude must be positive and finite, got {z}")
    if bw0 < 2:
        raise ValueError(f"the starting bitwidth must be at least 2, got {bw0}")
    if rule == "paper":
        return bw0 - 1 - _ceil_log2(z)
    if rule == "noclip":
        t = 2 ** (bw0 - 1) - 1
        # Largest F with t / 2**F >= z, i.e. t >= z * 2**F; found exactly, not through log2.
        f = _floor_log2(t / z)
        while math.ldexp(z, f + 1) <= t:
            f += 1
        while math.ldexp(z, f) > t:
            f -= 1
        return f
    raise ValueError(f"unknown offset rule {rule!r}; valid rules: {', '.join(OFFSET_RULES)}")


def start_format(z: float, bw0: int, rule: OffsetRule = "paper") -> Format:
    """``(BW0, F0)`` for a tensor of largest magnitude ``z``; ``(1, 0)`` (pruned) when ``z == 0``."""
    if z == 0:
        return Format(PRUNED_BW, 0)
    return Format(bw0, initial_offset(z, bw0, rule))


def _ceil_log2(z: float) -> int:
    """Exact ``ceil(log2 z)`` for positive finite floats (no rounding error at powers of two)."""
    mantissa, exponent = math.frexp(z)  # z = mantissa * 2**exponent, 0.5 <= mantissa < 1
    return exponent - 1 if mantissa == 0.5 else exponent


def _floor_log2(z: float) -> int:
    """Exact ``floor(log2 z)`` for positive finite floats."""
    _, exponent = math.frexp(z)
    return exponent - 1
