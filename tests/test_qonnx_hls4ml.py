"""The QONNX export through hls4ml (issue 24): ``scripts/check_hls4ml.py --qonnx``'s own functions on
tiny models built here. The exported ``model.onnx`` is cut to what hls4ml computes (from the output of
the leading Rescaling to the logits), cleaned and converted to channels last with qonnx, converted
with ``hls4ml.converters.convert_from_onnx_model`` (Vivado, io_parallel) and compiled: its C
simulation must give the integer reference's logits exactly, with the input quantized to the hls4ml
input type (as ``--qonnx`` compares). What hls4ml 1.3 cannot take is refused in one line.

Compiles three small projects (seconds each); skips without hls4ml, onnx or qonnx, and compiles
nothing without g++.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import pytest
from conftest import images, make_result_dir, randomize_batchnorm, tiny_model

from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import Netlist
from optsearch.deploy.export_hls4ml import ap_fixed, input_node
from optsearch.deploy.export_hls4ml import export as export_hls4ml
from optsearch.deploy.export_qonnx import export as export_qonnx
from optsearch.run.deployed import ResultDir, load_result

pytest.importorskip("hls4ml", reason="needs the optional extra: pip install -e '.[hls4ml]'")
onnx = pytest.importorskip("onnx", reason="the QONNX export needs onnx: pip install -e '.[qonnx]'")
pytest.importorskip("qonnx", reason="the channels-last conversion needs qonnx: pip install -e '.[qonnx]'")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C simulation needs g++")

L = keras.layers
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_hls4ml.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_hls4ml", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_biases(model: keras.Model, seed: int) -> keras.Model:
    """``model`` with non-zero biases, so that every bias gets a Quant node (zeros are pruned)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
    return model


def dense_model() -> keras.Model:
    """Dense only, on a raw input (no Rescaling: the hls4ml model starts at the graph's input)."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((10,), name="features")
    x = L.Dense(8, activation="relu", name="d1")(inputs)
    x = L.Dense(6, name="d2")(x)
    x = L.ReLU(name="r2")(x)
    outputs = L.Dense(4, activation="softmax", name="out")(x)
    return with_biases(keras.Model(inputs, outputs, name="dense"), 4)


def pooled_model() -> keras.Model:
    """What the zoo's sequential MNIST needs in small: a BatchNorm (float) between each quantizer and
    the next layer, a ``same`` max pool of an odd size (7 -> 4: pads 0 and 1, which qonnx's
    channels-last MaxPool refuses), Dropouts, a global max pool (which qonnx leaves channels first)
    and a Dense with a bias after it."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((7, 7, 1), name="image")
    x = L.Rescaling(1 / 255, name="scale")(inputs)
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.MaxPooling2D(2, padding="same", name="pool")(x)
    x = L.Dropout(0.5, name="drop1")(x)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.GlobalMaxPooling2D(name="global_pool")(x)
    x = L.Dropout(0.5, name="drop2")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="pooled")
    randomize_batchnorm(model, np.random.default_rng(5))
    return with_biases(model, 5)


def result_of(model: keras.Model, x: np.ndarray, folder: Path) -> ResultDir:
    """A result folder at uniform 6-bit formats (as `optsearch run` writes one), loaded."""
    return load_result(make_result_dir(model, x, folder, bw=6))


def csim_and_reference(
    script: ModuleType, result: ResultDir, x: np.ndarray, folder: Path, input_format: Format
) -> tuple[np.ndarray, np.ndarray, Any]:
    """As ``check_hls4ml.py --qonnx`` does: hls4ml's C simulation of the QONNX export, the integer
    reference with the input quantized to ``input_format`` (hls4ml's input type), and the cleaned
    channels-last graph that hls4ml converted."""
    netlist = result.netlist
    onnx_file = script.export_qonnx(result, folder / "qonnx")
    model = script.qonnx_for_hls4ml(onnx.load(onnx_file), netlist)
    ops = [node.op_type for node in model.graph.node]
    assert "Softmax" not in ops and "Mul" not in ops and "Transpose" not in ops  # cut, channels last
    hls_model = script.convert_qonnx(model, ap_fixed(input_format), folder / "prj")
    script.build(hls_model, folder / "prj", "O1")
    y, _ = script.predict(hls_model, script.hls_input(netlist, x))
    reference = script.reference_scores(netlist, x, {input_node(netlist).name: input_format})
    return y, reference, model


def assert_identical(y: np.ndarray, reference: np.ndarray) -> None:
    assert y.shape == reference.shape
    assert len({tuple(row) for row in reference}) > 1  # not a constant output
    assert np.array_equal(y, reference), np.abs(y - reference).max()


@needs_gxx
def test_cnn_csim_is_the_integer_reference(script: ModuleType, tmp_path: Path) -> None:
    """Rescaling -> Conv(relu) -> Q -> MaxPool -> Conv -> BatchNorm (float) -> ReLU -> Q -> Flatten ->
    Dense -> Q -> Softmax, biases quantized: identical logits on every one of 48 images.

    The BatchNorm is computed by hls4ml with its scale and bias at ``fixed<64,32>`` and by the
    reference in double precision; no value of these images lies that close to a rounding boundary."""
    x = images(48)
    result = result_of(with_biases(tiny_model(), 1), x, tmp_path / "result")
    input_format = export_hls4ml(result.netlist).input_format  # (16, 14): pixels / 255
    y, reference, _ = csim_and_reference(script, result, x, tmp_path, input_format)
    assert_identical(y, reference)


@needs_gxx
def test_dense_csim_is_the_integer_reference(script: ModuleType, tmp_path: Path) -> None:
    """Dense(relu) -> Q -> Dense -> ReLU -> Q -> Dense -> Q -> Softmax on a raw, off-grid input that
    hls4ml's input type rounds (half to even) and saturates: identical logits on every one of 64."""
    x = np.random.default_rng(5).normal(0, 40, size=(64, 10)).astype(np.float32)
    x[0, :3] = [300.0, -300.0, 0.5 / 2**6]  # beyond the input type's range, and a tie
    result = result_of(dense_model(), x, tmp_path / "result")
    y, reference, _ = csim_and_reference(script, result, x, tmp_path, Format(14, 6))
    assert_identical(y, reference)


@needs_gxx
def test_pooled_cnn_csim_is_the_integer_reference(script: ModuleType, tmp_path: Path) -> None:
    """The zoo model's structure in small (``pooled_model``): identical logits on every one of 48 images,
    with the max pool's own uneven pads put back for hls4ml and the global max pool as a MaxPool."""
    x = images(48, (7, 7, 1))
    result = result_of(pooled_model(), x, tmp_path / "result")
    input_format = export_hls4ml(result.netlist).input_format
    y, reference, model = csim_and_reference(script, result, x, tmp_path, input_format)
    assert_identical(y, reference)
    pools = [node for node in model.graph.node if node.op_type == "MaxPool"]
    pads = [list(onnx.helper.get_attribute_value(a)) for n in pools for a in n.attribute if a.name == "pads"]
    assert pads == [[0, 0, 1, 1], [0, 0, 0, 0]]  # 'same' 7 -> 4, then the global pool's 4 x 4 window


def replaced(netlist: Netlist, name: str, op: str | None = None, **attrs: object) -> Netlist:
    """``netlist`` with node ``name``'s operation (if given) and attributes changed."""
    nodes = tuple(
        dataclasses.replace(n, op=op or n.op, attrs={**n.attrs, **attrs}) if n.name == name else n
        for n in netlist.nodes
    )
    return Netlist(netlist.name, nodes, netlist.output)


def test_what_hls4ml_cannot_take_is_refused_in_one_line(script: ModuleType, tmp_path: Path) -> None:
    """A pruned activation (an unsigned narrow 1-bit Quant: hls4ml supports narrow only when signed),
    a ReLU6 (ONNX ``Clip``: no hls4ml handler), and an average pool (qonnx leaves it channels first,
    behind a Transpose), each named by its layer, before hls4ml converts anything."""
    x = images(8)
    netlist = result_of(tiny_model(), x, tmp_path / "result").netlist
    cases = {
        "node 'c2_act_quant' (Quant, unsigned, narrow: a pruned activation": replaced(
            netlist, "c2_act_quant", format=Format(1, 0)
        ),
        "node 'r2' (Clip): hls4ml ": replaced(netlist, "r2", max_value=6.0),
        "node 'p' (AveragePool) stays channels first": replaced(netlist, "p", op="avgpool"),
    }
    for message, broken in cases.items():
        with pytest.raises(SystemExit) as err:
            script.qonnx_for_hls4ml(export_qonnx(broken).model, broken)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
