"""The Keras parts of reading data: the ``keras.datasets`` downloads, Keras' own bilinear resize, and
image folders read by ``keras.utils.image_dataset_from_directory``.

``optsearch.data`` calls these lazily, so that reading an ``.npz`` file never imports Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from optsearch.core.errors import DataError

#: Images decoded per step when reading a folder (bounds the float32 copy of a batch).
_FOLDER_BATCH = 128


def dataset_loader(name: str) -> Callable[[], Any]:
    """The ``load_data`` function of ``keras.datasets.<name>``, looked up at call time."""
    loader: Callable[[], Any] = getattr(keras.datasets, name).load_data
    return loader


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an NHWC float32 batch to ``size`` with ``keras.ops`` (what a Resizing layer
    computes, so preprocessing outside the model matches it)."""
    resized = keras.ops.image.resize(images, size, interpolation="bilinear", data_format="channels_last")
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class ImageFolder:
    """What Keras read from an image folder: the files in its order, the classes, images and labels."""

    paths: list[str]
    class_names: list[str] | None
    x: np.ndarray
    """``(N, H, W, C)``: uint8 when every value is a whole number in 0..255 (no resize made
    fractions), else float32 as Keras gives it."""
    y: np.ndarray | None


def read_image_folder(folder: Path, *, labelled: bool, color_mode: str, size: tuple[int, int]) -> ImageFolder:
    """The images of ``folder`` as ``keras.utils.image_dataset_from_directory`` reads them, unshuffled:
    labels inferred from the class subfolders (``labelled``) or none, decoded in ``color_mode`` and
    resized (bilinear) to ``size``. An image that cannot be decoded is a DataError naming its file."""
    try:
        dataset = keras.utils.image_dataset_from_directory(
            str(folder),
            labels="inferred" if labelled else None,
            label_mode="int",
            color_mode=color_mode,
            image_size=size,
            batch_size=None,
            shuffle=False,
            interpolation="bilinear",
            verbose=False,
        )
    except ValueError as exc:  # Keras' own refusals (no images found, ...)
        raise DataError(f"{folder}: {str(exc).splitlines()[0]}") from exc
    paths = [str(p) for p in dataset.file_paths]
    class_names = [str(c) for c in dataset.class_names] if labelled else None
    images, labels = _decode_all(dataset, paths, labelled)
    return ImageFolder(paths, class_names, images, labels)


def _decode_all(dataset: Any, paths: list[str], labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """All images (and labels) of the unbatched Keras dataset, a batch at a time, kept as uint8 when exact."""
    import tensorflow as tf  # the backend of image_dataset_from_directory

    chunks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    done = 0
    try:
        for element in dataset.batch(_FOLDER_BATCH):
            batch = np.asarray(element[0] if labelled else element, dtype=np.float32)
            chunks.append(_exact_uint8(batch))
            if labelled:
                labels.append(np.asarray(element[1], dtype=np.int64))
            done += len(batch)
    except tf.errors.OpError:
        path, reason = _first_unreadable(dataset, paths, done)
        raise DataError(f"{path}: not a readable image ({reason}); remove or replace it") from None
    dtype = np.uint8 if all(c.dtype == np.uint8 for c in chunks) else np.float32
    images = np.concatenate([c.astype(dtype, copy=False) for c in chunks])
    return images, (np.concatenate(labels) if labelled else None)


def _exact_uint8(batch: np.ndarray) -> np.ndarray:
    """The batch as uint8 when that loses nothing (decoded pixels, no fractional resize), else as is."""
    if batch.min() >= 0 and batch.max() <= 255 and np.array_equal(batch, np.round(batch)):
        return batch.astype(np.uint8)
    return batch


def _first_unreadable(dataset: Any, paths: list[str], start: int) -> tuple[str, str]:
    """The first file from ``start`` on that Keras cannot decode, and the reason, one image at a time."""
    import tensorflow as tf

    index = start
    try:
        for _ in dataset.skip(start):
            index += 1
    except tf.errors.OpError as exc:
        return paths[index], _reason(exc)
    return paths[start] if start < len(paths) else "an image", "decoding failed"


def _reason(exc: Exception) -> str:
    """The last part of a TensorFlow error message (the part after the pipeline's own prefixes)."""
    message = str(getattr(exc, "message", exc)).strip().splitlines()[0] if str(exc).strip() else ""
    return message.rsplit(": ", 1)[-1].strip() or type(exc).__name__
