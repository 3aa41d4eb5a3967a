"""ReLU6 (ReLU(max_value=6), a weighted layer's built-in relu6): an exact clip in the integer
reference, the C reference and the QONNX export; the hls4ml export refuses it in one line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import images, make_result_dir

from optsearch.cli.main import cli
from optsearch.deploy import integer_ref

L = keras.layers
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def relu6_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1), name="x_input")
    x = L.Rescaling(1 / 64)(inp)
    x = L.ReLU(max_value=6.0, name="clip1")(L.Conv2D(4, 3, name="c1")(x))
    x = L.Conv2D(4, 3, activation="relu6", name="c2")(x)
    out = L.Dense(10, name="out")(L.Flatten()(x))
    model = keras.Model(inp, out, name="relu6")
    for name in ("c1", "c2"):  # large enough that many activations exceed 6
        layer = model.get_layer(name)
        layer.kernel.assign(np.abs(keras.ops.convert_to_numpy(layer.kernel)) * 3)
    return model


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("relu6")
    x = images(48)
    np.savez(root / "data.npz", x=x.astype(np.uint8), y=np.zeros(len(x), dtype=np.int64))
    return make_result_dir(relu6_model(), x, root / "result", bw=8, data_spec=str(root / "data.npz")), x


def reference(folder: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, integer_ref.Value]]:
    from optsearch.run.deployed import load_result

    netlist = load_result(folder).netlist
    assert netlist.node("clip1").max_value == 6.0 and netlist.node("c2").max_value == 6.0
    values = integer_ref.run(netlist, x, keep=["clip1", "c2"])
    return values[integer_ref.scores_node(netlist)].real(), values


def test_verify_is_ok_and_the_clip_saturates(result: tuple[Path, np.ndarray]) -> None:
    folder, x = result
    _, values = reference(folder, x)
    for name in ("clip1", "c2"):
        v = values[name].real()
        assert v.max() == 6.0 and v.min() >= 0 and np.mean(v == 6.0) > 0.2, name
    out = CliRunner().invoke(cli, ["verify", str(folder)])
    assert out.exit_code == 0, out.output
    assert "verify: OK" in out.output


@pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on this machine")
def test_c_reference_clips_as_the_integer_reference(result: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, x = result
    out = CliRunner().invoke(cli, ["export", str(folder), "--to", "c", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    c = tmp_path / "c"
    assert CC is not None
    subprocess.run(
        [CC, "-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Werror", "-Wno-unused-function",
         "-o", "relu6_ref", "relu6_ref.c", "-lm"],
        cwd=c, check=True, capture_output=True, text=True,
    )  # fmt: skip
    x.astype(np.float32).tofile(c / "input.f32")
    subprocess.run([str(c / "relu6_ref"), "input.f32", str(len(x)), "output.txt"], cwd=c, check=True)
    rows = np.loadtxt(c / "output.txt", ndmin=2)
    scores, _ = reference(folder, x)
    assert np.array_equal(rows[:, 1:], scores)


def test_qonnx_clip_equals_the_integer_reference(result: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    folder, x = result
    out = CliRunner().invoke(cli, ["export", str(folder), "--to", "qonnx", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    path = next((tmp_path / "qonnx").glob("*.onnx"))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Clip") == 2 and "Relu" not in ops
    model = ModelWrapper(str(path))
    name, output = model.graph.input[0].name, model.graph.output[0].name
    scores, _ = reference(folder, x)
    for i in range(4):
        got = execute_onnx(model, {name: x[i : i + 1]})[output]
        assert np.array_equal(got.reshape(-1), scores[i]), i


def test_hls4ml_export_is_refused_in_one_line(result: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, _ = result
    out = CliRunner().invoke(cli, ["export", str(folder), "--to", "hls4ml", "--out", str(tmp_path)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "layer 'clip1'" in lines[0] and "ReLU(max_value=6)" in lines[0], out.output
