"""The zoo's architectures (the paper's two, spec §9, and ResNet-8 / MobileNetV1-0.25) and where the
tool puts their quantizers (spec §3)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from optsearch.model import zoo
from optsearch.model.graph import QUANTIZER_SUFFIX, find_quantizable_layers, quantized_model


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _producer(layer: keras.layers.Layer) -> str:
    """The name of the layer whose output ``layer`` consumes (single-input layers)."""
    return str(layer.input._keras_history.operation.name)


def test_sequential_matches_the_paper() -> None:
    """Spec §9: 327,018 parameters on 28x28x1 and about 39.75 M MACs per image."""
    model = zoo.sequential_cnn()
    layers = find_quantizable_layers(model)
    assert model.count_params() == 327_018  # counting BatchNorm's moving mean/variance
    assert _trainable(model) == 325_610
    assert sum(q.macs for q in layers) == 39_750_400
    assert [q.name for q in layers] == [f"c{i}" for i in range(1, 15)] + ["logits"]
    assert model.output_shape == (None, 10)


def test_sequential_on_rgb_inputs() -> None:
    model = zoo.sequential_cnn((32, 32, 3))
    assert model.count_params() == 327_018 + 2 * 9 * 32  # C1 sees three channels
    assert len(find_quantizable_layers(model)) == 15


def test_branched_matches_the_paper() -> None:
    """Spec §9: about 194 k parameters, 23 quantizable layers (stem + 3 x 7 convs + Dense)."""
    model = zoo.branched_cnn()
    layers = find_quantizable_layers(model)
    assert model.count_params() == 194_162
    assert _trainable(model) == 192_554
    assert len(layers) == 23
    assert layers[0].name == "stem" and layers[-1].name == "logits"
    assert sum(q.macs for q in layers) == 32_046_592
    assert model.get_layer("resize").output.shape[1:3] == (96, 96)
    assert model.get_layer("m3_concat").output.shape[1:] == (6, 6, 256)


def test_raw_uint8_images_go_straight_in() -> None:
    """Rescaling (and Resizing) live inside the models: uint8 pixels give class probabilities."""
    x = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    for arch in zoo.ARCHITECTURES:
        probs = np.asarray(zoo.build(arch, (32, 32, 3), 10)(x.astype(np.float32), training=False))
        assert probs.shape == (2, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", zoo.PAPER_ARCHITECTURES)
def test_quantizer_after_relu_before_batchnorm(arch: str) -> None:
    """Spec §3: Conv(relu) -> Q -> BN in every block, and the logits are quantized before softmax."""
    model = zoo.build(arch)
    layers = find_quantizable_layers(model)
    assert all(q.activation_at == q.name and not q.split_softmax for q in layers)
    qmodel = quantized_model(model).keras_model
    for q in layers:
        quantizer = qmodel.get_layer(q.name + QUANTIZER_SUFFIX)
        assert _producer(quantizer) == q.name
    convs = [q for q in layers if q.class_name == "Conv2D"]
    assert len(convs) == len(layers) - 1
    for q in convs:
        assert qmodel.get_layer(q.name).get_config()["activation"] == "relu"
        batchnorm = next(
            layer
            for layer in qmodel.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            and _producer(layer) == q.name + QUANTIZER_SUFFIX
        )
        assert batchnorm.name in (f"bn{q.name[1:]}", f"{q.name}_bn")
    assert _producer(qmodel.get_layer("softmax")) == "logits" + QUANTIZER_SUFFIX


def test_build_dispatch_and_unknown_name() -> None:
    assert zoo.build("sequential").name == "sequential_cnn"
    assert zoo.build("sequential").input_shape == (None, 28, 28, 1)
    assert zoo.build("branched", (32, 32, 3), 10).input_shape == (None, 32, 32, 3)
    assert zoo.build("resnet8").name == "resnet8"
    assert zoo.build("mobilenet_v1").input_shape == (None, 32, 32, 3)  # the builder's own default
    assert zoo.build("resnet8", (28, 28, 1), 5).output_shape == (None, 5)
    with pytest.raises(ValueError, match="sequential, branched, resnet8, mobilenet_v1"):
        zoo.build("resnet")


def test_resnet8_matches_mlperf_tiny() -> None:
    """MLPerf Tiny's ResNet-8 on 32x32x3: 78,666 parameters and 12.5 M MACs; 3 stacks, 2 shortcuts."""
    model = zoo.resnet8()
    layers = find_quantizable_layers(model)
    assert model.count_params() == 78_666
    assert _trainable(model) == 78_186
    assert sum(q.macs for q in layers) == 12_501_632
    assert [q.name for q in layers] == [
        "stem",
        *("s1_conv1", "s1_conv2"),
        *("s2_conv1", "s2_conv2", "s2_shortcut"),
        *("s3_conv1", "s3_conv2", "s3_shortcut"),
        "logits",
    ]
    assert model.get_layer("s1_add").output.shape[1:] == (32, 32, 16)
    assert model.get_layer("s3_add").output.shape[1:] == (8, 8, 64)
    assert model.output_shape == (None, 10)
    by_name = {q.name: q for q in layers}
    # Conv -> BN -> ReLU: A is taken after the ReLU; a conv that feeds an Add is quantized at its output.
    assert by_name["stem"].activation_at == "stem_relu"
    assert by_name["s2_conv1"].activation_at == "s2_conv1_relu"
    assert by_name["s2_conv2"].activation_at == "s2_conv2"
    assert by_name["s3_shortcut"].activation_at == "s3_shortcut"
    assert by_name["s2_conv1"].input_sources == ("s1_conv2", "stem")  # through the identity path
    assert by_name["logits"].input_sources == ("s3_conv2", "s3_shortcut")
    assert all(q.has_bias and not q.split_softmax for q in layers)
    assert model.get_layer("s1_conv1").kernel_regularizer is not None


def test_mobilenet_v1_025_for_32x32() -> None:
    """MobileNetV1, alpha 0.25, stem stride 1: 13 depthwise-separable blocks, maps 32 -> 2, no bias."""
    model = zoo.mobilenet_v1()
    layers = find_quantizable_layers(model)
    assert model.count_params() == 221_114
    assert _trainable(model) == 215_642
    assert sum(q.macs for q in layers) == 3_331_072
    assert len(layers) == 1 + 2 * 13 + 1
    assert [q.class_name for q in layers[1:-1]] == ["DepthwiseConv2D", "Conv2D"] * 13
    assert layers[0].name == "stem" and layers[-1].name == "logits"
    assert model.get_layer("b1_pw_relu").output.shape[1:] == (32, 32, 16)
    assert model.get_layer("b13_pw_relu").output.shape[1:] == (2, 2, 256)
    assert all(q.activation_at == f"{q.name}_relu" for q in layers[:-1])
    assert [q.has_bias for q in layers] == [False] * 27 + [True]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("arch", ["resnet8", "mobilenet_v1"])
def test_reference_nets_quantize_after_the_relu(arch: str) -> None:
    """Conv -> BN -> ReLU -> Q in the reference nets, and the logits are quantized before softmax."""
    model = zoo.build(arch)
    qmodel = quantized_model(model).keras_model
    for q in find_quantizable_layers(model):
        assert _producer(qmodel.get_layer(q.name + QUANTIZER_SUFFIX)) == q.activation_at
    assert _producer(qmodel.get_layer("softmax")) == "logits" + QUANTIZER_SUFFIX


@pytest.mark.parametrize("arch", ["branched", "resnet8", "mobilenet_v1"])
def test_saved_model_loads_without_custom_objects(arch: str, tmp_path: Path) -> None:
    model = zoo.build(arch)
    path = tmp_path / "b.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.count_params() == model.count_params()
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(0).integers(0, 256, size=(2, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5, atol=1e-6)
