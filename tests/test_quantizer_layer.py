"""The Keras quantizer layer: bit-identical to the numpy quantizer, serializable in safe mode."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from optsearch.core.fixedpoint import Format, quantize
from optsearch.model.quantizer_layer import FixedPointQuantizer

values = arrays(
    np.float32,
    st.integers(1, 64),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@settings(max_examples=60)
@given(st.integers(1, 24), st.integers(-12, 30), values)
def test_layer_is_bit_identical_to_numpy(bw: int, f: int, x: np.ndarray) -> None:
    fmt = Format(bw, f)
    layer = FixedPointQuantizer(bw, f)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(_bits(out), _bits(quantize(x, fmt)))


@settings(max_examples=30)
@given(st.integers(1, 24), st.integers(-12, 30), values)
def test_compiled_layer_is_bit_identical_to_numpy(bw: int, f: int, x: np.ndarray) -> None:
    """The traced graph (as used by evaluation) keeps the same bits: nothing is folded away."""
    layer = FixedPointQuantizer(bw, f)
    compiled = tf.function(lambda t: layer(t))
    out = compiled(tf.constant(x)).numpy()
    np.testing.assert_array_equal(_bits(out), _bits(quantize(x, Format(bw, f))))


def test_signed_zeros_agree_and_pruned_is_positive_zero() -> None:
    """Rounding -0.3 gives -0.0 in both paths alike; a pruned format gives +0.0 everywhere."""
    x = np.array([-0.0, -0.3, 0.2, -1e-30, 5.0], dtype=np.float32)
    for fmt in (Format(1, 0), Format(4, 0)):
        expected = quantize(x, fmt)
        layer = FixedPointQuantizer(fmt.bw, fmt.f)
        out = tf.function(lambda t, layer=layer: layer(t))(tf.constant(x)).numpy()
        np.testing.assert_array_equal(_bits(out), _bits(expected))
    assert not np.any(np.signbit(quantize(x, Format(1, 0))))
    assert np.signbit(quantize(x, Format(4, 0))[1])


def test_half_way_points_round_to_even_in_the_layer() -> None:
    fmt = Format(6, 2)
    x = np.array([0.125, 0.375, -0.625, -83.5625, 7.875, 7.625], dtype=np.float32)
    out = keras.ops.convert_to_numpy(FixedPointQuantizer(6, 2)(x))
    np.testing.assert_array_equal(_bits(out), _bits(quantize(x, fmt)))
    assert out.tolist() == [0.0, 0.5, -0.5, -7.75, 7.75, 7.5]


def test_disabled_layer_is_the_identity_and_formats_change_in_place() -> None:
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    layer = FixedPointQuantizer(4, 1, enabled=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    layer.set_format(Format(3, 0))
    assert layer.enabled and layer.format == Format(3, 0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), quantize(x, Format(3, 0)))
    layer.set_format(None)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)


def test_quantizer_model_round_trips_in_safe_mode(tmp_path: Path) -> None:
    inputs = keras.Input((5,))
    outputs = FixedPointQuantizer(5, 3, name="q")(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, outputs)
    model.get_layer("q").set_format(Format(4, 1))
    path = tmp_path / "q.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert loaded.get_layer("q").format == Format(4, 1)
    x = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
