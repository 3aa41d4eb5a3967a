"""load_model: .keras and legacy HDF5 (Keras 2.2 Sequential included), and its one-line errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from legacy_h5 import INPUT_SHAPE, write_keras22_sequential_h5

from optsearch.core.errors import ModelError
from optsearch.model.loading import load_model


def _inputs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A small float32 batch of the given per-sample shape."""
    return np.random.default_rng(seed).normal(size=(5, *shape)).astype(np.float32)


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _small_sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(3, 3, activation="relu", name="conv2d_1"),
            keras.layers.Flatten(name="flatten_1"),
            keras.layers.Dense(4, activation="softmax", name="dense_1"),
        ]
    )


def _lambda_model() -> keras.Model:
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="times_two")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(doubled))


class Doubler(keras.layers.Layer):
    """A custom layer that is deliberately not registered with Keras."""

    def call(self, x):
        return x * 2.0


@pytest.fixture
def scratch_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Send tempfile's directories to an inspectable folder, to check nothing is left behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _error(path: Path, **kwargs: bool) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


@pytest.mark.parametrize("form", ["list", "dict"])
def test_keras22_sequential_h5_loads_with_exact_weights(
    tmp_path: Path, scratch_tempdir: Path, form: str
) -> None:
    path = tmp_path / "legacy.h5"
    written = write_keras22_sequential_h5(path, form=form, seed=3)
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    model = load_model(path)

    assert model.input_shape == (None, *INPUT_SHAPE)
    for name, arrays in written.items():
        loaded = model.get_layer(name).get_weights()
        assert len(loaded) == len(arrays)
        for got, want in zip(loaded, arrays, strict=True):
            np.testing.assert_array_equal(got, want)
    reference = _small_sequential()
    reference.set_weights([array for arrays in written.values() for array in arrays])
    x = _inputs(INPUT_SHAPE)
    np.testing.assert_array_equal(_predict(model, x), _predict(reference, x))
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert list(scratch_tempdir.iterdir()) == []


def test_hdf5_recognised_by_signature_whatever_the_name(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    write_keras22_sequential_h5(path)
    assert load_model(path).input_shape == (None, *INPUT_SHAPE)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_model_round_trips(tmp_path: Path, suffix: str) -> None:
    model = _small_sequential()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    x = _inputs(INPUT_SHAPE)
    np.testing.assert_array_equal(_predict(load_model(path), x), _predict(model, x))


def test_functional_h5_loads(tmp_path: Path) -> None:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Concatenate()([inputs, hidden])))
    path = tmp_path / "functional.h5"
    model.save(path)
    x = _inputs((6,))
    np.testing.assert_array_equal(_predict(load_model(path), x), _predict(model, x))


def test_missing_file(tmp_path: Path) -> None:
    assert "model file not found" in _error(tmp_path / "nope.keras")


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "saved_model"
    folder.mkdir()
    message = _error(folder)
    assert "directory" in message and 'model.save("model.keras")' in message


@pytest.mark.parametrize(
    ("name", "content"),
    [("model.keras", np.random.default_rng(0).bytes(512)), ("model.h5", b"not a model\n")],
)
def test_not_a_model(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert "not a Keras model" in _error(path)


def test_npz_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.ones(3))
    assert "not a Keras model" in _error(path)


@pytest.mark.parametrize("name", ["w.weights.h5", "w.h5"])
def test_weights_only_h5(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save_weights(tmp_path / "w.weights.h5")
    if name != "w.weights.h5":
        (tmp_path / "w.weights.h5").rename(path)
    message = _error(path)
    assert "weights only" in message and "full" in message


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_needs_unsafe(tmp_path: Path, suffix: str) -> None:
    model = _lambda_model()
    path = tmp_path / f"lambda{suffix}"
    model.save(path)

    message = _error(path)
    assert "Lambda" in message and "times_two" in message and "--unsafe-load" in message

    x = _inputs((4,))
    np.testing.assert_allclose(_predict(load_model(path, unsafe=True), x), _predict(model, x))


def test_lambda_in_keras22_h5_is_refused_by_config_scan(tmp_path: Path) -> None:
    # Keras alone would fail here on the incomplete Lambda config, without the hint.
    path = tmp_path / "legacy_lambda.h5"
    write_keras22_sequential_h5(path)
    with h5py.File(path, "r+") as f:
        config = str(f.attrs["model_config"])
        f.attrs["model_config"] = config.replace('"Flatten"', '"Lambda"').encode()
    message = _error(path)
    assert "Lambda layer (flatten_1)" in message and "--unsafe-load" in message


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unregistered_custom_layer(tmp_path: Path, suffix: str) -> None:
    inputs = keras.Input((3,))
    path = tmp_path / f"custom{suffix}"
    keras.Model(inputs, Doubler()(inputs)).save(path)
    message = _error(path)
    assert "Doubler" in message and "register_keras_serializable" in message
