"""Write the Keras 2 ``.h5`` fixtures of ``tests/fixtures/legacy/`` with the real tf-keras.

Run it in a virtualenv of its own (not the project's: tf-keras is Keras 2, the project is on
Keras 3), from the repository root:

    python3 -m venv /work/tfkeras-venv
    /work/tfkeras-venv/bin/pip install "tensorflow-cpu==2.21.*" "tf-keras==2.21.*"
    /work/tfkeras-venv/bin/python scripts/make_legacy_fixtures.py

Each fixture is a tiny random-weight model (BatchNorm statistics randomised too, so that they
matter) saved with ``model.save(path, save_format="h5")``, and ``NAME.npz`` beside it with a
fixed input batch ``x`` and the outputs ``y`` tf-keras computed for it (inference mode).
Two more files show older eras that tf-keras 2.21 no longer writes, derived from a tf-keras file
by rewriting its config into the form TF 2.4 (``tf24_``) and TF 2.1 (``tf21_``) wrote; the
weights, inputs and outputs are the tf-keras ones. The folder's README.md records provenance.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import datetime
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tensorflow as tf
import tf_keras as keras

L = keras.layers
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "legacy"
SAMPLES = 8
SEED = 0


def _ds_cnn() -> keras.Model:
    """MLPerf Tiny's keyword-spotting DS-CNN, tiny: Conv2D 10x4, depthwise separable blocks, pooling."""
    inputs = keras.Input((16, 8, 1))
    x = L.Conv2D(8, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=keras.regularizers.l2(1e-4))(
        inputs
    )
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(0.2)(x)
    x = L.DepthwiseConv2D((3, 3), padding="same", depthwise_regularizer=keras.regularizers.l2(1e-4))(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, (1, 1), padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.SeparableConv2D(8, (3, 3), padding="same", depth_multiplier=2)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.AveragePooling2D(pool_size=(8, 4))(x)
    x = L.Flatten()(x)
    outputs = L.Dense(4, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


def _mobilenet_v1() -> keras.Model:
    """A MobileNetV1 stem, two depthwise separable blocks (ReLU(6.)) and keras.applications' top."""
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    for filters, strides in ((16, 1), (16, 2)):
        if strides == 2:
            x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
        x = L.DepthwiseConv2D(
            3, strides=strides, padding="same" if strides == 1 else "valid", use_bias=False
        )(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
        x = L.Conv2D(filters, 1, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Dropout(1e-3)(x)
    x = L.Conv2D(4, 1, padding="same")(x)
    x = L.Reshape((4,))(x)
    outputs = L.Activation("softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1")


def _mobilenet_v2() -> keras.Model:
    """A MobileNetV2 stem and one inverted residual (expand, depthwise, linear project, Add)."""
    inputs = keras.Input((16, 16, 3))
    x = L.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization(epsilon=1e-3, momentum=0.999)(x)
    x = L.Activation("relu6")(x)
    shortcut = x
    x = L.Conv2D(24, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation(tf.nn.relu6)(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(max_value=6.0)(x)
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Add()([shortcut, x])
    x = L.Conv2D(16, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu6")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(4, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def _resnet_v1() -> keras.Model:
    """MLPerf Tiny's ResNet-8 pattern: Conv-BN-ReLU, residual blocks ending in Add then ReLU."""
    reg = keras.regularizers.l2(1e-4)
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg)(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    for filters, strides in ((8, 1), (16, 2)):
        y = L.Conv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            kernel_initializer="he_normal",
            kernel_regularizer=reg,
        )(x)
        y = L.BatchNormalization()(y)
        y = L.Activation("relu")(y)
        y = L.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg)(y)
        y = L.BatchNormalization()(y)
        if strides != 1:
            x = L.Conv2D(filters, 1, strides=strides, kernel_initializer="he_normal", kernel_regularizer=reg)(
                x
            )
        x = L.Add()([x, y])
        x = L.Activation("relu")(x)
    x = L.AveragePooling2D(pool_size=8)(x)
    x = L.Flatten()(x)
    outputs = L.Dense(4, activation="softmax", kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs, name="resnet_v1")


def _densenet_concat() -> keras.Model:
    """A DenseNet-style block: BN-ReLU-Conv outputs concatenated onto the input, then a transition."""
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(
        8, 3, padding="same", use_bias=False, kernel_constraint=keras.constraints.RadialConstraint()
    )(inputs)
    x = L.MaxPooling2D(2)(x)
    x = L.SpatialDropout2D(0.1)(x)
    for _ in range(2):
        y = L.BatchNormalization(axis=3)(x)
        y = L.Activation("relu")(y)
        y = L.Conv2D(4, 3, padding="same", use_bias=False)(y)
        x = L.Concatenate(axis=3)([x, y])
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.AveragePooling2D(2, strides=2)(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(4)(x)
    return keras.Model(inputs, outputs, name="densenet_concat")


def _conv1d() -> keras.Model:
    """A Conv1D signal classifier with a separable 1-D conv, swish and 1-D pooling."""
    inputs = keras.Input((64, 2))
    x = L.Conv1D(8, 5, strides=2, kernel_initializer="lecun_uniform")(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.ZeroPadding1D(1)(x)
    x = L.SeparableConv1D(8, 3)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("swish")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(8, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dropout(0.25)(x)
    outputs = L.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="conv1d")


def _mlp_bn() -> keras.Model:
    """hls4ml's jet-tagging shape: Dense-BN-ReLU twice on 16 features, five classes."""
    reg = keras.regularizers.L1L2(l1=1e-5, l2=1e-4)
    inputs = keras.Input((16,))
    x = L.Dense(32, kernel_initializer="lecun_uniform", kernel_regularizer=reg)(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Dense(16, kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal"))(
        x
    )
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    outputs = L.Dense(5, activation="softmax", kernel_constraint=keras.constraints.MaxNorm(3))(x)
    return keras.Model(inputs, outputs, name="mlp_bn")


def _sequential_input_shape() -> keras.Model:
    """A Sequential model whose input shape is given to its first layer (``batch_input_shape``)."""
    return keras.Sequential(
        [
            L.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(3, activation="softmax"),
        ],
        name="sequential_input_shape",
    )


def _nested() -> keras.Model:
    """A functional feature extractor and a Sequential head, each used as a layer of the outer model."""
    inner_in = keras.Input((8, 8, 1))
    y = L.Conv2D(4, 3, padding="same")(inner_in)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    backbone = keras.Model(inner_in, y, name="backbone")
    head = keras.Sequential([L.Flatten(), L.Dense(3)], name="head")
    inputs = keras.Input((8, 8, 1))
    outputs = L.Activation("softmax")(head(backbone(inputs)))
    return keras.Model(inputs, outputs, name="nested")


def _nested_tail() -> keras.Model:
    """A functional classifier used as the last layer of the outer model (its output is the model's)."""
    head_in = keras.Input((4, 4, 4))
    y = L.GlobalAveragePooling2D()(head_in)
    classifier = keras.Model(head_in, L.Dense(3, activation="softmax")(y), name="classifier")
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, classifier(x), name="nested_tail")


def _mobilenet_v3_ops() -> keras.Model:
    """tf-keras' MobileNetV3 idiom: hard-swish and hard-sigmoid written as TensorFlow operations
    on tensors (``x + 3.0``, ``* (1 / 6)``, ``tf.nn.relu6``), which Keras 2 saved as TFOpLambda layers."""

    def hard_sigmoid(t: tf.Tensor) -> tf.Tensor:
        return L.ReLU(6.0)(t + 3.0) * (1.0 / 6.0)

    inputs = keras.Input((16, 16, 3))
    x = L.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Multiply()([x, hard_sigmoid(x)])
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = tf.nn.relu6(x)
    se = L.GlobalAveragePooling2D(keepdims=True)(x)
    se = L.Conv2D(4, 1)(se)
    se = L.ReLU()(se)
    se = L.Conv2D(8, 1)(se)
    x = L.Multiply()([x, hard_sigmoid(se)])
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(4, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v3_ops")


def _activations() -> keras.Model:
    """The Keras 2 activations and activation layers around a quantizable layer, side by side."""
    inputs = keras.Input((6,))
    branches = []
    for activation in (
        "elu",
        "selu",
        "gelu",
        "swish",
        "sigmoid",
        "hard_sigmoid",
        "tanh",
        "softplus",
        "softsign",
        "relu6",
    ):
        branches.append(L.Dense(3, activation=activation)(inputs))
    for layer in (
        L.ReLU(max_value=4.0, threshold=0.5, negative_slope=0.1),
        L.LeakyReLU(alpha=0.2),
        L.ELU(alpha=0.7),
        L.ThresholdedReLU(theta=0.3),
        L.Activation("hard_sigmoid"),
        L.PReLU(),
        L.Softmax(axis=-1),
    ):
        branches.append(layer(L.Dense(3)(inputs)))
    x = L.Concatenate()(branches)
    outputs = L.Dense(4)(x)
    return keras.Model(inputs, outputs, name="activations")


def _squeeze_excite() -> keras.Model:
    """EfficientNet's pieces: Normalization, swish, a squeeze-excite Multiply, Reshape, Dropout."""
    inputs = keras.Input((8, 8, 3))
    norm = L.Normalization(axis=-1)
    norm.adapt(np.random.default_rng(SEED).normal(2.0, 3.0, size=(32, 8, 8, 3)).astype(np.float32))
    x = norm(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("swish")(x)
    se = L.GlobalAveragePooling2D()(x)
    se = L.Reshape((1, 1, 8))(se)
    se = L.Conv2D(2, 1, activation="swish")(se)
    se = L.Conv2D(8, 1, activation="sigmoid")(se)
    x = L.Multiply()([x, se])
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    outputs = L.Dense(4, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="squeeze_excite")


def _mixed_float16() -> keras.Model:
    """A Dense-BN classifier trained under the mixed_float16 policy (dtype written as a Policy dict)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((8,))
        x = L.Dense(8)(inputs)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Dense(3)(x)
        outputs = L.Activation("softmax", dtype="float32")(x)
        return keras.Model(inputs, outputs, name="mixed_float16")
    finally:
        keras.mixed_precision.set_global_policy("float32")


MODELS: dict[str, Callable[[], keras.Model]] = {
    "ds_cnn": _ds_cnn,
    "mobilenet_v1": _mobilenet_v1,
    "mobilenet_v2": _mobilenet_v2,
    "resnet_v1": _resnet_v1,
    "densenet_concat": _densenet_concat,
    "conv1d": _conv1d,
    "mlp_bn": _mlp_bn,
    "sequential_input_shape": _sequential_input_shape,
    "nested": _nested,
    "nested_tail": _nested_tail,
    "mobilenet_v3_ops": _mobilenet_v3_ops,
    "activations": _activations,
    "squeeze_excite": _squeeze_excite,
    "mixed_float16": _mixed_float16,
}


def _randomise_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every BatchNorm non-trivial gamma, beta, mean and variance (nested models included)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _randomise_batchnorm(layer, rng)
        elif isinstance(layer, L.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            values = [rng.normal(0.0, 0.3, size=s) for s in shapes]
            values[-1] = rng.uniform(0.5, 2.0, size=shapes[-1])  # moving variance > 0
            if layer.scale:
                values[0] = rng.uniform(0.5, 1.5, size=shapes[0])
            layer.set_weights([v.astype(np.float32) for v in values])


def _inputs(model: keras.Model, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    if model.name in ("mobilenet_v2", "mobilenet_v3_ops"):  # raw pixels, the model rescales them
        return rng.integers(0, 256, size=(SAMPLES, *shape)).astype(np.float32)
    return rng.normal(size=(SAMPLES, *shape)).astype(np.float32)


def write_fixture(name: str, build: Callable[[], keras.Model], out: Path) -> None:
    """Build, randomise, save ``NAME.h5`` and ``NAME.npz`` (inputs ``x``, tf-keras outputs ``y``)."""
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = build()
    _randomise_batchnorm(model, rng)
    x = _inputs(model, rng)
    y = np.asarray(model(x, training=False), dtype=np.float32)
    model.save(out / f"{name}.h5", save_format="h5")
    np.savez_compressed(out / f"{name}.npz", x=x, y=y)


# --- Older eras: the config of a tf-keras file rewritten into the form older TF releases wrote.

#: Keys tf-keras 2.13+ added to every serialised object and layer entry, absent before.
_NEW_KEYS = ("module", "registered_name", "build_config", "compile_config")


def _strip_new_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_new_keys(v) for k, v in node.items() if k not in _NEW_KEYS}
    if isinstance(node, list):
        return [_strip_new_keys(v) for v in node]
    return node


def _tf21_layer(node: Any) -> Any:
    """TF 2.1 had no ``groups`` on convolutions (added in TF 2.3) and called models ``Model``."""
    if isinstance(node, dict):
        out = {k: _tf21_layer(v) for k, v in node.items()}
        if out.get("class_name") == "Functional":
            out["class_name"] = "Model"
        if (
            isinstance(out.get("config"), dict)
            and "groups" in out["config"]
            and "layers" not in out["config"]
        ):
            out["config"] = {k: v for k, v in out["config"].items() if k != "groups"}
        return out
    if isinstance(node, list):
        return [_tf21_layer(v) for v in node]
    return node


ERAS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "tf24": ("2.4.0", _strip_new_keys),
    "tf21": ("2.2.4-tf", lambda config: _tf21_layer(_strip_new_keys(config))),
}


def write_era(era: str, source: str, out: Path) -> None:
    """Copy ``source``'s fixture as ``ERA_SOURCE`` with its config in that era's form."""
    version, rewrite = ERAS[era]
    target = f"{era}_{source}"
    shutil.copyfile(out / f"{source}.npz", out / f"{target}.npz")
    # A fresh file rather than an edited copy: HDF5 does not reclaim the space of a replaced attribute.
    with h5py.File(out / f"{source}.h5", "r") as src, h5py.File(out / f"{target}.h5", "w") as dst:
        for key in src:
            src.copy(src[key], dst, name=key)
        for key, value in src.attrs.items():
            if key != "training_config":
                dst.attrs[key] = value
        dst.attrs["model_config"] = json.dumps(rewrite(json.loads(src.attrs["model_config"]))).encode()
        dst.attrs["keras_version"] = version.encode()
        if "model_weights" in dst:
            dst["model_weights"].attrs["keras_version"] = version.encode()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        write_fixture(name, build, OUT)
    write_era("tf24", "ds_cnn", OUT)
    write_era("tf21", "mobilenet_v1", OUT)
    stamp = datetime.date.today().isoformat()
    print(
        f"wrote {len(MODELS) + len(ERAS)} fixtures to {OUT} with tf-keras {keras.__version__}, "
        f"TF {tf.__version__}, Python {sys.version.split()[0]} on {stamp}"
    )


if __name__ == "__main__":
    main()
