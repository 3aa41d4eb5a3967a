"""The user's model and data, loaded and checked together before any evaluation runs.

Everything that can be wrong with the input (file, layer, data shape, labels, values) is found
here and reported as an ``OptsearchError`` naming what to fix, before a single forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from optsearch.core.errors import DataError, ModelError
from optsearch.core.tensors import ActivationPoint, FoldMode
from optsearch.data import (
    Dataset,
    ImageOptions,
    Preprocess,
    Unlabelled,
    batches,
    fit_channel_axis,
    load_samples,
    split,
    validate,
)
from optsearch.model.folding import Fold, fold_batchnorm
from optsearch.model.graph import QuantizedModel, quantized_model
from optsearch.model.loading import load_model
from optsearch.settings import DEFAULT_BATCH_SIZE, DataSettings


@dataclass
class Inputs:
    """A loaded model with its quantized clone, and the search and held-out sets that fit it."""

    model_path: Path
    model: keras.Model
    qmodel: QuantizedModel
    search: Dataset
    held_out: Dataset | None
    preprocess: Preprocess
    num_classes: int
    folds: list[Fold] = field(default_factory=list)
    """What ``--fold-bn`` did with each BatchNorm (``model`` stays the model as given)."""
    labels_from_model: bool = False
    """The data had no labels: they are the float model's own top-1 predictions (label-free
    calibration; the loss is the disagreement with the float model, its accuracy 100%)."""


def num_classes(model: keras.Model, path: Path) -> int:
    """The number of classes: the size of the model's last output axis."""
    shape = tuple(model.outputs[0].shape)
    classes = shape[-1] if len(shape) >= 2 else None
    if classes is None or classes < 2:
        raise ModelError(
            f"{path}: the model's output has shape {shape}; optsearch needs one score per class "
            "(a last axis of size 2 or more, e.g. Dense(10) with or without softmax)"
        )
    return int(classes)


def prepare(
    model_path: str | Path,
    data: DataSettings,
    *,
    unsafe_load: bool = False,
    activation_point: ActivationPoint = "activation",
    fold_bn: FoldMode = "off",
    dataset: Dataset | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Inputs:
    """Load the model (BatchNorms folded if asked) and its quantized clone; load, check and split the data.

    An image folder is read at the model's input size and channel count. Data without labels (an
    ``.npz`` with only ``x``, images without class subfolders) are labelled with the float model's
    own top-1 predictions, ``batch_size`` samples at a time.
    """
    path = Path(model_path)
    model = load_model(path, unsafe=unsafe_load)
    try:
        searched, folds = fold_batchnorm(model, fold_bn)
        qmodel = quantized_model(searched, activation_point)
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from err
    classes = num_classes(model, path)
    input_shape = tuple(model.inputs[0].shape[1:])
    loaded: Dataset | Unlabelled
    if dataset is None:
        images = ImageOptions.for_input_shape(input_shape, data.resize)
        loaded = load_samples(data.spec, data.data_dir, images=images)
    else:
        loaded = dataset
    try:
        chosen = Preprocess(scale=data.scale, resize=data.resize)
    except ValueError as err:  # --scale nan or inf
        raise DataError(f"{err}; give e.g. --scale 0.00392156862745098 for 1/255") from err
    preprocess = fit_channel_axis(chosen, tuple(loaded.x.shape[1:]), input_shape)
    labels_from_model = isinstance(loaded, Unlabelled)
    if isinstance(loaded, Unlabelled):
        unlabelled = Dataset(loaded.x, np.zeros(len(loaded), dtype=np.int64), loaded.source)
        validate(unlabelled, input_shape=input_shape, num_classes=classes, preprocess=preprocess)
        loaded = loaded.labelled(float_predictions(model, unlabelled, preprocess, batch_size))
    else:
        validate(loaded, input_shape=input_shape, num_classes=classes, preprocess=preprocess)
    search, held_out = split(loaded, data.search_fraction, data.seed)
    return Inputs(path, model, qmodel, search, held_out, preprocess, classes, folds, labels_from_model)


def float_predictions(
    model: keras.Model, samples: Dataset, preprocess: Preprocess, batch_size: int
) -> np.ndarray:
    """The float model's top-1 class of every sample (the labels of label-free calibration data)."""
    predicted = [
        np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=-1)
        for x, _ in batches(samples, batch_size, preprocess)
    ]
    return np.concatenate(predicted).astype(np.int64)
