"""Models used as layers are inlined when loaded (``model/flatten.py``): transfer-learning models
(a backbone model inside a Sequential, ``backbone(x, training=False)`` in a functional model, a
Sequential head) search, verify and export like flat ones."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import images

from optsearch.cli.main import cli
from optsearch.core.errors import ModelError
from optsearch.model.flatten import flatten_nested, is_nested
from optsearch.model.graph import QUANTIZABLE_CLASSES, quantized_model
from optsearch.model.loading import load_model

L = keras.layers


def _backbone() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1), name="bb_in")
    x = L.Conv2D(4, 3, padding="same", name="bb_c1")(inputs)
    x = L.BatchNormalization(name="bb_bn")(x)
    x = L.ReLU(name="bb_r")(x)
    x = L.MaxPooling2D(2, name="bb_pool")(x)
    return keras.Model(inputs, x, name="backbone")


def _head() -> keras.Sequential:
    return keras.Sequential(
        [keras.Input((4, 4, 4)), L.Flatten(name="h_flat"), L.Dense(3, name="h_dense")], name="head"
    )


def _sequential_of_models() -> keras.Model:
    """``Sequential([Rescaling, backbone, head])``: the transfer-learning idiom."""
    return keras.Sequential(
        [keras.Input((8, 8, 1)), L.Rescaling(1 / 255, name="scale"), _backbone(), _head()]
    )


def _functional_of_models() -> keras.Model:
    """``head(backbone(x, training=False))`` with a model two levels deep."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Rescaling(1 / 255, name="scale")(inputs)
    x = _backbone()(x, training=False)
    inner = keras.Sequential([keras.Input((4, 4, 4)), _head()], name="wrapper")
    return keras.Model(inputs, L.Softmax(name="probs")(inner(x)), name="outer")


@pytest.mark.parametrize("build", [_sequential_of_models, _functional_of_models])
def test_inlined_model_computes_the_same_and_quantizes_every_layer(build: object, tmp_path: Path) -> None:
    model = build()  # type: ignore[operator]
    path = tmp_path / "nested.keras"
    model.save(path)
    assert is_nested(model)
    flat = load_model(path)
    assert not is_nested(flat)
    x = images(5)
    np.testing.assert_allclose(np.asarray(flat(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    names = [layer.name for layer in flat.layers]
    assert {"bb_c1", "bb_bn", "h_dense"} <= set(names)
    qmodel = quantized_model(flat)
    assert [q.name for q in qmodel.layers] == [
        n for n in names if type(flat.get_layer(n)).__name__ in QUANTIZABLE_CLASSES
    ]
    assert flatten_nested(flat) is flat  # nothing to inline: the model itself


def test_a_nested_model_called_twice_is_refused() -> None:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="d")], name="twice")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(inner(inputs)))
    with pytest.raises(ModelError, match="nested model 'twice' is called 2 times"):
        flatten_nested(model)


def test_names_that_clash_once_inlined_are_refused() -> None:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="dense_a")], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="dense_a")(inner(inputs)))
    with pytest.raises(ModelError, match="layer name 'dense_a' appears 2 times once the nested"):
        flatten_nested(model)


def test_run_verify_export_on_a_transfer_learning_model(tmp_path: Path) -> None:
    model = _sequential_of_models()
    path = tmp_path / "tl.keras"
    model.save(path)
    data = tmp_path / "x.npz"
    np.savez(data, x=images(64))  # label-free: the float model's own predictions
    out = tmp_path / "r"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["run", str(path), "--data", str(data), "--eps", "0.2", "--criterion", "paper",
         "--search-fraction", "1.0", "--predict-samples", "0", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["verify", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["export", str(out), "--to", "c"])
    assert result.exit_code == 0, result.output
