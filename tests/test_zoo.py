"""The paper's two architectures (spec §9) and where the tool puts their quantizers (spec §3)."""

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


@pytest.mark.parametrize("arch", zoo.ARCHITECTURES)
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
    assert zoo.build("branched", (32, 32, 3), 10).input_shape == (None, 32, 32, 3)
    with pytest.raises(ValueError, match="sequential, branched"):
        zoo.build("resnet")


def test_saved_model_loads_without_custom_objects(tmp_path: Path) -> None:
    model = zoo.branched_cnn()
    path = tmp_path / "b.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.count_params() == model.count_params()
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
