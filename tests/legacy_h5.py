"""Write a Keras 2.2.4-era Sequential HDF5 model with h5py only, as old training scripts left them.

Keras 3 cannot load these files as written, so they are the fixture for the legacy loader.
The model is Conv2D(3, 3x3, relu) on 8x8x1 inputs, Flatten, Dense(4, softmax).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

INPUT_SHAPE = (8, 8, 1)


def _initializer(class_name: str, **config: Any) -> dict[str, Any]:
    """A Keras 2.2 initializer config: class name and its arguments, no module."""
    return {"class_name": class_name, "config": config}


def _weighted_layer_config(name: str) -> dict[str, Any]:
    """The fields Keras 2.2 wrote for every Conv2D and Dense layer."""
    return {
        "name": name,
        "trainable": True,
        "use_bias": True,
        "kernel_initializer": _initializer(
            "VarianceScaling", scale=1.0, mode="fan_avg", distribution="uniform", seed=None
        ),
        "bias_initializer": _initializer("Zeros"),
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }


def _layer_configs() -> list[dict[str, Any]]:
    """Conv2D (carrying ``batch_input_shape`` and ``dtype``), Flatten, Dense, in Keras 2.2 style."""
    conv = _weighted_layer_config("conv2d_1") | {
        "batch_input_shape": [None, *INPUT_SHAPE],
        "dtype": "float32",
        "filters": 3,
        "kernel_size": [3, 3],
        "strides": [1, 1],
        "padding": "valid",
        "data_format": "channels_last",
        "dilation_rate": [1, 1],
        "activation": "relu",
    }
    flatten = {"name": "flatten_1", "trainable": True, "data_format": "channels_last"}
    dense = _weighted_layer_config("dense_1") | {"units": 4, "activation": "softmax"}
    return [
        {"class_name": "Conv2D", "config": conv},
        {"class_name": "Flatten", "config": flatten},
        {"class_name": "Dense", "config": dense},
    ]


def _random_weights(seed: int) -> dict[str, list[np.ndarray]]:
    """Float32 kernels and biases per layer, in the order Keras stores them."""
    rng = np.random.default_rng(seed)
    conv_out = (INPUT_SHAPE[0] - 2) * (INPUT_SHAPE[1] - 2) * 3

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    return {
        "conv2d_1": [normal(3, 3, INPUT_SHAPE[2], 3), normal(3)],
        "flatten_1": [],
        "dense_1": [normal(conv_out, 4), normal(4)],
    }


def write_keras22_sequential_h5(
    path: str | Path, *, form: Literal["list", "dict"] = "list", seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """Write the model to ``path`` and return its weights per layer name (kernel, bias).

    ``form="list"`` stores the Sequential config as a bare list of layers (Keras 2.2);
    ``form="dict"`` as ``{"name": ..., "layers": [...]}`` with the same first layer.
    """
    if form not in ("list", "dict"):
        raise ValueError(f"form must be 'list' or 'dict', got {form!r}")
    layers = _layer_configs()
    config = layers if form == "list" else {"name": "sequential_1", "layers": layers}
    weights = _random_weights(seed)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": config}).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = np.array([name.encode() for name in weights])
        group.attrs["keras_version"] = b"2.2.4"
        group.attrs["backend"] = b"tensorflow"
        for name, arrays in weights.items():
            names = [f"{name}/{kind}:0" for kind in ("kernel", "bias")[: len(arrays)]]
            layer_group = group.create_group(name)
            layer_group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for weight_name, array in zip(names, arrays, strict=True):
                layer_group.create_dataset(weight_name, data=array)
    return weights
