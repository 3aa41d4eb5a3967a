"""ZeroPadding1D/2D (MobileNet's ``conv_pad_N`` before every stride-2 depthwise conv): a ``pad`` node
that keeps its input's grid, computed exactly by the integer reference, the C reference, the QONNX
export (``Pad``, constant 0) and hls4ml (its own ZeroPadding layers, at their input's type).

MobileNet (V1)'s head is here too: GlobalAveragePooling2D(keepdims=True), a 1x1 Conv2D classifier and
a Reshape of its logits (``reshape``: the grid kept, channels-last order).

Result folders are written directly (``make_result_dir``: uniform formats, no search); the run through
the search is ``tests/test_architectures.py``'s ``zero_padding`` and ``conv1d_padding`` families.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import images, make_result_dir
from test_c_reference import CC, compile_and_run

from optsearch.cli.main import cli
from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import Netlist, grids
from optsearch.deploy import integer_ref

L = keras.layers


def _random_biases(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0, 0.2, layer.bias.shape))


def padded_2d(depthwise: bool = True) -> keras.Model:
    """MobileNet's stride-2 unit: ZeroPadding2D(((0, 1), (0, 1))) then a valid, stride-2 depthwise conv
    (a Conv2D with ``depthwise=False``: the C reference has no depthwise conv); a second, asymmetric
    ZeroPadding2D after a BN-ReLU."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 2), name="x_input")
    x = L.Rescaling(1 / 64, name="scale")(inp)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(x)
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad1")(x)
    if depthwise:
        x = L.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu", name="dw")(x)
    else:
        x = L.Conv2D(4, 3, strides=2, padding="valid", activation="relu", name="dw")(x)
    x = L.ReLU(name="r")(L.BatchNormalization(name="bn")(L.Conv2D(6, 1, name="pw")(x)))
    x = L.ZeroPadding2D(((1, 2), (2, 1)), name="pad2")(x)
    x = L.Conv2D(4, 3, strides=2, name="c3")(x)
    out = L.Dense(3, name="out")(L.Flatten(name="flat")(x))
    model = keras.Model(inp, out, name="padded2d" if depthwise else "padded2dc")
    _random_biases(model, 5)
    return model


def padded_1d() -> keras.Model:
    """ZeroPadding1D on the raw (real-valued) input, and on fixed-point codes before a stride-2 Conv1D."""
    keras.utils.set_random_seed(6)
    inp = keras.Input((16, 2), name="x_input")
    x = L.ZeroPadding1D((2, 1), name="pad_in")(inp)
    x = L.Conv1D(4, 3, activation="relu", name="c1")(x)
    x = L.ZeroPadding1D(1, name="pad1")(x)
    x = L.Conv1D(4, 3, strides=2, name="c2")(x)
    out = L.Dense(3, name="out")(L.Flatten(name="flat")(x))
    model = keras.Model(inp, out, name="padded1d")
    _random_biases(model, 6)
    return model


def mobilenet_head() -> keras.Model:
    """MobileNet (V1)'s tail after a padded stride-2 conv: GlobalAveragePooling2D(keepdims=True),
    Dropout, a 1x1 Conv2D as the classifier, Reshape((classes,)), softmax."""
    keras.utils.set_random_seed(8)
    inp = keras.Input((12, 12, 2), name="x_input")
    x = L.Rescaling(1 / 64, name="scale")(inp)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(x)
    x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad1")(x)
    x = L.Conv2D(6, 3, strides=2, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = L.Conv2D(3, 1, name="preds")(L.Dropout(0.1, name="drop")(x))
    out = L.Activation("softmax", name="prob")(L.Reshape((3,), name="flat3")(x))
    model = keras.Model(inp, out, name="head")
    _random_biases(model, 8)
    return model


BUILDERS = {
    "2d": padded_2d,
    "2d_conv": lambda: padded_2d(depthwise=False),
    "1d": padded_1d,
    "head": mobilenet_head,
}
INPUTS = {"2d": (12, 12, 2), "2d_conv": (12, 12, 2), "1d": (16, 2), "head": (12, 12, 2)}
#: The 1-D model has no Rescaling: its inputs are centred here, and hls4ml's input type is given.
INPUT_FORMAT_1D = Format(12, 6)


def _samples(name: str, n: int = 48) -> np.ndarray:
    x = images(n, INPUTS[name], seed=7)
    return x if name != "1d" else (x - 128) / 16


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    root = tmp_path_factory.mktemp("zero_padding")
    out = {}
    for name, build in BUILDERS.items():
        x = _samples(name)
        data = root / f"{name}.npz"
        np.savez(data, x=x.astype(np.float32), y=np.zeros(len(x), dtype=np.int64))
        out[name] = (make_result_dir(build(), x, root / name, bw=8, data_spec=str(data)), x)
    return out


def _netlist(folder: Path) -> Netlist:
    from optsearch.run.deployed import load_result

    return load_result(folder).netlist


def _scores(netlist: Netlist, x: np.ndarray, **kwargs: Any) -> np.ndarray:
    scores = integer_ref.run(netlist, x, **kwargs)[integer_ref.scores_node(netlist)].real()
    return scores.reshape(len(x), -1)  # the head's logits are (1, 1, classes) per sample


def test_the_netlist_has_pad_nodes_on_their_inputs_grid(results: dict[str, tuple[Path, np.ndarray]]) -> None:
    two, one = _netlist(results["2d"][0]), _netlist(results["1d"][0])
    assert two.node("pad1").op == "pad" and two.node("pad1").pads == ((0, 1), (0, 1))
    assert two.node("pad2").pads == ((1, 2), (2, 1))
    assert one.node("pad_in").pads == ((2, 1),) and one.node("pad1").pads == ((1, 1),)
    for netlist in (two, one):
        on_grid = grids(netlist)
        for node in (n for n in netlist.nodes if n.op == "pad"):
            assert on_grid[node.name] == on_grid[node.inputs[0]], node.name
    assert grids(one)["pad_in"] is None  # the raw input, padded: still real-valued
    assert grids(two)["pad1"] is not None and grids(two)["pad2"] is not None


def test_the_integer_reference_pads_codes_with_zeros(results: dict[str, tuple[Path, np.ndarray]]) -> None:
    folder, x = results["2d"]
    netlist = _netlist(folder)
    values = integer_ref.run(netlist, x, keep=["pad1", "c1_act_quant", "pad2"])
    pad1, before = values["pad1"], values["c1_act_quant"]
    assert pad1.f == before.f and pad1.data.dtype == np.int64
    assert pad1.data.shape == (len(x), 11, 11, 4)
    assert np.array_equal(pad1.data[:, :10, :10], before.data)
    assert not pad1.data[:, 10].any() and not pad1.data[:, :, 10].any()
    pad2 = values["pad2"].data
    assert pad2.shape == (len(x), 5 + 3, 5 + 3, 6)
    assert (
        not pad2[:, :1].any()
        and not pad2[:, -2:].any()
        and not pad2[:, :, :2].any()
        and not pad2[:, :, -1:].any()
    )


@pytest.mark.parametrize("name", ["2d", "2d_conv", "1d", "head"])
def test_verify_is_ok(name: str, results: dict[str, tuple[Path, np.ndarray]]) -> None:
    """The integer reference against the Keras quantized model: codes, logits and argmax."""
    folder, _ = results[name]
    out = CliRunner().invoke(cli, ["verify", str(folder)])
    assert out.exit_code == 0, out.output
    assert "verify: OK" in out.output


@pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on this machine")
@pytest.mark.parametrize(
    ("name", "prefix", "calls"),
    [
        ("2d_conv", "padded2dc", ["os_pad(&t[cur], &t[1 - cur], 0, 1, 0, 1);"]),
        ("head", "head", ["os_pad(", "os_global_pool(&t[cur], &t[1 - cur], 1);"]),
    ],
)
def test_c_reference_pads_as_the_integer_reference(
    name: str, prefix: str, calls: list[str], results: dict[str, tuple[Path, np.ndarray]], tmp_path: Path
) -> None:
    folder, x = results[name]
    out = CliRunner().invoke(cli, ["export", str(folder), "--to", "c", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    c = tmp_path / "c"
    source = (c / f"{prefix}_ref.c").read_text()
    assert all(call in source for call in calls), source
    rows = compile_and_run(c, prefix, x)
    assert np.array_equal(rows[:, 1:], _scores(_netlist(folder), x))


@pytest.mark.parametrize("name", ["2d", "1d", "head"])
def test_qonnx_pad_equals_the_integer_reference(
    name: str, results: dict[str, tuple[Path, np.ndarray]], tmp_path: Path
) -> None:
    """``Pad`` (constant 0) in either layout: channels last on the raw input, channels first after a conv."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    folder, x = results[name]
    out = CliRunner().invoke(cli, ["export", str(folder), "--to", "qonnx", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    path = tmp_path / "qonnx" / "model.onnx"
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded)
    initial = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    pads = {n.name: initial[n.input[1]].tolist() for n in loaded.graph.node if n.op_type == "Pad"}
    if name == "2d":  # both after a conv: channels first (N, C, H, W)
        assert pads == {"pad1": [0, 0, 0, 0, 0, 0, 1, 1], "pad2": [0, 0, 1, 2, 0, 0, 2, 1]}
    elif name == "1d":  # pad_in on the channels-last input (N, W, C), pad1 after a conv (N, C, W)
        assert pads == {"pad_in": [0, 2, 0, 0, 1, 0], "pad1": [0, 0, 1, 0, 0, 1]}
    else:  # keepdims: the pooled (N, C, 1, 1) feeds the 1x1 conv as it is; Reshape to the logits
        ops = [n.op_type for n in loaded.graph.node]
        assert "Flatten" not in ops and ops.count("Reshape") == 1 and ops.count("Transpose") == 2, ops
    model = ModelWrapper(str(path))
    netlist = _netlist(folder)
    input_name, scores_name = model.graph.input[0].name, integer_ref.scores_node(netlist)
    scores = _scores(netlist, x)
    for i in range(4):
        context = execute_onnx(model, {input_name: x[i : i + 1].astype(np.float32)}, True)
        assert np.array_equal(context[scores_name].reshape(-1), scores[i]), i


#: Each ZeroPadding layer and the hls4ml layer that computes its input (a built-in relu is its own layer).
PRODUCERS = {"2d": {"pad1": "c1_relu", "pad2": "r"}, "1d": {"pad_in": "x_input", "pad1": "c1_relu"}}


def _width(ap_fixed: str) -> tuple[int, int]:
    """``ap_fixed<W,I,...>``'s W and I."""
    w, i = ap_fixed.removeprefix("ap_fixed<").rstrip(">").split(",")[:2]
    return int(w), int(i)


def _hls4ml_helper(folder: Path, out: Path, *extra: str) -> Any:
    result = CliRunner().invoke(cli, ["export", str(folder), "--to", "hls4ml", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("helper", out / "hls4ml" / "hls4ml_config.py")
    assert spec is not None and spec.loader is not None
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    return helper


@pytest.mark.parametrize("name", ["2d", "1d"])
def test_hls4ml_csim_matches_the_integer_reference(
    name: str, results: dict[str, tuple[Path, np.ndarray]], tmp_path: Path
) -> None:
    """hls4ml's own ZeroPadding layers, at their input's type (compiles a tiny project: seconds)."""
    folder, x = results[name]
    fmt = INPUT_FORMAT_1D
    extra = () if name != "1d" else ("--input-format", str(fmt.bw), str(fmt.f))
    helper = _hls4ml_helper(folder, tmp_path, *extra)
    netlist = _netlist(folder)
    layers = helper.CONFIG["LayerName"]
    for pad, producer in PRODUCERS[name].items():  # the type of the hls4ml layer whose output it pads
        assert _width(layers[pad]["Precision"]["result"]) == _width(layers[producer]["Precision"]["result"])
    hls4ml = pytest.importorskip("hls4ml", reason="needs the optional extra: pip install -e '.[hls4ml]'")
    if shutil.which("g++") is None:
        pytest.skip("hls4ml's C simulation needs g++")
    prepared = helper.prepare_model(BUILDERS[name]())
    hls_model = hls4ml.converters.convert_from_keras_model(
        prepared, hls_config=helper.CONFIG, output_dir=str(tmp_path / "prj"), backend="Vivado",
        io_type="io_parallel",
    )  # fmt: skip
    hls_model.compile()
    if name == "2d":
        hls_x, start = x * np.float32(1 / 64), "scale"
    else:
        hls_x, start = x, netlist.input.name
    y_hls = np.asarray(hls_model.predict(np.ascontiguousarray(hls_x, dtype=np.float32)), dtype=np.float64)
    input_format = Format(*helper.INPUT_FORMAT)
    ref = _scores(netlist, x, quantize_at={start: input_format})
    assert np.array_equal(y_hls.reshape(ref.shape), ref)


def test_hls4ml_export_of_the_mobilenet_head(
    results: dict[str, tuple[Path, np.ndarray]], tmp_path: Path
) -> None:
    """GlobalAveragePooling2D(keepdims=True) and Reshape get types like their 2-D and flat forms."""
    helper = _hls4ml_helper(results["head"][0], tmp_path)
    layers = helper.CONFIG["LayerName"]
    assert set(layers["gap"]["Precision"]) == {"accum", "result"}
    assert _width(layers["flat3"]["Precision"]["result"]) == _width(layers["preds"]["Precision"]["result"])


def test_a_channels_first_padding_is_refused_in_one_line(tmp_path: Path) -> None:
    inp = keras.Input((2, 6, 6), name="x_input")
    x = L.ZeroPadding2D(1, data_format="channels_first", name="pad_cf")(inp)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten(name="flat")(x)), name="cf")
    x = images(8, (2, 6, 6))
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(8, dtype=np.int64))
    folder = make_result_dir(model, x, tmp_path / "r", data_spec=str(tmp_path / "d.npz"))
    out = CliRunner().invoke(cli, ["verify", str(folder)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "layer 'pad_cf' (ZeroPadding2D)" in lines[0], out.output
    assert "channels_last" in lines[0]
