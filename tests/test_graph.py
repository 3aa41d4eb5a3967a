"""Keras graph instrumentation (spec §3): quantizable layers, activation points, the quantized model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from optsearch.core.errors import ModelError
from optsearch.core.fixedpoint import Format, quantize
from optsearch.core.tensors import TensorId
from optsearch.model.graph import QUANTIZER_SUFFIX, find_quantizable_layers, quantized_model
from optsearch.model.quantizer_layer import FixedPointQuantizer

L = keras.layers


def _x(shape: tuple[int, ...], n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _points(model: keras.Model, mode: str = "activation") -> dict[str, str]:
    return {q.name: q.activation_at for q in find_quantizable_layers(model, mode)}  # type: ignore[arg-type]


def _layer_order(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def test_paper_block_conv_relu_then_batchnorm() -> None:
    """The paper's models are Conv(relu) -> Q -> BN: the quantizer sits before the BatchNorm."""
    model = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            L.Rescaling(1 / 255, name="scale"),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.MaxPooling2D(name="pool"),
            L.Dropout(0.25, name="drop"),
            L.GlobalMaxPooling2D(name="gmp"),
            L.Dense(3, name="logits"),
            L.Activation("softmax", name="softmax"),
        ]
    )
    layers = find_quantizable_layers(model)
    assert [(q.index, q.name, q.activation_at, q.split_softmax) for q in layers] == [
        (1, "c1", "c1", False),
        (2, "logits", "logits", False),
    ]
    qmodel = quantized_model(model)
    order = _layer_order(qmodel.keras_model)
    assert order.index("c1" + QUANTIZER_SUFFIX) == order.index("c1") + 1 < order.index("bn1")
    assert order.index("logits" + QUANTIZER_SUFFIX) < order.index("softmax")
    assert layers[1].input_sources == ("c1",)
    assert layers[0].input_sources == ()


def test_activation_after_batchnorm_then_relu() -> None:
    """Conv -> BN -> ReLU: A_l is after the ReLU; with chain_end it is the same (ReLU ends the chain)."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(3, 3, name="c"),
            L.BatchNormalization(name="bn"),
            L.ReLU(name="relu"),
            L.Flatten(name="flat"),
            L.Dense(2, name="d"),
        ]
    )
    assert _points(model) == {"c": "relu", "d": "d"}


def test_dense_with_builtin_softmax_is_split() -> None:
    model = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(4, activation="softmax")]
    )
    layers = find_quantizable_layers(model)
    assert layers[-1].split_softmax and not layers[0].split_softmax
    qmodel = quantized_model(model)
    last = layers[-1].name
    order = _layer_order(qmodel.keras_model)
    assert order[-2:] == [last + QUANTIZER_SUFFIX, last + "_softmax"]
    assert qmodel.keras_model.get_layer(last).get_config()["activation"] == "linear"
    x = _x((6,))
    np.testing.assert_allclose(
        qmodel.keras_model.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    # The quantizer sees logits: quantize them coarsely and the softmax input is on the grid.
    qmodel.set_formats({TensorId(last, "A"): Format(3, 0)})
    probe = qmodel.activation_probe()
    logits = probe.predict(x, verbose=0)[-1]
    assert set(np.unique(logits)) <= {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}


def test_no_activation_before_merge_or_end_is_own_output_and_chain_end_option() -> None:
    inputs = keras.Input((8, 8, 2))
    a = L.Conv2D(2, 3, padding="same", name="a")(inputs)
    a_bn = L.BatchNormalization(name="a_bn")(a)
    b = L.Conv2D(2, 1, name="b")(inputs)
    merged = L.Add(name="add")([a_bn, b])
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(L.ReLU(name="relu")(merged)))
    model = keras.Model(inputs, out)
    assert _points(model) == {"a": "a", "b": "b", "head": "head"}
    assert _points(model, "chain_end") == {"a": "a_bn", "b": "b", "head": "head"}
    with pytest.raises(ValueError, match="activation_point"):
        find_quantizable_layers(model, "elsewhere")  # type: ignore[arg-type]


def test_fork_stops_the_chain() -> None:
    inputs = keras.Input((6,))
    trunk = L.Dense(4, name="trunk")(inputs)
    left = L.ReLU(name="left")(trunk)
    right = L.Activation("tanh", name="right")(trunk)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Concatenate(name="cat")([left, right])))
    layers = find_quantizable_layers(model)
    assert {q.name: q.activation_at for q in layers} == {"trunk": "trunk", "out": "out"}
    assert layers[1].input_sources == ("trunk",)


def _inception_like() -> keras.Model:
    """A small model with the paper's branched module: four branches concatenated (spec §9)."""
    inputs = keras.Input((16, 16, 1))
    x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    b1 = L.Conv2D(2, 1, strides=2, activation="relu", name="b1")(x)
    b2 = L.Conv2D(2, 1, activation="relu", name="b2a")(x)
    b2 = L.Conv2D(2, 3, strides=2, padding="same", activation="relu", name="b2b")(b2)
    b3 = L.Conv2D(2, 1, activation="relu", name="b3a")(x)
    b3 = L.Conv2D(2, 3, padding="same", activation="relu", name="b3b")(b3)
    b3 = L.Conv2D(2, 3, strides=2, padding="same", activation="relu", name="b3c")(b3)
    b4 = L.MaxPooling2D(2, name="b4pool")(x)
    b4 = L.Conv2D(2, 1, activation="relu", name="b4")(b4)
    x = L.Concatenate(name="cat")([b1, b2, b3, b4])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="head")(x))


def test_inception_style_model() -> None:
    model = _inception_like()
    layers = find_quantizable_layers(model)
    # Layers 1..L follow model.layers, a topological order (spec §3), not the order of creation.
    names = {"stem", "b1", "b2a", "b2b", "b3a", "b3b", "b3c", "b4", "head"}
    assert [q.name for q in layers] == [layer.name for layer in model.layers if layer.name in names]
    assert [q.index for q in layers] == list(range(1, 10))
    assert all(q.activation_at == q.name for q in layers)
    head = layers[-1]
    assert head.split_softmax
    assert head.input_sources == ("b1", "b2b", "b3c", "b4")
    qmodel = quantized_model(model)
    x = _x((16, 16, 1))
    np.testing.assert_allclose(
        qmodel.keras_model.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5
    )


def test_residual_model_round_trip(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inputs)
    y = L.Conv2D(3, 3, padding="same", name="c2")(x)
    y = L.BatchNormalization(name="bn2")(y)
    x = L.ReLU(name="post")(L.Add(name="res")([x, y]))
    model = keras.Model(inputs, L.Dense(2, name="d")(L.Flatten(name="f")(x)))
    qmodel = quantized_model(model)
    assert {q.name: q.activation_at for q in qmodel.layers} == {"c1": "c1", "c2": "c2", "d": "d"}
    formats = {t: Format(6, 3) for t in qmodel.tensors}
    qmodel.set_formats(formats)
    x_in = _x((8, 8, 3))
    expected = qmodel.keras_model.predict(x_in, verbose=0)
    path = tmp_path / "quantized.keras"
    qmodel.save(str(path))
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x_in, verbose=0), expected)
    assert isinstance(loaded.get_layer("c1" + QUANTIZER_SUFFIX), FixedPointQuantizer)


@pytest.mark.parametrize(
    ("layer", "shape", "macs"),
    [
        (L.Dense(5), (7,), 7 * 5),
        (L.Conv1D(4, 3), (10, 2), 8 * 3 * 2 * 4),
        (L.Conv2D(4, 3, padding="same"), (6, 6, 2), 36 * 9 * 2 * 4),
        (L.Conv2D(4, 3, groups=2), (6, 6, 2), 16 * 9 * 1 * 4),
        (L.Conv3D(2, 3), (5, 5, 5, 1), 27 * 27 * 1 * 2),
        (L.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 3), 16 * 9 * 3 * 2),
        (L.DepthwiseConv1D(3), (9, 2), 7 * 3 * 2),
        (L.SeparableConv2D(4, 3), (6, 6, 3), 16 * (9 * 3 + 3 * 4)),
        (L.SeparableConv1D(4, 3), (9, 2), 7 * (3 * 2 + 2 * 4)),
    ],
)
def test_every_quantizable_layer_type(layer: keras.layers.Layer, shape: tuple[int, ...], macs: int) -> None:
    model = keras.Sequential([keras.Input(shape), layer, L.Flatten(), L.Dense(2)])
    first = find_quantizable_layers(model)[0]
    assert first.macs == macs
    assert first.weight_count == sum(
        int(np.prod(w.shape)) for w in layer.weights if w.name.endswith("kernel")
    )
    assert first.bias_count == int(np.prod(layer.bias.shape))
    assert first.activation_count == int(np.prod(layer.output.shape[1:]))
    qmodel = quantized_model(model)
    tensor = TensorId(first.name, "W")
    fmt = Format(3, 2)
    qmodel.set_formats({tensor: fmt})
    target = qmodel.keras_model.get_layer(first.name)
    kernels = [w.numpy() for w in target.weights if w.name.endswith("kernel")]
    floats = [w.numpy() for w in layer.weights if w.name.endswith("kernel")]
    for got, original in zip(kernels, floats, strict=True):
        np.testing.assert_array_equal(got, quantize(original, fmt))
    qmodel.set_formats({})
    for w, original in zip(target.weights, layer.weights, strict=True):
        np.testing.assert_array_equal(w.numpy(), original.numpy())


def test_set_formats_is_exact_and_leaves_the_float_model_alone() -> None:
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, activation="relu", name="h"), L.Dense(2, name="o")]
    )
    before = [w.copy() for w in model.get_weights()]
    qmodel = quantized_model(model)
    formats = {
        TensorId("h", "W"): Format(4, 2),
        TensorId("h", "B"): Format(1, 0),
        TensorId("o", "A"): Format(5, 1),
    }
    qmodel.set_formats(formats)
    assert qmodel.formats == formats
    np.testing.assert_array_equal(qmodel.keras_model.get_layer("h").bias.numpy(), 0.0)
    assert qmodel.quantizer("o").enabled and not qmodel.quantizer("h").enabled
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    x = _x((4,))
    hidden = np.maximum(x @ quantize(before[0], Format(4, 2)), 0.0)
    expected = quantize(hidden @ before[2] + before[3], Format(5, 1))
    np.testing.assert_allclose(qmodel.keras_model.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    qmodel.set_formats({})
    np.testing.assert_allclose(
        qmodel.keras_model.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    with pytest.raises(KeyError, match="nope:W"):
        qmodel.set_formats({TensorId("nope", "W"): Format(4, 2)})
    assert qmodel.largest_magnitude(TensorId("h", "W")) == float(np.max(np.abs(before[0])))


def test_layer_without_bias_has_no_bias_tensor() -> None:
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, use_bias=False, name="h"), L.Dense(2, name="o")])
    qmodel = quantized_model(model)
    assert [str(t) for t in qmodel.tensors] == ["h:W", "h:A", "o:W", "o:B", "o:A"]


def test_model_without_quantizable_layer_is_refused() -> None:
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Flatten(), L.Softmax()], name="plain")
    with pytest.raises(ModelError, match=r"no layer optsearch can quantize.*Dense"):
        find_quantizable_layers(model)


def test_unsupported_layer_with_weights_is_named() -> None:
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, name="rnn"), L.Dense(2)])
    with pytest.raises(ModelError, match=r"layer 'rnn' \(LSTM\) has weights"):
        find_quantizable_layers(model)


def test_nested_model_is_refused_by_name() -> None:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3)], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(inner(inputs)))
    with pytest.raises(ModelError, match="'inner' is a nested model"):
        find_quantizable_layers(model)


def test_shared_layer_is_refused_by_name() -> None:
    shared = L.Dense(4, name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(shared(shared(inputs))))
    with pytest.raises(ModelError, match=r"'shared' .* is shared"):
        find_quantizable_layers(model)


def test_two_inputs_are_refused() -> None:
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], L.Dense(2)(L.Concatenate()([a, b])))
    with pytest.raises(ModelError, match="2 inputs"):
        find_quantizable_layers(model)


def test_reserved_layer_name_is_refused() -> None:
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, name="h"), L.Activation("linear", name="h_act_quant")]
    )
    with pytest.raises(ModelError, match="reserved"):
        quantized_model(model)
