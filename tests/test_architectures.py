"""The standard embedded architectures through the CLI: run -> verify -> export (issue 19).

Each family is built here at a small size with random weights and labelled by the float model
itself (an ``.npz`` with only ``x``: the loss is the disagreement with the float model). Every step
either succeeds or refuses in one line naming the layer and the operation (exit 2); never a
traceback. A step that refuses today is pinned by its message, so an implementation shows up here
as a test change. docs/models.md is the table these tests measure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner, Result
from keras import layers

from optsearch.cli.main import cli

SAMPLES = 48


def _resnet_block() -> keras.Model:
    """ResNet-v1 (ResNet-8 style): Conv-BN-ReLU, Conv-BN, Add, then ReLU."""
    inp = keras.Input((16, 16, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    y = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(x)))
    y = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(y))
    x = layers.ReLU()(layers.Add()([x, y]))
    out = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="resnet_block")


def _densenet_block() -> keras.Model:
    """DenseNet style: BN-ReLU-Conv, then Concatenate with the block's input, twice."""
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    for _ in range(2):
        y = layers.Conv2D(4, 3, padding="same")(layers.ReLU()(layers.BatchNormalization()(x)))
        x = layers.Concatenate()([x, y])
    out = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="densenet_block")


def _ds_cnn() -> keras.Model:
    """MLPerf Tiny's keyword-spotting DS-CNN, small: Conv2D 10x4, depthwise separable, AveragePooling."""
    inp = keras.Input((49, 10, 1))
    x = layers.Conv2D(16, (10, 4), strides=(2, 2), padding="same")(inp)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for _ in range(2):
        x = layers.ReLU()(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
        x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 1)(x)))
    x = layers.Flatten()(layers.AveragePooling2D(pool_size=(25, 5))(x))
    return keras.Model(inp, layers.Dense(4)(x), name="ds_cnn")


def _conv1d() -> keras.Model:
    """A 1-D signal classifier."""
    inp = keras.Input((64, 2))
    x = layers.MaxPooling1D(2)(layers.Conv1D(8, 5, activation="relu")(inp))
    x = layers.GlobalAveragePooling1D()(layers.Conv1D(8, 3, activation="relu")(x))
    return keras.Model(inp, layers.Dense(4)(x), name="conv1d")


def _zero_padding() -> keras.Model:
    """MobileNet's stride-2 unit with a plain ReLU: ZeroPadding2D(((0, 1), (0, 1))) (its `conv_pad_N`),
    then a valid stride-2 DepthwiseConv2D, BN-ReLU, and a pointwise conv."""
    inp = keras.Input((16, 16, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid")(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 1)(x)))
    out = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="zero_padding")


def _conv1d_padding() -> keras.Model:
    """ZeroPadding1D on the input and before a stride-2 Conv1D."""
    inp = keras.Input((64, 2))
    x = layers.Conv1D(8, 5, activation="relu")(layers.ZeroPadding1D(2)(inp))
    x = layers.Conv1D(8, 3, strides=2, activation="relu")(layers.ZeroPadding1D((0, 1))(x))
    out = layers.Dense(4)(layers.GlobalAveragePooling1D()(x))
    return keras.Model(inp, out, name="conv1d_padding")


def _mlp() -> keras.Model:
    """hls4ml's jet-tagging shape: Dense-BN-ReLU, twice, then the logits."""
    inp = keras.Input((16,))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Dense(32)(inp)))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Dense(16)(x)))
    return keras.Model(inp, layers.Dense(5)(x), name="mlp")


def _mobilenet_block() -> keras.Model:
    """MobileNet's unit at toy size (Conv-BN-ReLU6, depthwise-BN-ReLU6): the fast ReLU6 check."""
    inp = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = layers.ReLU(6.0, name="conv1_relu")(layers.BatchNormalization()(layers.Conv2D(8, 3, strides=2)(x)))
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x)))
    out = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="mobilenet_block")


_apps = keras.applications
BUILDERS: dict[str, Callable[[], keras.Model]] = {
    "mlp": _mlp,
    "resnet_block": _resnet_block,
    "densenet_block": _densenet_block,
    "ds_cnn": _ds_cnn,
    "conv1d": _conv1d,
    "zero_padding": _zero_padding,
    "conv1d_padding": _conv1d_padding,
    "mobilenet_block": _mobilenet_block,
    "mobilenet": lambda: _apps.MobileNet(alpha=0.25, input_shape=(32, 32, 3), weights=None, classes=4),
    "mobilenetv2": lambda: _apps.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=4),
    "mobilenetv3small": lambda: _apps.MobileNetV3Small(
        alpha=0.75, input_shape=(32, 32, 3), weights=None, classes=4
    ),
    "efficientnetb0": lambda: _apps.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=4),
}
# The applications take 0..255 pixels; the hand-built nets take standard-normal data.
PIXELS = {"mobilenet_block", "mobilenet", "mobilenetv2", "mobilenetv3small", "efficientnetb0"}
# Those that rescale the pixels themselves (a leading Rescaling: it gives hls4ml's input type).
RESCALED = {"mobilenet_block", "mobilenetv3small", "efficientnetb0"}

OK = None
RELU6 = "ReLU(max_value=6) (ReLU6) is a clip"
NO_IMPLEMENTATION = "the integer reference and the exporters have no implementation of this layer"
# family -> step -> None (succeeds) or (layer, a part of the one-line refusal).
#: The families that succeed at every step (and run fast).
EVERYWHERE = ("mlp", "resnet_block", "densenet_block", "ds_cnn", "conv1d", "zero_padding", "conv1d_padding")
EXPECTED: dict[str, dict[str, tuple[str, str] | None]] = {
    **{name: {"run": OK, "verify": OK, "c": OK, "hls4ml": OK, "qonnx": OK} for name in EVERYWHERE},
    **{
        name: {
            "run": OK,
            "verify": OK,
            "c": OK,
            "hls4ml": ("conv1_relu", RELU6),
            "qonnx": OK,
        }
        for name in ("mobilenet_block", "mobilenet")
    },
    "mobilenetv2": {
        "run": OK,
        "verify": OK,
        "c": OK,
        "hls4ml": ("Conv1_relu", RELU6),
        "qonnx": OK,
    },
    "efficientnetb0": {
        "run": OK,
        **dict.fromkeys(("verify", "c", "hls4ml", "qonnx"), ("normalization", NO_IMPLEMENTATION)),
    },
}
#: Run options beyond the shared ones: EfficientNetB0's 197 tensors take the default search about
#: 35 minutes on 2 cores; --method analytic (one evaluation) reaches the same verify/export steps.
RUN_OPTIONS: dict[str, tuple[str, ...]] = {"efficientnetb0": ("--method", "analytic")}

_slow = pytest.mark.slow
FAMILIES = [
    *EVERYWHERE,
    "mobilenet_block",
    pytest.param("mobilenet", marks=_slow),  # about 35 s of search on 2 cores
    pytest.param("mobilenetv2", marks=_slow),  # about 130 s
    pytest.param("efficientnetb0", marks=_slow),  # about 85 s with --method analytic
]


def _cli(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _assert_one_line_refusal(result: Result, layer: str, part: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"layer '{layer}'" in lines[0] and part in lines[0], lines[0]
    assert "internal error" not in lines[0] and "Traceback" not in result.output


def _files(name: str, folder: Path) -> tuple[Path, Path]:
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    model_path = folder / "model.keras"
    model.save(model_path)
    rng = np.random.default_rng(0)
    shape = (SAMPLES, *model.input_shape[1:])
    x = rng.uniform(0, 255, shape) if name in PIXELS else rng.normal(size=shape)
    data = folder / "x.npz"
    np.savez(data, x=x.astype(np.float32))  # label-free: the float model's top-1 are the labels
    return model_path, data


def _steps(name: str, model: Path, data: Path, out: Path) -> dict[str, Result]:
    results = {
        "run": _cli(
            "run", model, "--data", data, "--criterion", "paper", "--search-fraction", "1.0", "--eps", "0.05",
            "--out", out, *RUN_OPTIONS.get(name, ()),
        )
    }  # fmt: skip
    if results["run"].exit_code != 0:
        return results
    results["verify"] = _cli("verify", out)
    # Without a leading Rescaling the input range is the user's to give: pixels, or standard-normal data.
    hls_range = () if name in RESCALED else ("--input-range", "255" if name in PIXELS else "8")
    for target, extra in (("c", ()), ("hls4ml", hls_range), ("qonnx", ())):
        if target == "qonnx" and not _has_onnx():
            continue
        target_out = out.parent / f"export_{target}"
        results[target] = _cli("export", out, "--to", target, "--out", target_out, *extra)
    return results


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", FAMILIES)
def test_family_runs_verifies_and_exports_or_refuses_in_one_line(name: str, tmp_path: Path) -> None:
    model, data = _files(name, tmp_path)
    results = _steps(name, model, data, tmp_path / "result")
    expected = EXPECTED[name]
    for step, result in results.items():
        want = expected[step]
        if want is None:
            assert result.exit_code == 0, f"{step}: {result.output}"
        else:
            _assert_one_line_refusal(result, *want)
    assert set(results) == set(expected) - (set() if _has_onnx() else {"qonnx"})


def test_label_free_evaluate_reports_the_disagreement_with_the_float_model(tmp_path: Path) -> None:
    model, data = _files("resnet_block", tmp_path)
    result = _cli("evaluate", model, "--data", data, "--bw", "8", "--search-fraction", "1.0")
    assert result.exit_code == 0, result.output
    assert f"search       {SAMPLES} samples  float 100.0000%" in result.output


def test_mobilenetv3small_is_refused_in_one_line(tmp_path: Path) -> None:
    """MobileNetV3's hard-sigmoid `x + 3.0` is a keras.ops operation, not a layer: refused by name."""
    model, _ = _files("mobilenetv3small", tmp_path)
    result = _cli("inspect", model)
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "is a keras.ops operation" in result.output
