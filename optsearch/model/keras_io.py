"""The Keras parts of reading data: the ``keras.datasets`` downloads and Keras' own bilinear resize.

``optsearch.data`` calls these lazily, so that reading an ``.npz`` file never imports Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np


def dataset_loader(name: str) -> Callable[[], Any]:
    """The ``load_data`` function of ``keras.datasets.<name>``, looked up at call time."""
    loader: Callable[[], Any] = getattr(keras.datasets, name).load_data
    return loader


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an NHWC float32 batch to ``size`` with ``keras.ops`` (what a Resizing layer
    computes, so preprocessing outside the model matches it)."""
    resized = keras.ops.image.resize(images, size, interpolation="bilinear", data_format="channels_last")
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype=np.float32)
