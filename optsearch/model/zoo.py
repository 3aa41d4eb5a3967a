"""The zoo's architectures, built in code so tests and users get exactly the same nets.

The paper's two (spec §9), ``sequential`` and ``branched``, plus two modern embedded reference nets,
``resnet8`` (MLPerf Tiny) and ``mobilenet_v1`` (width 0.25). All take raw uint8 images:
``Rescaling(1/255)`` (and for the branched net ``Resizing(96, 96)``) live inside the model. In the
paper's nets every convolution has its ReLU built in and is followed by a BatchNormalization, so the
tool's activation quantizer lands between the ReLU and the BatchNorm (spec §3: Conv(relu) -> Q -> BN).
The two reference nets keep their published order Conv -> BN -> ReLU (separate layers), so the
quantizer lands after the ReLU. Every classifier is a linear Dense named ``logits`` followed by a
separate ``Softmax`` layer, so the logits are quantized before the softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

L = keras.layers

#: The paper's two architectures (spec §9).
PAPER_ARCHITECTURES = ("sequential", "branched")
#: Names accepted by ``build``: the paper's two and the modern embedded reference nets.
ARCHITECTURES = (*PAPER_ARCHITECTURES, "resnet8", "mobilenet_v1")

#: Filters of the sequential net's C1..C14 (spec §9: C1-C6 32, C7-C14 64).
SEQUENTIAL_FILTERS = (32,) * 6 + (64,) * 8
#: The sequential net pools (2x2) and drops out (0.25) after these convolutions (1-based).
SEQUENTIAL_POOL_AFTER = (4, 8, 12)
#: Filters ``f`` of the branched net's three Inception-style modules (spec §9).
BRANCHED_MODULE_FILTERS = (16, 32, 64)
#: (filters, stride) of ResNet-8's three stacks of one residual block each (MLPerf Tiny).
RESNET8_STACKS = ((16, 1), (32, 2), (64, 2))
#: L2 weight penalty of every ResNet-8 kernel, as in the MLPerf Tiny reference.
RESNET8_L2 = 1e-4
#: (pointwise filters at width 1.0, depthwise stride) of MobileNetV1's 13 depthwise-separable blocks,
#: as in Howard et al. 2017, table 1.
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
#: MobileNetV1's stem stride for 32x32 inputs: 1 (the paper: 2), so the maps end at 2x2, not 1x1.
MOBILENET_V1_STEM_STRIDE = 1


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


def _conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    size: int,
    strides: int,
    name: str,
    *,
    relu: bool = True,
    l2: float = 0.0,
) -> keras.KerasTensor:
    """Conv2D ``<name>`` (same-padded, linear) -> BatchNorm ``<name>_bn`` -> ReLU ``<name>_relu``."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = L.Conv2D(
        filters,
        size,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=name,
    )(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x) if relu else x


def resnet8(
    input_shape: Sequence[int] = (32, 32, 3), classes: int = 10, l2: float = RESNET8_L2
) -> keras.Model:
    """ResNet-8 of the MLPerf Tiny image-classification benchmark (Banbury et al. 2021, "MLPerf Tiny
    Benchmark"; reference ``resnet_v1_eembc``), with ``Rescaling(1/255)`` and a split-off softmax.

    Stem Conv 3x3 16 -> BN -> ReLU; three stacks (``RESNET8_STACKS``: 16, 32, 64 filters, stride 1,
    2, 2) of one block Conv3x3-BN-ReLU-Conv3x3-BN, added to the block input (the 2nd and 3rd stacks
    through a 1x1 stride-2 conv shortcut without BN) and ReLU; GlobalAveragePooling (the reference's
    8x8 AveragePooling + Flatten on 32x32 inputs); Dense ``logits`` and Softmax. Convs keep their
    bias and every kernel has the reference's L2 penalty ``l2`` (a built-in Keras regularizer: saved
    and loaded without custom objects). On 32x32x3: 78,666 parameters (78,186 trainable + 480
    BatchNorm moving statistics) and 12.50 M MACs per image, as in the reference.
    """
    regularizer = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input(tuple(input_shape), name="image")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn_relu(x, 16, 3, 1, "stem", l2=l2)
    for s, (filters, strides) in enumerate(RESNET8_STACKS, start=1):
        y = _conv_bn_relu(x, filters, 3, strides, f"s{s}_conv1", l2=l2)
        y = _conv_bn_relu(y, filters, 3, 1, f"s{s}_conv2", relu=False, l2=l2)
        if strides != 1 or int(x.shape[-1]) != filters:
            x = L.Conv2D(
                filters,
                1,
                strides=strides,
                padding="same",
                kernel_initializer="he_normal",
                kernel_regularizer=regularizer,
                name=f"s{s}_shortcut",
            )(x)
        x = L.Add(name=f"s{s}_add")([x, y])
        x = L.ReLU(name=f"s{s}_relu")(x)
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    x = L.Dense(classes, kernel_initializer="he_normal", kernel_regularizer=regularizer, name="logits")(x)
    outputs = L.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet8")


def mobilenet_v1(
    input_shape: Sequence[int] = (32, 32, 3), classes: int = 10, alpha: float = 0.25
) -> keras.Model:
    """MobileNetV1 with width multiplier ``alpha`` (Howard et al. 2017, "MobileNets"), adapted to
    32x32 inputs, with ``Rescaling(1/255)`` and a split-off softmax.

    Stem Conv 3x3 (32 * alpha filters) -> BN -> ReLU; the paper's 13 depthwise-separable blocks
    (``MOBILENET_V1_BLOCKS``, the paper's filters times ``alpha`` and its strides), each
    DepthwiseConv 3x3 -> BN -> ReLU -> Conv 1x1 -> BN -> ReLU; GlobalAveragePooling; Dense ``logits``
    and Softmax. Adaptation to 32x32: the paper's first stride 2, the stem's, is dropped
    (``MOBILENET_V1_STEM_STRIDE`` = 1), so the maps go 32 -> 16 -> 8 -> 4 -> 2 (blocks 2, 4, 6, 12)
    instead of ending at 1x1, and the first layers see the full resolution. As in the paper (and
    Keras' MobileNet) the convs have no bias (the BatchNorm supplies it); plain ReLU, no dropout.
    On 32x32x3 with alpha 0.25: 221,114 parameters (215,642 trainable + 5,472 BatchNorm moving
    statistics) and 3.33 M MACs per image (3,331,072).
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = L.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = L.Conv2D(
        int(32 * alpha), 3, strides=MOBILENET_V1_STEM_STRIDE, padding="same", use_bias=False, name="stem"
    )(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for b, (filters, strides) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        x = L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"b{b}_dw")(x)
        x = L.BatchNormalization(name=f"b{b}_dw_bn")(x)
        x = L.ReLU(name=f"b{b}_dw_relu")(x)
        x = L.Conv2D(int(filters * alpha), 1, padding="same", use_bias=False, name=f"b{b}_pw")(x)
        x = L.BatchNormalization(name=f"b{b}_pw_bn")(x)
        x = L.ReLU(name=f"b{b}_pw_relu")(x)
    x = L.GlobalAveragePooling2D(name="global_pool")(x)
    x = L.Dense(classes, name="logits")(x)
    outputs = L.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1")


_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "sequential": sequential_cnn,
    "branched": branched_cnn,
    "resnet8": resnet8,
    "mobilenet_v1": mobilenet_v1,
}


def build(arch: str, input_shape: Sequence[int] | None = None, classes: int = 10) -> keras.Model:
    """The architecture named ``arch`` (one of ``ARCHITECTURES``), untrained.

    ``input_shape`` defaults to the builder's own: 28x28x1 for the paper's nets, 32x32x3 for
    ``resnet8`` and ``mobilenet_v1``.
    """
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(ARCHITECTURES)}") from None
    if input_shape is None:
        return builder(classes=classes)
    return builder(input_shape=input_shape, classes=classes)
