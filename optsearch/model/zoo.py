"""The paper's two architectures (spec §9), built in code so tests and users get exactly the same nets.

Both take raw uint8 images: ``Rescaling(1/255)`` (and for the branched net ``Resizing(96, 96)``) live
inside the model. Every convolution has its ReLU built in and is followed by a BatchNormalization, so
the tool's activation quantizer lands between the ReLU and the BatchNorm (spec §3: Conv(relu) -> Q ->
BN). The classifier is a linear Dense named ``logits`` followed by a separate ``Softmax`` layer, so the
logits are quantized before the softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

L = keras.layers

#: Names accepted by ``build``.
ARCHITECTURES = ("sequential", "branched")

#: Filters of the sequential net's C1..C14 (spec §9: C1-C6 32, C7-C14 64).
SEQUENTIAL_FILTERS = (32,) * 6 + (64,) * 8
#: The sequential net pools (2x2) and drops out (0.25) after these convolutions (1-based).
SEQUENTIAL_POOL_AFTER = (4, 8, 12)
#: Filters ``f`` of the branched net's three Inception-style modules (spec §9).
BRANCHED_MODULE_FILTERS = (16, 32, 64)


def sequential_cnn(input_shape: Sequence[int] = (28, 28, 1), classes: int = 10) -> keras.Model:
    """The paper's 15-layer sequential CNN (14 convs + Dense), spec §9.

    ``Rescaling(1/255)``; C1..C14 3x3 with ReLU built in, each followed by BatchNorm; C1 unpadded,
    C2..C14 same-padded; after C4, C8 and C12 a 2x2 MaxPool and Dropout(0.25); GlobalMaxPool,
    Dropout(0.25), Dense ``logits`` (linear) and a separate Softmax.

    The max-pools use ``padding="same"`` (26 -> 13 -> 7 -> 4 on a 28x28 input): that gives the
    paper's 39.75 M MACs per 28x28 image exactly (39,750,400); unpadded pools (13 -> 6 -> 3) would
    give 37.3 M. On 28x28x1 the net has 327,018 parameters, counting BatchNorm's moving mean and
    variance (non-trainable; 325,610 trainable).
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate(SEQUENTIAL_FILTERS, start=1):
        padding = "valid" if i == 1 else "same"
        x = L.Conv2D(filters, 3, padding=padding, activation="relu", name=f"c{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        if i in SEQUENTIAL_POOL_AFTER:
            block = SEQUENTIAL_POOL_AFTER.index(i) + 1
            x = L.MaxPooling2D(2, padding="same", name=f"pool{block}")(x)
            x = L.Dropout(0.25, name=f"drop{block}")(x)
    x = L.GlobalMaxPooling2D(name="global_pool")(x)
    x = L.Dropout(0.25, name="drop_final")(x)
    x = L.Dense(classes, name="logits")(x)
    outputs = L.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="sequential_cnn")


def _conv_bn(x: keras.KerasTensor, filters: int, size: int, strides: int, name: str) -> keras.KerasTensor:
    """A same-padded Conv2D with built-in ReLU followed by BatchNorm (``<name>`` and ``<name>_bn``)."""
    x = L.Conv2D(filters, size, strides=strides, padding="same", activation="relu", name=name)(x)
    return L.BatchNormalization(name=f"{name}_bn")(x)


def _inception_module(x: keras.KerasTensor, f: int, name: str) -> keras.KerasTensor:
    """One module of spec §9: four branches of ``f`` channels each, all halving the size, concatenated.

    Branches: 1x1 stride 2 | 1x1 -> 3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | MaxPool 2x2 stride 2
    -> 1x1. Seven convolutions, each Conv(relu) -> BN.
    """
    b1 = _conv_bn(x, f, 1, 2, f"{name}_b1_1x1")
    b2 = _conv_bn(x, f, 1, 1, f"{name}_b2_1x1")
    b2 = _conv_bn(b2, f, 3, 2, f"{name}_b2_3x3")
    b3 = _conv_bn(x, f, 1, 1, f"{name}_b3_1x1")
    b3 = _conv_bn(b3, f, 3, 1, f"{name}_b3_3x3a")
    b3 = _conv_bn(b3, f, 3, 2, f"{name}_b3_3x3b")
    b4 = L.MaxPooling2D(2, strides=2, padding="same", name=f"{name}_b4_pool")(x)
    b4 = _conv_bn(b4, f, 1, 1, f"{name}_b4_1x1")
    return L.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


def branched_cnn(input_shape: Sequence[int] = (28, 28, 1), classes: int = 10, size: int = 96) -> keras.Model:
    """The paper's 23-layer Inception-style branched CNN (22 convs + Dense), spec §9.

    ``Rescaling(1/255)`` and bilinear ``Resizing(size, size)``; stem conv 20 filters 3x3 stride 2;
    three modules (``_inception_module``) with f = 16, 32, 64; GlobalAveragePooling; Dense ``logits``
    (linear) and a separate Softmax. Every conv has ReLU built in and is followed by BatchNorm.

    Choices the paper leaves open: every conv and pool is same-padded, so the four branches agree in
    size (96 -> 48 -> 24 -> 12 -> 6) for any even input; each branch has ``f`` filters (a module
    outputs 4f channels); the global pool is an average (Inception style). Padding and the pool type
    do not change the parameter count: 194,162 on 28x28x1 (192,554 trainable + 1,608 BatchNorm moving
    statistics), against the paper's "about 194 k".
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = L.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    x = _conv_bn(x, 20, 3, 2, "stem")
    for m, f in enumerate(BRANCHED_MODULE_FILTERS, start=1):
        x = _inception_module(x, f, f"m{m}")
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    x = L.Dense(classes, name="logits")(x)
    outputs = L.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="branched_cnn")


_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "sequential": sequential_cnn,
    "branched": branched_cnn,
}


def build(arch: str, input_shape: Sequence[int] = (28, 28, 1), classes: int = 10) -> keras.Model:
    """The architecture named ``arch`` (``"sequential"`` or ``"branched"``), untrained."""
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(ARCHITECTURES)}") from None
    return builder(input_shape=input_shape, classes=classes)
