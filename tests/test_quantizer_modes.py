"""Named quantizer modes (issue 22): convergent/truncate rounding, symmetric saturation/wrap-around.

Hand-computed values for each of the four modes, exact ap_fixed semantics checked against integer
arithmetic, the Keras layer bit-identical to numpy in every mode, and a quantized model in
hls4ml's default mode (AP_TRN, AP_WRAP) equal to a numpy computation.
"""

from __future__ import annotations

import math
import shutil
from fractions import Fraction
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from optsearch.core.fixedpoint import (
    DEFAULT_MODE,
    HLS4ML_DEFAULT_MODE,
    OVERFLOWS,
    ROUNDINGS,
    Format,
    QuantizerMode,
    quantize,
    to_codes,
)
from optsearch.core.tensors import TensorId, TensorKind
from optsearch.model.graph import quantized_model
from optsearch.model.quantizer_layer import FixedPointQuantizer

MODES = [QuantizerMode(r, o) for r in ROUNDINGS for o in OVERFLOWS]
CONV_SAT = QuantizerMode("convergent", "saturate_symmetric")
CONV_WRAP = QuantizerMode("convergent", "wrap")
TRN_SAT = QuantizerMode("truncate", "saturate_symmetric")
TRN_WRAP = QuantizerMode("truncate", "wrap")

#: Format(4, 2): LSB 0.25, codes -7..7 saturated (±1.75), -8..7 wrapped (-2.0..1.75).
X = [0.375, 0.625, -0.3, -0.375, 1.9, 2.0, -2.0, -2.1, 5.0, -5.1]
EXPECTED = {
    # x*4:    1.5  2.5   -1.2   -1.5  7.6   8.0    -8.0   -8.4   20.0  -20.4
    CONV_SAT: [0.5, 0.5, -0.25, -0.5, 1.75, 1.75, -1.75, -1.75, 1.75, -1.75],
    CONV_WRAP: [0.5, 0.5, -0.25, -0.5, -2.0, -2.0, -2.0, -2.0, 1.0, -1.0],
    TRN_SAT: [0.25, 0.5, -0.5, -0.5, 1.75, 1.75, -1.75, -1.75, 1.75, -1.75],
    TRN_WRAP: [0.25, 0.5, -0.5, -0.5, 1.75, -2.0, -2.0, 1.75, 1.0, -1.25],
}

values = arrays(
    np.float32,
    st.integers(1, 64),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
)
wide_values = arrays(
    np.float32,
    st.integers(1, 32),
    elements=st.floats(-(2.0**100), 2.0**100, allow_nan=False, allow_infinity=False, width=32),
)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _exact(x: float, fmt: Format, mode: QuantizerMode) -> Fraction:
    """The ap_fixed value of ``x``, in exact integer arithmetic."""
    if fmt.pruned:
        return Fraction(0)
    scaled = Fraction(x) * Fraction(2) ** fmt.f
    code = round(scaled) if mode.rounding == "convergent" else math.floor(scaled)  # round: half even
    if mode.overflow == "saturate_symmetric":
        code = max(-fmt.max_code, min(fmt.max_code, code))
    else:
        half = 2 ** (fmt.bw - 1)
        code = (code + half) % (2 * half) - half
    return Fraction(code) / Fraction(2) ** fmt.f


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_hand_computed_values(mode: QuantizerMode) -> None:
    fmt = Format(4, 2)
    for dtype in (np.float32, np.float64):
        x = np.array(X, dtype=dtype)
        out = quantize(x, fmt, mode)
        assert out.dtype == dtype
        assert out.tolist() == EXPECTED[mode]
    assert to_codes(np.array(X), fmt, mode).tolist() == [int(v * 4) for v in EXPECTED[mode]]


def test_hand_computed_values_in_hls4ml_default_precision() -> None:
    """ap_fixed<16,6> = Format(16, 10): LSB 2**-10, wrapped codes -32768..32767."""
    fmt = Format(16, 10)
    x = np.array([0.1, -0.1, 40.0, 32.0, -32.0, -32.001, 31.9999], dtype=np.float32)
    # x * 1024: 102.4, -102.4, 40960, 32768, -32768, -32769.02 (floor -32770 wraps to 32766), 32767.9
    assert quantize(x, fmt, HLS4ML_DEFAULT_MODE).tolist() == [
        102 / 1024,
        -103 / 1024,
        -24.0,
        -32.0,
        -32.0,
        32766 / 1024,
        32767 / 1024,
    ]
    assert quantize(x, fmt).tolist() == [
        102 / 1024,
        -102 / 1024,
        32767 / 1024,
        32767 / 1024,
        -32767 / 1024,
        -32767 / 1024,
        32767 / 1024,
    ]


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_pruned_is_positive_zero_in_every_mode(mode: QuantizerMode) -> None:
    x = np.array([-0.0, -0.3, 0.2, -1e-30, 5.0, -1e6], dtype=np.float32)
    fmt = Format(1, 3)
    out = quantize(x, fmt, mode)
    assert out.tolist() == [0.0] * len(x) and not np.any(np.signbit(out))
    assert to_codes(x, fmt, mode).tolist() == [0] * len(x)
    layer = FixedPointQuantizer(1, 3, rounding=mode.rounding, overflow=mode.overflow)
    np.testing.assert_array_equal(_bits(keras.ops.convert_to_numpy(layer(x))), _bits(out))


@settings(max_examples=60)
@given(st.sampled_from(MODES), st.integers(1, 40), st.integers(-12, 30), wide_values)
def test_quantize_is_exact_ap_fixed(mode: QuantizerMode, bw: int, f: int, x: np.ndarray) -> None:
    """float32 results equal exact integer arithmetic (also for wrap-around at BW > 24 and huge codes)
    within the documented limits: x and x * 2**F normal (or 0), t exact (BW <= 25) when saturating."""
    if mode.overflow == "saturate_symmetric":
        bw = min(bw, 25)
    fmt = Format(bw, f)
    tiny = 2.0**-126
    wide, scaled = np.abs(x.astype(np.float64)), np.abs(x.astype(np.float64)) * 2.0**f
    x = x[(wide == 0) | ((wide >= tiny) & (scaled >= tiny) & (scaled < 2.0**127))]
    out = quantize(x, fmt, mode)
    assert [Fraction(float(v)) for v in out] == [_exact(float(v), fmt, mode) for v in x]
    out64 = quantize(x.astype(np.float64), fmt, mode)
    np.testing.assert_array_equal(out64, out.astype(np.float64))


def test_subnormals_truncate_as_tensorflow_flushes_them() -> None:
    """TensorFlow's CPU ops flush subnormals to signed zeros; numpy truncation does the same."""
    x = np.array([-1e-39, 1e-39, -(2.0**-140), -(2.0**-127)], dtype=np.float32)  # all subnormal
    fmt = Format(8, 10)  # x * 2**10 is normal but for -2**-140; x itself is subnormal: flushed
    for mode in (TRN_SAT, TRN_WRAP):
        out = quantize(x, fmt, mode)
        assert out.tolist() == [0.0] * 4 and np.signbit(out).tolist() == [True, False, True, True]
        layer = FixedPointQuantizer(8, 10, rounding=mode.rounding, overflow=mode.overflow)
        np.testing.assert_array_equal(_bits(keras.ops.convert_to_numpy(layer(x))), _bits(out))
        assert to_codes(x, fmt, mode).tolist() == [0] * 4
    assert quantize(np.float32(-(2.0**-120)), Format(8, 10), TRN_SAT) == -(2.0**-10)  # normal: floors


@settings(max_examples=60)
@given(st.sampled_from(MODES), st.integers(1, 40), st.integers(-12, 30), values)
def test_layer_is_bit_identical_to_numpy_in_every_mode(
    mode: QuantizerMode, bw: int, f: int, x: np.ndarray
) -> None:
    fmt = Format(bw, f)
    layer = FixedPointQuantizer(bw, f, rounding=mode.rounding, overflow=mode.overflow)
    expected = _bits(quantize(x, fmt, mode))
    np.testing.assert_array_equal(_bits(keras.ops.convert_to_numpy(layer(x))), expected)
    compiled = tf.function(lambda t: layer(t))
    np.testing.assert_array_equal(_bits(compiled(tf.constant(x)).numpy()), expected)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # x * 2**F may be inf
@settings(max_examples=30)
@given(st.sampled_from(MODES), st.integers(1, 40), st.integers(-12, 30), wide_values)
def test_compiled_layer_follows_format_changes_in_every_mode(
    mode: QuantizerMode, bw: int, f: int, x: np.ndarray
) -> None:
    """The format changes in place (no retrace) in every mode, wrap's 2**BW included."""
    layer = FixedPointQuantizer(8, 0, rounding=mode.rounding, overflow=mode.overflow)
    compiled = tf.function(lambda t: layer(t))
    compiled(tf.constant(x))
    layer.set_format(Format(bw, f))
    out = compiled(tf.constant(x)).numpy()
    np.testing.assert_array_equal(_bits(out), _bits(quantize(x, Format(bw, f), mode)))


@settings(max_examples=40)
@given(st.integers(1, 24), st.integers(-12, 30), values)
def test_default_mode_is_the_old_quantizer(bw: int, f: int, x: np.ndarray) -> None:
    fmt = Format(bw, f)
    scale = np.float32(math.ldexp(1.0, f))
    t = np.float32(fmt.max_code)
    old = np.zeros_like(x) if fmt.pruned else (np.clip(np.rint(x * scale), -t, t) / scale).astype(np.float32)
    np.testing.assert_array_equal(_bits(quantize(x, fmt)), _bits(old))
    np.testing.assert_array_equal(_bits(quantize(x, fmt, DEFAULT_MODE)), _bits(old))
    old_codes = np.clip(np.rint(x.astype(np.float64) * math.ldexp(1.0, f)), -fmt.max_code, fmt.max_code)
    np.testing.assert_array_equal(to_codes(x, fmt, DEFAULT_MODE), old_codes.astype(np.int64))


def test_modes_and_ap_fixed_names() -> None:
    assert DEFAULT_MODE == QuantizerMode() == CONV_SAT
    assert HLS4ML_DEFAULT_MODE == TRN_WRAP
    fmt = Format(16, 10)
    assert HLS4ML_DEFAULT_MODE.ap_fixed(fmt) == "ap_fixed<16,6,AP_TRN,AP_WRAP>"
    assert DEFAULT_MODE.ap_fixed(fmt) == fmt.ap_fixed() == "ap_fixed<16,6,AP_RND_CONV,AP_SAT_SYM>"
    assert (CONV_WRAP.ap_rounding, CONV_WRAP.ap_overflow) == ("AP_RND_CONV", "AP_WRAP")
    assert (TRN_SAT.ap_rounding, TRN_SAT.ap_overflow) == ("AP_TRN", "AP_SAT_SYM")
    with pytest.raises(ValueError, match="rounding"):
        QuantizerMode("nearest", "wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow"):
        QuantizerMode("truncate", "saturate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        quantize(np.ones(2, dtype=np.float32), Format(128, 0), HLS4ML_DEFAULT_MODE)
    with pytest.raises(ValueError, match="finite"):
        FixedPointQuantizer(128, 0, overflow="wrap")


def test_layer_config_keeps_default_layers_unchanged_and_round_trips(tmp_path: Path) -> None:
    default = FixedPointQuantizer(5, 3, name="q")
    assert not {"rounding", "overflow"} & set(default.get_config())
    assert len(default.weights) == 3 and default.mode == DEFAULT_MODE
    layer = FixedPointQuantizer(5, 3, rounding="truncate", overflow="wrap", name="q")
    config = layer.get_config()
    assert (config["rounding"], config["overflow"]) == ("truncate", "wrap")
    assert FixedPointQuantizer.from_config(config).mode == HLS4ML_DEFAULT_MODE

    inputs = keras.Input((5,))
    model = keras.Model(inputs, layer(keras.layers.Dense(4)(inputs)))
    layer.set_format(Format(4, 1))
    path = tmp_path / "q.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    reloaded = loaded.get_layer("q")
    assert reloaded.format == Format(4, 1) and reloaded.mode == HLS4ML_DEFAULT_MODE
    x = np.random.default_rng(0).normal(scale=4.0, size=(8, 5)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="relu", name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="o")(hidden))
    rng = np.random.default_rng(2)
    for layer in model.layers[1:]:
        layer.set_weights([rng.uniform(-3, 3, size=w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


FORMATS = {
    TensorId("h", "W"): Format(4, 2),
    TensorId("h", "B"): Format(3, 1),
    TensorId("h", "A"): Format(4, 1),
    TensorId("o", "W"): Format(3, 2),
    TensorId("o", "B"): Format(4, 2),
    TensorId("o", "A"): Format(5, 1),
}


def _numpy_forward(model: keras.Model, mode: QuantizerMode, x: np.ndarray) -> np.ndarray:
    def q(values: np.ndarray, layer: str, kind: TensorKind) -> np.ndarray:
        return quantize(values, FORMATS[TensorId(layer, kind)], mode)

    (w1, b1), (w2, b2) = (model.get_layer(n).get_weights() for n in ("h", "o"))
    hidden = q(np.maximum(x @ q(w1, "h", "W") + q(b1, "h", "B"), 0), "h", "A")
    return q(hidden @ q(w2, "o", "W") + q(b2, "o", "B"), "o", "A")


@pytest.mark.parametrize("mode", [HLS4ML_DEFAULT_MODE, DEFAULT_MODE], ids=str)
def test_quantized_model_in_a_mode_equals_numpy(mode: QuantizerMode) -> None:
    """Weights, biases and activations quantized in ``mode``; sums are exact (a 2**-4 grid)."""
    model = _tiny_model()
    qmodel = quantized_model(model, mode=mode)
    assert qmodel.mode == mode and qmodel.quantizer("h").mode == mode
    qmodel.set_formats(FORMATS)
    kernel = model.get_layer("h").get_weights()[0]
    np.testing.assert_array_equal(
        qmodel.keras_model.get_layer("h").kernel.numpy(), quantize(kernel, FORMATS[TensorId("h", "W")], mode)
    )
    x = (np.random.default_rng(3).integers(-12, 13, size=(32, 4)) / 4).astype(np.float32)
    expected = _numpy_forward(model, mode, x)
    out = qmodel.keras_model.predict(x, verbose=0)
    np.testing.assert_array_equal(_bits(out), _bits(expected))
    np.testing.assert_array_equal(_bits(keras.ops.convert_to_numpy(qmodel.keras_model(x))), _bits(expected))
    if mode != DEFAULT_MODE:  # the modes really differ on this data
        assert not np.array_equal(_numpy_forward(model, DEFAULT_MODE, x), expected)


def test_hls4ml_default_precision_matches_its_c_simulation(tmp_path: Path) -> None:
    """The emulation in hls4ml's default mode against hls4ml's C simulation at its default precision
    ``ap_fixed<16,6>`` (AP_TRN, AP_WRAP) for every weight, bias and result (compiles a tiny project:
    seconds).

    The accumulators are made wide, so that each dot product is exact as in the emulation, and the
    inputs lie on the 2^-10 grid within range, so that hls4ml's input type keeps them: what is left
    to compare is the truncation and wrap-around of the weights, biases and layer outputs."""
    hls4ml = pytest.importorskip("hls4ml", reason="needs the optional extra: pip install -e '.[hls4ml]'")
    if shutil.which("g++") is None:
        pytest.skip("hls4ml's C simulation needs g++")
    keras.utils.set_random_seed(3)
    L = keras.layers
    normal = {"kernel_initializer": "random_normal", "bias_initializer": "random_normal"}
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(8, activation="relu", name="d1", **normal),
            L.Dense(3, name="d2", **normal),
        ]
    )
    rng = np.random.default_rng(0)
    model.set_weights([w * 3 + rng.normal(size=w.shape) * 1e-4 for w in model.get_weights()])  # off-grid
    x = np.round(rng.normal(scale=4.0, size=(200, 6)) * 1024) / 1024  # on the input grid, within +-32
    config = hls4ml.utils.config_from_keras_model(
        model, granularity="name", default_precision="ap_fixed<16,6>"
    )
    for name, layer in config["LayerName"].items():
        precision = layer.setdefault("Precision", {})
        for key in list(precision) or ["result"]:  # weight, bias, result: hls4ml's default type
            precision[key] = "ap_fixed<16,6>"
        if name in ("d1", "d2"):
            precision["accum"] = "ap_fixed<48,24>"  # exact dot products
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=config, output_dir=str(tmp_path / "prj"), backend="Vivado", io_type="io_parallel"
    )
    hls_model.compile()
    y_hls = np.asarray(hls_model.predict(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(x), 3)
    qmodel = quantized_model(model, "activation", mode=HLS4ML_DEFAULT_MODE)
    qmodel.set_formats(dict.fromkeys(qmodel.tensors, Format(16, 10)))
    y_emulated = np.asarray(qmodel.keras_model.predict(x.astype(np.float32), verbose=0), dtype=np.float64)
    assert np.array_equal(y_hls, y_emulated)
    # and not by chance: the default mode (convergent, saturating) computes other values here
    qmodel_default = quantized_model(model, "activation", mode=DEFAULT_MODE)
    qmodel_default.set_formats(dict.fromkeys(qmodel_default.tensors, Format(16, 10)))
    assert not np.array_equal(y_hls, qmodel_default.keras_model.predict(x.astype(np.float32), verbose=0))
