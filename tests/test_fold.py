"""--fold-bn: BatchNorm folded into quantizable layers computes the same function where it says so."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from test_export import exported_helper

from optsearch.cli.main import cli
from optsearch.model.folding import fold_batchnorm
from optsearch.model.graph import quantized_model
from optsearch.model.zoo import build

L = keras.layers


def _randomise_batchnorms(model: keras.Model, seed: int, negative: bool = False) -> None:
    """Non-trivial inference statistics, so that a fold that forgets a term is caught."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 2.0, n)
            if negative:
                gamma[0] = -gamma[0]
            layer.set_weights([gamma, rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.5, 2.0, n)])


def _x(shape: tuple[int, ...], n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)


def _same(a: keras.Model, b: keras.Model, x: np.ndarray) -> bool:
    return bool(np.allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-4, atol=1e-5))


def _model(*layers: keras.layers.Layer, shape: tuple[int, ...] = (8, 8, 2), seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape), *layers])
    _randomise_batchnorms(model, seed)
    return model


def test_batchnorm_after_a_linear_layer_folds_backward_exactly() -> None:
    model = _model(
        L.Conv2D(3, 3, use_bias=False, name="c1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="r1"),
        L.Flatten(name="flat"),
        L.Dense(4, name="out"),
    )
    folded, plans = fold_batchnorm(model, "exact")
    assert [(p.batchnorm, p.how, p.into, p.exact) for p in plans] == [("bn1", "backward", ("c1",), True)]
    assert "bn1" not in [layer.name for layer in folded.layers]
    assert folded.get_layer("c1").use_bias  # the shift lives in a bias it did not have
    assert _same(model, folded, _x((8, 8, 2)))


@pytest.mark.parametrize("pool", [None, "avg", "max"])
def test_batchnorm_after_an_activation_folds_forward_exactly(pool: str | None) -> None:
    pooling = {"avg": [L.AveragePooling2D(2, name="pool")], "max": [L.MaxPooling2D(2, name="pool")]}
    model = _model(
        L.Conv2D(3, 3, activation="relu", name="c1"),  # the paper's order: Conv(relu) -> BN
        L.BatchNormalization(name="bn1"),
        *pooling.get(pool or "", []),
        L.Dropout(0.25, name="drop"),
        L.Conv2D(4, 2, name="c2"),  # valid padding: exact
        L.Flatten(name="flat"),
        L.Dense(3, name="out"),
    )
    folded, plans = fold_batchnorm(model, "exact")
    assert [(p.batchnorm, p.how, p.into, p.exact) for p in plans] == [("bn1", "forward", ("c2",), True)]
    assert _same(model, folded, _x((8, 8, 2)))
    # In the quantized clone, c1's quantizer now feeds c2 directly: no float work in between.
    qmodel = quantized_model(folded)
    assert [q.activation_at for q in qmodel.layers] == ["c1", "c2", "out"]


def test_batchnorm_folds_forward_through_flatten_into_dense_and_into_a_depthwise_layer() -> None:
    dense = _model(
        L.Conv2D(3, 3, activation="relu", name="c1"),
        L.BatchNormalization(name="bn1"),
        L.Flatten(name="flat"),
        L.Dense(4, name="out"),
    )
    folded, plans = fold_batchnorm(dense, "exact")
    assert [(p.how, p.into) for p in plans] == [("forward", ("out",))]
    assert _same(dense, folded, _x((8, 8, 2)))
    depthwise = _model(
        L.Conv2D(3, 3, activation="relu", name="c1"),
        L.BatchNormalization(name="bn1"),
        L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(4, name="out"),
    )
    folded, plans = fold_batchnorm(depthwise, "exact")
    assert [(p.how, p.into) for p in plans] == [("forward", ("dw",))]
    assert _same(depthwise, folded, _x((8, 8, 2)))


def test_what_would_change_the_function_is_kept_with_the_reason() -> None:
    negative = _model(
        L.Conv2D(3, 3, activation="relu", name="c1"),
        L.BatchNormalization(name="bn1"),
        L.MaxPooling2D(2, name="pool"),
        L.Flatten(name="flat"),
        L.Dense(4, name="out"),
    )
    _randomise_batchnorms(negative, 1, negative=True)
    folded, plans = fold_batchnorm(negative, "exact")
    assert plans[0].how == "kept" and "maxima" in plans[0].note and "negative" in plans[0].note
    assert "bn1" in [layer.name for layer in folded.layers]
    assert _same(negative, folded, _x((8, 8, 2)))
    padded = _model(
        L.Conv2D(3, 3, activation="relu", name="c1"),
        L.BatchNormalization(name="bn1"),
        L.Conv2D(4, 3, padding="same", name="c2"),
        L.Flatten(name="flat"),
        L.Dense(3, name="out"),
    )
    kept, plans = fold_batchnorm(padded, "exact")
    assert plans[0].how == "kept" and "border" in plans[0].note
    assert _same(padded, kept, _x((8, 8, 2)))
    approximate, plans = fold_batchnorm(padded, "all")
    assert (plans[0].how, plans[0].into, plans[0].exact) == ("forward", ("c2",), False)
    x = _x((8, 8, 2))
    inner = keras.Model(approximate.inputs, approximate.get_layer("c2").output)
    outer = keras.Model(padded.inputs, padded.get_layer("c2").output)
    got, want = inner.predict(x, verbose=0), outer.predict(x, verbose=0)
    # Only the border outputs of the zero-padded layer change; the interior is the same function.
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[:, 0], want[:, 0], rtol=1e-4, atol=1e-5)


def test_a_batchnorm_before_a_merge_is_kept() -> None:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 2))
    a = L.BatchNormalization(name="bn_a")(L.Conv2D(2, 1, activation="relu", name="a")(inputs))
    b = L.Conv2D(2, 1, activation="relu", name="b")(inputs)
    out = L.Dense(3, name="out")(L.Flatten(name="flat")(L.Concatenate(name="cat")([a, b])))
    model = keras.Model(inputs, out)
    _randomise_batchnorms(model, 3)
    folded, plans = fold_batchnorm(model, "all")
    assert plans[0].how == "kept" and "'cat'" in plans[0].note
    assert _same(model, folded, _x((8, 8, 2)))


def test_off_changes_nothing_and_the_paper_cnn_keeps_what_padding_forbids() -> None:
    model = build("sequential", (28, 28, 1), 10)
    assert fold_batchnorm(model, "off") == (model, [])
    _randomise_batchnorms(model, 4)
    folded, plans = fold_batchnorm(model, "exact")
    # Every conv after C1 is zero-padded, so only the last BN (-> global max pool -> Dense) folds.
    assert [p.batchnorm for p in plans if p.how != "kept"] == [plans[-1].batchnorm]
    assert plans[-1].into == ("logits",) and plans[-1].exact
    assert _same(model, folded, _x((28, 28, 1), 8))
    everything, plans = fold_batchnorm(model, "all")
    assert all(p.how == "forward" for p in plans)
    assert not [layer for layer in everything.layers if isinstance(layer, L.BatchNormalization)]


def test_run_with_fold_bn_searches_the_folded_network_and_reports_it(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "folded"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(files["model"]),
            "--data",
            str(files["data"]),
            "--eps",
            "0.05",
            "--criterion",
            "paper",
            "--fold-bn",
            "exact",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "--fold-bn: 'bn1' folded forward into out" in result.output
    assert "quantized.keras, folded_model.keras)" in result.output
    data = json.loads((out / "formats.json").read_text())
    assert data["settings"]["fold_bn"] == "exact"
    assert [(f["batchnorm"], f["how"], f["into"]) for f in data["model"]["batchnorm_folds"]] == [
        ("bn1", "forward", ["out"])
    ]
    before = data["model"]["float_accuracy_before_folding"]
    assert before["search"] == data["accuracy"]["search"]["float_model"]  # an exact fold: same accuracy
    report = (out / "report.md").read_text()
    assert "## BatchNorm folding (--fold-bn exact)" in report and "| bn1 | forward | out | yes |" in report

    # evaluate --formats folds as the run did and measures what the run measured
    import optsearch

    evaluation = optsearch.evaluate(files["model"], files["data"], formats=out)
    search = next(p for p in evaluation.parts if p.part == "search")
    assert search.quantized_accuracy == data["accuracy"]["search"]["quantized"]
    import optsearch.model.quantizer_layer

    saved = keras.saving.load_model(out / "quantized.keras", compile=False)
    assert not [layer for layer in saved.layers if isinstance(layer, L.BatchNormalization)]

    # The float model the formats belong to is saved, and the hls4ml helper takes it, not the original.
    folded = keras.saving.load_model(out / "folded_model.keras", compile=False)
    assert "bn1" not in [layer.name for layer in folded.layers]
    helper = exported_helper(out, tmp_path / "x")
    assert helper.FOLDED_BATCHNORMS == ["bn1"]
    original = keras.saving.load_model(files["model"], compile=False)
    with pytest.raises(ValueError, match=r"bn1.*folded_model\.keras"):
        helper.prepare_model(original)
    prepared = helper.prepare_model(folded)
    bw, f = helper.WEIGHT_FORMATS["out"]["W"]
    kernel = folded.get_layer("out").get_weights()[0]
    assert np.array_equal(prepared.get_layer("out").get_weights()[0], helper.quantize(kernel, bw, f))


def test_a_run_without_folds_saves_no_folded_model(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plain"
    args = [
        "run",
        str(files["model"]),
        "--data",
        str(files["data"]),
        "--eps",
        "0.05",
        "--out",
        str(out),
        "--criterion",
        "paper",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert not (out / "folded_model.keras").exists()


def test_evaluate_refuses_a_folded_runs_formats_on_the_unfolded_model_with_the_fix(tmp_path: Path) -> None:
    """A conv without bias gains one when its BatchNorm folds backward: the run's formats name it, so
    `evaluate --fold-bn off` cannot apply them and says which --fold-bn the run used."""
    model = _model(L.Conv2D(3, 3, use_bias=False, name="c"), L.BatchNormalization(name="bn"),
                   L.ReLU(name="r"), L.Flatten(name="f"), L.Dense(2, name="d"))  # fmt: skip
    x = _x((8, 8, 2), 64)
    paths = {"model": tmp_path / "m.keras", "data": tmp_path / "d.npz"}
    model.save(paths["model"])
    np.savez(paths["data"], x=x, y=np.argmax(model.predict(x, verbose=0), axis=1))
    common = [str(paths["model"]), "--data", str(paths["data"])]
    out = tmp_path / "run"
    ran = CliRunner().invoke(
        cli, ["run", *common, "--eps", "0.1", "--criterion", "paper", "--fold-bn", "exact", "--out", str(out)]
    )
    assert ran.exit_code == 0, ran.output
    layers = json.loads((out / "formats.json").read_text())["layers"]
    assert "B" in next(layer for layer in layers if layer["name"] == "c")["tensors"]  # the fold's new bias
    formats = ["--formats", str(out / "formats.json")]
    assert CliRunner().invoke(cli, ["evaluate", *common, *formats]).exit_code == 0
    refused = CliRunner().invoke(cli, ["evaluate", *common, *formats, "--fold-bn", "off"])
    assert refused.exit_code == 2
    assert "not in the model c:B" in refused.output and "used --fold-bn exact" in refused.output
