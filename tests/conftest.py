"""Shared test settings: quiet TensorFlow, deterministic hypothesis profile for CI."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=100)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

L = keras.layers
N = 120


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained-looking CNN (raw uint8 in) and data it mostly gets right, plus broken variants."""
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Rescaling(1 / 255, name="scale"),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.Flatten(name="flat"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
    y = np.argmax(model.predict(x.astype(np.float32), verbose=0), axis=1)
    y[:10] = (y[:10] + 1) % 3
    paths = {"model": root / "model.keras", "data": root / "data.npz"}
    model.save(paths["model"])
    np.savez_compressed(paths["data"], x=x, y=y)

    def npz(name: str, **arrays: np.ndarray) -> None:
        paths[name] = root / f"{name}.npz"
        np.savez_compressed(paths[name], **arrays)

    npz("wrong_shape", x=rng.integers(0, 256, size=(N, 10, 10, 1), dtype=np.uint8), y=y)
    npz("labels_out_of_range", x=x, y=np.full(N, 7))
    npz("labels_wrong_length", x=x, y=y[:-5])
    bad = x.astype(np.float32)
    bad[3, 0, 0, 0] = np.nan
    bad[5, 1, 1, 0] = np.inf
    npz("nan", x=bad, y=y)
    npz("empty", x=x[:0], y=y[:0])
    npz("one_hot", x=x, y=np.eye(3, dtype=np.float32)[y])
    paths["not_a_model"] = root / "notes.keras"
    paths["not_a_model"].write_text("these are not the weights you are looking for\n")
    paths["plain"] = root / "plain.keras"
    keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Softmax()]).save(paths["plain"])
    return paths
