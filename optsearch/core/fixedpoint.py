"""Fixed-point formats and the quantizer of the paper (spec §2, eq. 1-3, eq. 8). numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

OffsetRule = Literal["paper", "noclip"]
OFFSET_RULES: tuple[OffsetRule, ...] = ("paper", "noclip")

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

        The defaults are this quantizer exactly: round half to even, symmetric saturation.
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


def quantize(x: npt.ArrayLike, fmt: Format) -> np.ndarray:
    """``Q(x) = clip(round(x * 2**F), -t, t) / 2**F`` with round-half-to-even (eq. 1-2).

    Computed in the input's floating dtype (float32 stays float32) so that it matches, bit for
    bit, the TensorFlow op inside quantized models: scaling by a power of two is exact.
    """
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if fmt.pruned:  # all +0.0 (the Keras layer returns zeros too, not a clip to [-0, 0])
        return np.zeros_like(a)
    scale = np.asarray(math.ldexp(1.0, fmt.f), dtype=a.dtype)
    t = np.asarray(fmt.max_code, dtype=a.dtype)
    result: np.ndarray = (np.clip(np.rint(a * scale), -t, t) / scale).astype(a.dtype, copy=False)
    return result


def to_codes(x: npt.ArrayLike, fmt: Format) -> np.ndarray:
    """The integer codes ``clip(round(x * 2**F), -t, t)`` that hardware stores (eq. 1)."""
    a = np.asarray(x, dtype=np.float64)
    codes = np.clip(np.rint(a * math.ldexp(1.0, fmt.f)), -fmt.max_code, fmt.max_code)
    return codes.astype(np.int64)


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
