"""`optsearch export`: the hls4ml configuration and the C files, through the same contract checks."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import images, make_result_dir, tiny_model

from optsearch.cli.main import cli
from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import accumulator, grids
from optsearch.deploy import integer_ref
from optsearch.deploy.export_hls4ml import ap_fixed, export

L = keras.layers
TARGETS = {
    "hls4ml": ["hls4ml_config.json", "hls4ml_config.py", "hls4ml_config.yml"],
    "c": ["optsearch_ref.h", "tiny_model.h", "tiny_ref.c"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_result_dir(tiny_model(), images(64), tmp_path_factory.mktemp("export") / "result", bw=6)


@pytest.fixture(scope="module")
def loaded(tiny: Path) -> object:
    from optsearch.run.deployed import load_result

    return load_result(tiny)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_exporter_writes_its_files_once(tiny: Path, tmp_path: Path, target: str) -> None:
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", str(tiny), "--to", target, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / target).iterdir()) == TARGETS[target]
    again = CliRunner().invoke(cli, ["export", str(tiny), "--to", target, "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (
        CliRunner()
        .invoke(cli, ["export", str(tiny), "--to", target, "--out", str(out), "--overwrite"])
        .exit_code
        == 0
    )


def test_hls4ml_precisions_are_the_formats(loaded: object) -> None:
    formats = loaded.formats  # type: ignore[attr-defined]
    config = export(loaded.netlist).config["LayerName"]  # type: ignore[attr-defined]
    # hls4ml's own names: the built-in relu is split off, the pool 'p' is renamed 'p_0' (hls4ml 1.3).
    assert list(config) == ["scale", "c1", "c1_relu", "p_0", "c2", "bn2", "r2", "flat", "out", "out_softmax"]
    for layer in ("c1", "c2", "out"):
        w, b = formats[_t(layer, "W")], formats[_t(layer, "B")]
        assert config[layer]["Precision"]["weight"] == ap_fixed(w)
        assert config[layer]["Precision"]["bias"] == ap_fixed(b)
    assert config["c1_relu"]["Precision"]["result"] == formats[_t("c1", "A")].ap_fixed()
    assert config["r2"]["Precision"]["result"] == formats[_t("c2", "A")].ap_fixed()
    assert config["out"]["Precision"]["result"] == formats[_t("out", "A")].ap_fixed()  # the logits
    assert "AP_RND_CONV,AP_SAT_SYM" in config["scale"]["Precision"]["result"]  # the input type
    assert config["out_softmax"] == {}  # hls4ml's own softmax precisions


def _t(layer: str, kind: str) -> object:
    from optsearch.core.tensors import TensorId

    return TensorId(layer, kind)  # type: ignore[arg-type]


def test_accumulators_hold_every_sum_exactly(loaded: object) -> None:
    """The exported accumulator types hold the worst case of the formats; check it on real sums too."""
    netlist = loaded.netlist  # type: ignore[attr-defined]
    config = export(netlist).config["LayerName"]
    static = grids(netlist)
    for name in ("c2", "out"):  # integer-input layers: the accumulator is the layer's grid
        node = netlist.node(name)
        acc = accumulator(node, static[node.inputs[0]])
        assert config[name]["Precision"]["accum"] == acc.ap_fixed()
        x_grid = static[node.inputs[0]]
        w = node.weights[0].fmt
        assert acc.f >= x_grid.f + w.f
        assert acc.max_code >= node.fan_in * x_grid.max_code * w.max_code
        values = integer_ref.run(netlist, images(64), keep=[name])[name]
        assert values.f == acc.f and np.abs(values.data).max() <= acc.max_code < 2 ** (acc.bits - 1)


def test_input_type_covers_the_pixels(loaded: object) -> None:
    exported = export(loaded.netlist)  # type: ignore[attr-defined]
    assert exported.input_layer == "scale" and exported.preprocessing == ["scale"]
    assert exported.input_format == Format(16, 14)  # 1.0 = 255/255 held exactly, finest 16-bit type
    assert export(loaded.netlist, input_format=Format(10, 8)).input_format == Format(10, 8)  # type: ignore[attr-defined]


def exported_helper(result: Path, out: Path) -> Any:
    """Export ``result`` to hls4ml into ``out`` and import the generated hls4ml_config.py."""
    assert (
        CliRunner().invoke(cli, ["export", str(result), "--to", "hls4ml", "--out", str(out)]).exit_code == 0
    )
    spec = importlib.util.spec_from_file_location("helper", out / "hls4ml" / "hls4ml_config.py")
    assert spec is not None and spec.loader is not None
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    return helper


def test_hls4ml_helper_prepares_the_float_model(tiny: Path, tmp_path: Path) -> None:
    """hls4ml_config.py runs without hls4ml: the model without Rescaling, weights quantized."""
    helper = exported_helper(tiny, tmp_path)
    assert json.loads((tmp_path / "hls4ml" / "hls4ml_config.json").read_text()) == helper.CONFIG
    model = tiny_model()
    prepared = helper.prepare_model(model)
    assert prepared.inputs[0].name == "scale" or prepared.layers[0].name == "scale"
    assert "scale" not in [layer.name for layer in prepared.layers[1:]]
    bw, f = helper.WEIGHT_FORMATS["c2"]["W"]
    kernel = prepared.get_layer("c2").get_weights()[0]
    assert np.array_equal(kernel, helper.quantize(model.get_layer("c2").get_weights()[0], bw, f))
    x = images(4) * np.float32(1 / 255)
    assert prepared.predict(x, verbose=0).shape == (4, 3)


def test_separable_conv_is_refused_by_name(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 1))
    x = L.Rescaling(1 / 255)(inputs)
    x = L.SeparableConv2D(3, 3, activation="relu", name="sep")(x)
    outputs = L.Dense(2, name="d")(L.GlobalMaxPooling2D()(x))
    result = make_result_dir(keras.Model(inputs, outputs), images(8), tmp_path / "r")
    out = CliRunner().invoke(cli, ["export", str(result), "--to", "hls4ml"])
    assert out.exit_code == 2 and "layer 'sep' (SeparableConv2D)" in out.output and "separable" in out.output
    from optsearch.run.deployed import load_result, verify

    loaded = load_result(result)  # the integer reference does compute it
    assert verify(loaded, images(8), 8).layers_explained


def test_model_without_rescaling_needs_an_input_type(tmp_path: Path) -> None:
    inputs = keras.Input((4,))
    outputs = L.Dense(2, name="d")(L.Dense(3, activation="relu", name="h")(inputs))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    result = make_result_dir(keras.Model(inputs, outputs), x, tmp_path / "r")
    out = CliRunner().invoke(cli, ["export", str(result), "--to", "hls4ml"])
    assert out.exit_code == 2 and "--input-format" in out.output
    out = CliRunner().invoke(cli, ["export", str(result), "--to", "hls4ml", "--input-range", "4"])
    assert out.exit_code == 0, out.output
    config = json.loads((result / "export" / "hls4ml" / "hls4ml_config.json").read_text())
    first = next(iter(config["LayerName"].values()))
    assert first["Precision"]["result"] == "ap_fixed<16,4,AP_RND_CONV,AP_SAT_SYM>"


def test_pruned_tensors_have_a_one_bit_type() -> None:
    assert ap_fixed(Format(1, 4)) == "ap_fixed<1,-3,AP_RND_CONV,AP_SAT_SYM>"
    assert ap_fixed(Format(5, 1)) == "ap_fixed<5,4,AP_RND_CONV,AP_SAT_SYM>"


def test_hls4ml_csim_matches_the_integer_reference(tiny: Path, tmp_path: Path) -> None:
    """hls4ml's C simulation of the exported configuration against the integer reference (compiles
    a tiny project: seconds)."""
    hls4ml = pytest.importorskip("hls4ml", reason="needs the optional extra: pip install -e '.[hls4ml]'")
    if shutil.which("g++") is None:
        pytest.skip("hls4ml's C simulation needs g++")
    from optsearch.run.deployed import load_result

    loaded = load_result(tiny)
    exported = export(loaded.netlist)
    helper = exported_helper(tiny, tmp_path)
    prepared = helper.prepare_model(tiny_model())
    config = json.loads(json.dumps(helper.CONFIG))
    config["LayerName"]["out_softmax"] = {"Skip": True}  # hls4ml then outputs the logits
    hls_model = hls4ml.converters.convert_from_keras_model(
        prepared, hls_config=config, output_dir=str(tmp_path / "prj"), backend="Vivado", io_type="io_parallel"
    )
    hls_model.compile()
    x = images(64)
    y_hls = np.asarray(hls_model.predict(np.ascontiguousarray(x * np.float32(1 / 255))), dtype=np.float64)
    scores = integer_ref.scores_node(loaded.netlist)
    ref = integer_ref.run(loaded.netlist, x, quantize_at={"scale": exported.input_format})[scores].real()
    assert np.array_equal(y_hls.reshape(ref.shape), ref)
