"""The fixed-point format and quantizer (spec §2): paper examples, properties, and initial offsets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optsearch.core.fixedpoint import (
    Format,
    initial_offset,
    largest_magnitude,
    quantize,
    start_format,
    to_codes,
)

formats = st.builds(Format, st.integers(1, 16), st.integers(-8, 20))
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [(Format(6, 2), -7.75), (Format(6, -2), -84.0), (Format(4, -4), -80.0)],
)
def test_paper_fig1b_examples(fmt: Format, expected: float) -> None:
    """Fig. 1b: -83.5625 at (6, 2) clips to -7.75, at (6, -2) rounds to -84, at (4, -4) to -80."""
    assert quantize(-83.5625, fmt) == expected


def test_paper_ranges() -> None:
    """§III-B and §IV-C: (5, 7) covers ±0.1171875 with LSB 1/128; (4, 7) covers ±0.0546875."""
    assert Format(5, 7).max_value == 0.1171875
    assert Format(5, 7).lsb == 1 / 128
    assert Format(4, 7).max_value == 0.0546875


def test_round_half_to_even() -> None:
    fmt = Format(8, 0)
    assert quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5]), fmt).tolist() == [0.0, 2.0, 2.0, -0.0, -2.0]


def test_symmetric_saturation() -> None:
    """The range is (-m, m): -128 is not used at 8 bits."""
    fmt = Format(8, 0)
    assert quantize(np.array([-1000.0, 1000.0]), fmt).tolist() == [-127.0, 127.0]
    assert to_codes(np.array([-1000.0, 1000.0]), fmt).tolist() == [-127, 127]


def test_bw1_prunes_to_zero() -> None:
    fmt = Format(1, 5)
    assert fmt.pruned and fmt.max_code == 0 and fmt.max_value == 0.0
    assert not np.any(quantize(np.array([3.0, -0.001, 1e6]), fmt))


def test_format_value_object() -> None:
    assert str(Format(6, 2)) == "(6, 2)"
    assert Format.parse("(6, -2)") == Format(6, -2)
    assert Format.parse("6,2") == Format(6, 2)
    assert Format(6, 2) == Format(6, 2) and hash(Format(6, 2)) == hash(Format(6, 2))
    with pytest.raises(AttributeError):
        Format(6, 2).bw = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="at least 1"):
        Format(0, 2)
    with pytest.raises(TypeError):
        Format(6.0, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(BW, F\)"):
        Format.parse("six")


def test_ap_fixed() -> None:
    """hls4ml's ap_fixed<W,I>: W = BW, I = BW - F (sign included); F may exceed BW or be negative."""
    assert Format(6, 2).ap_fixed() == "ap_fixed<6,4,AP_RND_CONV,AP_SAT_SYM>"
    assert Format(4, 7).ap_fixed("AP_RND", "AP_SAT") == "ap_fixed<4,-3,AP_RND,AP_SAT>"
    assert Format(6, -2).integer_bits == 8
    with pytest.raises(ValueError, match="pruned"):
        Format(1, 0).ap_fixed()


@pytest.mark.parametrize(
    ("z", "bw0", "paper", "noclip"),
    [
        (83.5625, 12, 4, 4),  # ceil(log2 83.56) = 7: 12 - 1 - 7
        (1.0, 8, 7, 6),  # a power of two: the paper form clips 1.0 to 127/128
        (0.5, 8, 8, 7),
        (0.9999, 8, 7, 6),  # just below one: paper's m = 127/128 < 0.9999
        (0.9, 8, 7, 7),
        (3.0, 4, 1, 1),
        (0.003, 12, 19, 19),
    ],
)
def test_initial_offset(z: float, bw0: int, paper: int, noclip: int) -> None:
    assert initial_offset(z, bw0, "paper") == paper
    assert initial_offset(z, bw0, "noclip") == noclip


def test_initial_offset_errors() -> None:
    with pytest.raises(ValueError, match="positive"):
        initial_offset(0.0, 8)
    with pytest.raises(ValueError, match="positive"):
        initial_offset(math.inf, 8)
    with pytest.raises(ValueError, match="unknown offset rule"):
        initial_offset(1.0, 8, "other")  # type: ignore[arg-type]


def test_zero_tensor_is_pruned() -> None:
    """Z == 0 (e.g. all-zero biases): pruned (1, 0) without evaluation."""
    assert start_format(largest_magnitude(np.zeros(5)), 8) == Format(1, 0)
    assert start_format(0.75, 8) == Format(8, 7)


@given(st.floats(1e-6, 1e6, allow_nan=False), st.integers(2, 24))
def test_noclip_offset_is_the_largest_unclipped(z: float, bw0: int) -> None:
    f = initial_offset(z, bw0, "noclip")
    assert Format(bw0, f).max_value >= z
    assert Format(bw0, f + 1).max_value < z
    assert initial_offset(z, bw0, "paper") in (f, f + 1)


@given(formats, st.integers(-(2**15), 2**15))
def test_grid_points_are_fixed_points(fmt: Format, code: int) -> None:
    code = max(-fmt.max_code, min(fmt.max_code, code))
    x = math.ldexp(code, -fmt.f)
    assert quantize(np.float64(x), fmt) == x


@given(formats, finite)
def test_error_at_most_half_lsb_in_range(fmt: Format, x: float) -> None:
    if abs(x) <= fmt.max_value:
        assert abs(x - float(quantize(np.float64(x), fmt))) <= fmt.lsb / 2


@given(formats, st.lists(finite, min_size=1, max_size=20))
def test_never_outside_range_and_idempotent(fmt: Format, values: list[float]) -> None:
    x = np.array(values, dtype=np.float32)
    q = quantize(x, fmt)
    assert q.dtype == np.float32
    assert np.all(np.abs(q) <= fmt.max_value)
    np.testing.assert_array_equal(quantize(q, fmt), q)
    np.testing.assert_array_equal(to_codes(q, fmt) * np.float64(fmt.lsb), q.astype(np.float64))
