"""Regressions of the quantized clone (``QuantizedModel``) and the folded clone, built in Keras 3.

Both were found with the Keras 2 fixtures of test_legacy_h5.py (``activations``: its input feeds
many layers; ``squeeze_excite``: an adapted Normalization) and are reproduced here in seconds.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import keras
import numpy as np

import optsearch.model.quantizer_layer  # noqa: F401  (registers the layer for load_model)
from optsearch.core.fixedpoint import Format
from optsearch.model.folding import fold_batchnorm
from optsearch.model.graph import quantized_model

L = keras.layers


def _x(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, *shape)) * 3 + 5).astype(np.float32)


def _input_fanout() -> keras.Model:
    """The network input feeds two Conv2D branches that meet again."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 3, padding="same", activation="relu", name="a")(inputs)
    b = L.Conv2D(3, 1, name="b")(inputs)
    merged = L.Add(name="add")([a, b])
    outputs = L.Dense(4, name="head")(L.Flatten(name="flat")(merged))
    return keras.Model(inputs, outputs, name="fanout")


def test_save_after_splitting_a_model_whose_input_feeds_two_layers(tmp_path: Path) -> None:
    """A cut holding the network input and a branch's tensor must not break ``save`` (it did:
    "Internal error: could not find node key ..._ib-1"); the parts still compute the model."""
    qmodel = quantized_model(_input_fanout())
    x = _x((6, 6, 2))
    for tensor in qmodel.tensors:
        prefix, suffix = qmodel.split(tensor)
        cut = prefix(x, training=False)
        np.testing.assert_allclose(
            np.asarray(suffix(cut, training=False)), np.asarray(qmodel.keras_model(x)), rtol=1e-6
        )
    for start, end in itertools.permutations(qmodel.tensors, 2):
        qmodel.segment(start, end)
    qmodel.keras_model.get_config()
    qmodel.set_formats({t: Format(8, 4) for t in qmodel.tensors})
    path = tmp_path / "quantized.keras"
    qmodel.save(str(path))
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(reloaded(x)), np.asarray(qmodel.keras_model(x)))


def _with_state() -> tuple[keras.Model, np.ndarray]:
    """Adapted Normalization and Discretization, Rescaling and BatchNorm with moving statistics."""
    keras.utils.set_random_seed(0)
    x = _x((4, 4, 2))
    normalization = L.Normalization(name="norm")
    normalization.adapt(x)
    discretization = L.Discretization(num_bins=4, output_mode="int", name="bins")
    discretization.adapt(x)
    inputs = keras.Input((4, 4, 2))
    normalised = L.Rescaling(0.5, offset=0.25, name="scale")(normalization(inputs))
    binned = L.Rescaling(1.0, name="cast")(discretization(inputs))  # Rescaling casts to float
    h = L.Concatenate(name="join")([normalised, binned])
    h = L.Conv2D(3, 1, name="conv")(h)
    h = L.BatchNormalization(name="bn")(h)
    outputs = L.Dense(2, name="head")(L.Flatten(name="flat")(h))
    model = keras.Model(inputs, outputs, name="stateful")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.array([1.0, -2.0, 0.5], np.float32))
    bn.moving_variance.assign(np.array([4.0, 0.25, 2.0], np.float32))
    return model, x


def test_clone_keeps_adapted_and_moving_statistics() -> None:
    """With no formats set the quantized clone is the float model; so is the folded clone
    (the clone lost an adapted Normalization's mean and variance: outputs off by several units)."""
    model, x = _with_state()
    expected = np.asarray(model(x, training=False))
    assert np.abs(expected).max() > 1.0
    qmodel = quantized_model(model)
    np.testing.assert_allclose(
        np.asarray(qmodel.keras_model(x, training=False)), expected, rtol=1e-5, atol=1e-5
    )
    folded, _ = fold_batchnorm(model, "exact")
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected, rtol=1e-5, atol=1e-5)
