"""Keras 2 ``.h5`` files of every era load in Keras 3 and compute what Keras 2 computed.

The fixtures in ``fixtures/legacy/`` were written by the real tf-keras 2.21 (Keras 2 on TF 2.21)
with ``scripts/make_legacy_fixtures.py``; ``tf24_*`` and ``tf21_*`` hold the same models with the
config in the form TF 2.4 and TF 2.1 wrote. Each ``NAME.npz`` holds inputs ``x`` and the outputs
``y`` tf-keras computed for them. The Keras 2.2.4 form is covered by test_loading.py.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from optsearch.cli.main import cli
from optsearch.core.errors import ModelError
from optsearch.model.graph import QUANTIZABLE_CLASSES, quantized_model
from optsearch.model.loading import keras2_hard_sigmoid, load_model, normalise_keras2_config

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
NAMES = sorted(path.stem for path in FIXTURES.glob("*.h5"))


def _reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as data:
        return data["x"], data["y"]


def _config(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])  # type: ignore[no-any-return]


def _entries(node: Any) -> list[dict[str, Any]]:
    """Every layer entry anywhere in a config."""
    if isinstance(node, dict):
        own = [node] if "class_name" in node and isinstance(node.get("config"), dict) else []
        return own + [e for value in node.values() for e in _entries(value)]
    if isinstance(node, list):
        return [e for value in node for e in _entries(value)]
    return []


def test_the_fixtures_are_the_advertised_set() -> None:
    assert set(NAMES) >= {
        "ds_cnn",
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_ops",
        "resnet_v1",
        "densenet_concat",
        "conv1d",
        "mlp_bn",
        "sequential_input_shape",
        "nested",
        "tf24_ds_cnn",
        "tf21_mobilenet_v1",
    }
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 2 * 2**20


@pytest.mark.parametrize("name", NAMES)
def test_loads_and_predicts_what_tf_keras_predicted(name: str) -> None:
    path = FIXTURES / f"{name}.h5"
    before = path.read_bytes()
    with warnings.catch_warnings():
        # Keras 3 warns of a deprecated `input_shape` or a mismatched input structure when a
        # Keras 2 config is passed through half-translated.
        warnings.simplefilter("error", UserWarning)
        model = load_model(path)
        x, y = _reference(name)
        got = np.asarray(model(x, training=False))
    assert got.shape == y.shape
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-6)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", NAMES)
def test_optsearch_quantizes_every_weighted_layer(name: str) -> None:
    model = load_model(FIXTURES / f"{name}.h5")
    qmodel = quantized_model(model)
    weighted = {layer.name for layer in model.layers if type(layer).__name__ in QUANTIZABLE_CLASSES}
    assert {q.name for q in qmodel.layers} == weighted
    x, y = _reference(name)  # every quantizer is off until formats are set: the clone is the float model
    np.testing.assert_allclose(np.asarray(qmodel.keras_model(x, training=False)), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_optsearch_run_on_each_fixture(name: str, tmp_path: Path) -> None:
    x, y = _reference(name)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.argmax(y, axis=1))  # labelled by the float model itself
    out = tmp_path / "out"
    args = [
        "run",
        FIXTURES / f"{name}.h5",
        "--data",
        data,
        "--search-fraction",
        "1.0",
        "--out",
        out,
        "--criterion",
        "paper",
    ]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert (out / "formats.json").exists() and (out / "quantized.keras").exists()


@pytest.mark.parametrize(("name", "version"), [("tf24_ds_cnn", "2.4.0"), ("tf21_mobilenet_v1", "2.2.4-tf")])
def test_era_fixtures_hold_their_era_form(name: str, version: str) -> None:
    """No per-object ``module`` (tf-keras 2.13+); TF 2.4 wrote ``groups``, TF 2.1 called models Model."""
    path = FIXTURES / f"{name}.h5"
    with h5py.File(path, "r") as f:
        assert f.attrs["keras_version"] == version
    config = _config(path)
    entries = _entries(config)
    assert not any("module" in e or "registered_name" in e for e in entries)
    depthwise = [e["config"] for e in entries if e["class_name"] == "DepthwiseConv2D"]
    assert depthwise and all(("groups" in c) == (version == "2.4.0") for c in depthwise)
    assert config["class_name"] == ("Functional" if version == "2.4.0" else "Model")


def test_tf_keras_wrote_the_keras2_forms_the_normaliser_handles() -> None:
    """The differences are real: each is in a file tf-keras wrote, and gone after normalising."""
    written = {
        name: _entries(_config(FIXTURES / f"{name}.h5")) for name in NAMES if not name.startswith("tf21_")
    }
    by_class: dict[str, list[dict[str, Any]]] = {}
    for entries in written.values():
        for e in entries:
            by_class.setdefault(e["class_name"], []).append(e["config"])
    assert all(c["groups"] == 1 for c in by_class["DepthwiseConv2D"] + by_class["SeparableConv2D"])
    assert any(isinstance(c["axis"], list) for c in by_class["BatchNormalization"])
    assert any(c.get("activation") == "hard_sigmoid" for c in by_class["Activation"])
    assert any(
        isinstance(c["dtype"], dict) and c["dtype"]["class_name"] == "Policy" for c in by_class["Dense"]
    )
    assert {c["function"] for c in by_class["TFOpLambda"]} >= {
        "__operators__.add",
        "math.multiply",
        "nn.relu6",
    }
    assert "ThresholdedReLU" in by_class and "alpha" in by_class["LeakyReLU"][0]

    for name in NAMES:
        normalised = _entries(normalise_keras2_config(_config(FIXTURES / f"{name}.h5")))
        classes = {e["class_name"] for e in normalised}
        assert not classes & {"TFOpLambda", "ThresholdedReLU"}, name
        for e in normalised:
            c = e["config"]
            assert "groups" not in c or e["class_name"] in ("Conv1D", "Conv2D", "Conv3D"), name
            assert not isinstance(c.get("axis"), list) or e["class_name"] != "BatchNormalization", name
            assert not (isinstance(c.get("dtype"), dict) and c["dtype"].get("class_name") == "Policy"), name
            assert c.get("activation") != "hard_sigmoid", name
            assert "batch_input_shape" not in c, name


def test_normaliser_copies_and_keeps_a_keras3_ready_config() -> None:
    config = _config(FIXTURES / "ds_cnn.h5")
    snapshot = json.dumps(config)
    normalised = normalise_keras2_config(config)
    assert json.dumps(config) == snapshot
    assert normalise_keras2_config(normalised) == normalised


def test_keras2_hard_sigmoid_is_keras2s() -> None:
    x = np.linspace(-4, 4, 17, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(keras2_hard_sigmoid(x)), np.clip(x * 0.2 + 0.5, 0, 1))


def test_tf1_era_initializer_dtype_and_unknown_constraint() -> None:
    """TF 1.x initializers carried a dtype Keras 3 refuses; a constraint Keras 3 lacks is dropped."""
    dense = {
        "class_name": "Dense",
        "config": {
            "name": "d",
            "units": 2,
            "kernel_initializer": {
                "class_name": "GlorotUniform",
                "config": {"seed": None, "dtype": "float32"},
            },
            "kernel_constraint": {"class_name": "RadialConstraint", "config": {}},
            "bias_initializer": {"class_name": "VarianceScaling", "config": {"distribution": "normal"}},
        },
    }
    out = normalise_keras2_config(dense)["config"]
    assert out["kernel_initializer"] == {"class_name": "GlorotUniform", "config": {"seed": None}}
    assert "kernel_constraint" not in out
    assert out["bias_initializer"] == dense["config"]["bias_initializer"]


def _edited_copy(tmp_path: Path, name: str, edit: Any) -> Path:
    path = tmp_path / f"{name}.h5"
    shutil.copyfile(FIXTURES / f"{name}.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config).encode()
    return path


def _one_line_error(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_batchnorm_over_two_axes_is_refused_in_one_line(tmp_path: Path) -> None:
    def two_axes(config: dict[str, Any]) -> None:
        bn = next(e for e in _entries(config) if e["class_name"] == "BatchNormalization")
        bn["config"]["axis"] = [1, 3]

    message = _one_line_error(_edited_copy(tmp_path, "ds_cnn", two_axes))
    assert "layer 'batch_normalization' (BatchNormalization)" in message and "[1, 3]" in message


def test_tf_op_without_a_keras3_layer_is_refused_in_one_line(tmp_path: Path) -> None:
    def divide(config: dict[str, Any]) -> None:
        op = next(e for e in _entries(config) if e["class_name"] == "TFOpLambda")
        op["config"]["function"] = "math.truediv"

    message = _one_line_error(_edited_copy(tmp_path, "mobilenet_v3_ops", divide))
    assert "(TFOpLambda math.truediv)" in message and "rebuild it with Keras layers" in message
