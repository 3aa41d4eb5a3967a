"""scripts/per_channel_ranges.py on a hand-built depthwise layer whose channels differ by 2^6 in scale."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import keras
import numpy as np
import pytest
from conftest import ROOT, script_module

from optsearch.core.fixedpoint import quantize, start_format
from optsearch.core.tensors import TensorId
from optsearch.model.graph import quantized_model

SCALES = np.array([0.9, 0.9 * 2.0**-6], dtype=np.float32)
"""The two channels' magnitudes: the second channel's largest weight is 2^6 below the first's (not
powers of two, where the paper's offset rule clips the largest value by one LSB)."""


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    with script_module(ROOT / "scripts" / "per_channel_ranges.py") as module:
        yield module


def _kernel() -> np.ndarray:
    """A 3x3 depthwise kernel of 2 channels (depth multiplier 1), channel c scaled by ``SCALES[c]``."""
    values = np.random.default_rng(0).uniform(-1.0, 1.0, size=(3, 3, 2, 1)).astype(np.float32)
    values /= np.max(np.abs(values), axis=(0, 1, 3), keepdims=True)
    return values * SCALES.reshape(1, 1, 2, 1)


def _model(kernel: np.ndarray) -> keras.Model:
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(x))
    model.get_layer("dw").set_weights([kernel])
    return model


def test_spread_and_low_channels(script: ModuleType) -> None:
    kernel = _kernel()
    np.testing.assert_allclose(script.channel_maxima(kernel, True), SCALES)
    stats = script.range_stats([(kernel, True)], 8)
    assert stats.channels == 2 and stats.zero_channels == 0
    assert stats.log2_spread == pytest.approx(6.0)
    assert stats.tensor_format == "(8, 7)"  # F0 for Z = 0.9: 8 - 1 - ceil(log2 0.9)
    # The small channel's largest code is round(0.9 * 2^-6 * 2^7) = 2: 2 magnitude bits, a "low" channel.
    assert stats.low_channels == 0.5
    assert stats.zero_codes_low > 0 and stats.zero_codes_per_channel < stats.zero_codes
    # Per-channel F gives the small channel the 6 bits it lacked, about 6 dB each.
    assert stats.worst_sqnr_db_per_channel > stats.worst_sqnr_db + 30


def test_per_channel_f_recovers_the_small_channel(script: ModuleType) -> None:
    kernel = _kernel()
    per_tensor = quantize(kernel, start_format(0.9, 8))
    per_channel = script.quantize_per_channel(kernel, 8, True)
    small = (..., 1, 0)
    error = np.max(np.abs(per_tensor[small] - kernel[small]))
    assert error > 2.0**-10  # within one LSB 2^-7, far above the channel's own 8-bit step
    np.testing.assert_allclose(per_channel[small], kernel[small], atol=2.0**-14)  # its own step 2^-13
    np.testing.assert_array_equal(per_channel[..., 0, 0], per_tensor[..., 0, 0])


def test_emulation_sets_and_restores_the_kernel(script: ModuleType) -> None:
    kernel = _kernel()
    qmodel = quantized_model(_model(kernel))
    x = np.random.default_rng(1).normal(size=(4, 5, 5, 2)).astype(np.float32)
    reference = np.asarray(qmodel.keras_model(x)).reshape(4, 3, 3, 2)
    with script.per_channel_weights(qmodel, qmodel.layers, 8, {}):
        emulated = np.asarray(qmodel.keras_model(x)).reshape(4, 3, 3, 2)
    qmodel.set_formats({TensorId("dw", "W"): start_format(0.9, 8)})
    tensor = np.asarray(qmodel.keras_model(x)).reshape(4, 3, 3, 2)
    qmodel.set_formats({})
    np.testing.assert_array_equal(np.asarray(qmodel.keras_model(x)).reshape(4, 3, 3, 2), reference)

    def relative(out: np.ndarray) -> float:
        return float(np.linalg.norm(out[..., 1] - reference[..., 1]) / np.linalg.norm(reference[..., 1]))

    assert relative(emulated) < 0.02 < 0.1 < relative(tensor)
    with (
        pytest.raises(ValueError, match="per-channel kernels"),
        script.per_channel_weights(qmodel, qmodel.layers, 8, {TensorId("dw", "W"): start_format(0.9, 8)}),
    ):
        pass
