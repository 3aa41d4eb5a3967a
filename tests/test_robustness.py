"""The catalogue of bad inputs (docs/robustness.md): each is refused with exit code 2, one line naming
what is wrong, no traceback, and no output folder (or work folder) left behind. Also the odd
inputs that work, and the numerics: NaN/inf candidates are rejected, below-chance data warned about."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner, Result

from optsearch.cli.main import cli
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.data import Dataset
from optsearch.evaluators.engine import CachedEvaluator
from optsearch.evaluators.keras import KerasEvaluator
from optsearch.model.graph import quantized_model

L = keras.layers
DOC = Path(__file__).resolve().parents[1] / "docs" / "robustness.md"


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@keras.saving.register_keras_serializable(package="robustness_test")
class Doubler(L.Layer):
    """A custom layer: registered here, unknown to a fresh process (and to Keras once unregistered)."""

    def call(self, x: object) -> object:
        return x * 2.0  # type: ignore[operator]


def _save(model: keras.Model, tmp: Path, name: str = "model.keras") -> Path:
    path = tmp / name
    model.save(path)
    return path


def _flat(tmp: Path, *layers: keras.layers.Layer, shape: tuple[int, ...] = (8, 8, 1)) -> Path:
    return _save(keras.Sequential([keras.Input(shape), *layers]), tmp)


def _nested_twice(tmp: Path) -> Path:
    inner = keras.Sequential([keras.Input((64,)), L.Dense(64, name="inner_dense")], name="inner")
    inputs = keras.Input((8, 8, 1))
    return _save(keras.Model(inputs, L.Dense(3)(inner(inner(L.Flatten()(inputs))))), tmp)


def _shared(tmp: Path) -> Path:
    shared = L.Dense(64, name="shared")
    inputs = keras.Input((8, 8, 1))
    x = L.Flatten()(inputs)
    return _save(keras.Model(inputs, L.Dense(3)(shared(shared(x)))), tmp)


def _two_inputs(tmp: Path) -> Path:
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    merged = L.Concatenate()([L.Flatten()(a), L.Flatten()(b)])
    return _save(keras.Model([a, b], L.Dense(3)(merged)), tmp)


def _two_outputs(tmp: Path) -> Path:
    inputs = keras.Input((8, 8, 1))
    x = L.Flatten()(inputs)
    return _save(keras.Model(inputs, [L.Dense(3, name="o1")(x), L.Dense(3, name="o2")(x)]), tmp)


def _custom_layer_unregistered(tmp: Path) -> Path:
    path = _flat(tmp, Doubler(name="doubler"), L.Flatten(), L.Dense(3))
    # A file written with a custom layer the loading process does not know: rename its class.
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["config.json"] = members["config.json"].replace(b"Doubler", b"NotImported")
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def _lambda(tmp: Path) -> Path:
    return _flat(tmp, L.Lambda(lambda x: x * 2.0, name="times_two"), L.Flatten(), L.Dense(3))


def _truncated(tmp: Path) -> Path:
    path = _flat(tmp, L.Flatten(), L.Dense(3))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _empty_file(tmp: Path) -> Path:
    path = tmp / "empty.keras"
    path.write_bytes(b"")
    return path


def _zip_without_config(tmp: Path) -> Path:
    path = tmp / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "no model here")
    return path


def _h5_config_not_json(tmp: Path) -> Path:
    path = tmp / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b"{not json"
    return path


def _h5_weights_only(tmp: Path) -> Path:
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(3)])
    path = tmp / "model.weights.h5"
    model.save_weights(path)
    return path


def _saved_model_dir(tmp: Path) -> Path:
    path = tmp / "saved_model"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"\x08\x01")
    return path


def _data(tmp: Path, name: str = "data.npz", **arrays: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _images(n: int = 40, shape: tuple[int, ...] = (8, 8, 1)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int = 40) -> np.ndarray:
    return np.arange(n) % 3


Build = Callable[[Path, dict[str, Path]], list[object]]
"""Makes the bad input in a temporary folder; returns the arguments of ``optsearch run`` before --out."""


def _model_case(make: Callable[[Path], Path], *extra: object) -> Build:
    return lambda tmp, files: [make(tmp), "--data", files["data"], *extra]


def _data_case(**arrays: np.ndarray) -> Build:
    return lambda tmp, files: [files["model"], "--data", _data(tmp, **arrays)]


def _pickled(tmp: Path, files: dict[str, Path]) -> list[object]:
    path = tmp / "data.npz"
    np.savez(path, x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    return [files["model"], "--data", path]


def _text_as_npz(tmp: Path, files: dict[str, Path]) -> list[object]:
    path = tmp / "data.npz"
    path.write_text("x,y\n1,2\n")
    return [files["model"], "--data", path]


def _rgb_model(tmp: Path, files: dict[str, Path]) -> list[object]:
    model = _flat(tmp, L.Conv2D(2, 3, name="c"), L.Flatten(), L.Dense(3), shape=(8, 8, 3))
    return [model, "--data", files["data"]]


def _out_is_a_file(tmp: Path, files: dict[str, Path]) -> list[object]:
    (tmp.parent / "out").write_text("a file")
    return [files["model"], "--data", files["data"]]


def _partial_exists(tmp: Path, files: dict[str, Path]) -> list[object]:
    (tmp.parent / "out.partial").mkdir()
    (tmp.parent / "out.partial" / "request.json").write_text("{}")
    return [files["model"], "--data", files["data"]]


def _partial_unreadable(tmp: Path, files: dict[str, Path]) -> list[object]:
    (tmp.parent / "out.partial").mkdir()
    (tmp.parent / "out.partial" / "request.json").write_text("{cut short")
    return [files["model"], "--data", files["data"], "--resume"]


def _resume_nothing(tmp: Path, files: dict[str, Path]) -> list[object]:
    return [files["model"], "--data", files["data"], "--resume"]


def _scale(value: str) -> Build:
    return lambda tmp, files: [files["model"], "--data", files["data"], "--scale", value]


#: id -> (what the user gives, how to build it, the phrase the one-line error must hold)
CASES: dict[str, tuple[str, Build, str]] = {
    "nested_model_twice": (
        "a nested model called twice",
        _model_case(_nested_twice),
        "nested model 'inner' is called 2 times",
    ),
    "shared_layer": ("a layer called twice", _model_case(_shared), "'shared' (Dense) is shared"),
    "two_inputs": ("a model with two inputs", _model_case(_two_inputs), "2 inputs and 1 outputs"),
    "two_outputs": ("a model with two outputs", _model_case(_two_outputs), "1 inputs and 2 outputs"),
    "rnn_layer": (
        "an RNN layer (SimpleRNN)",
        _model_case(lambda t: _flat(t, L.SimpleRNN(4, name="rnn"), L.Dense(3), shape=(8, 8))),
        "layer 'rnn' (SimpleRNN) has weights optsearch cannot quantize",
    ),
    "lstm_layer": (
        "an LSTM layer",
        _model_case(lambda t: _flat(t, L.LSTM(4, name="lstm"), L.Dense(3), shape=(8, 8))),
        "layer 'lstm' (LSTM) has weights optsearch cannot quantize",
    ),
    "conv_transpose": (
        "a Conv2DTranspose layer",
        _model_case(lambda t: _flat(t, L.Conv2DTranspose(2, 3, name="up"), L.Flatten(), L.Dense(3))),
        "layer 'up' (Conv2DTranspose) has weights",
    ),
    "embedding": (
        "an Embedding layer",
        _model_case(lambda t: _flat(t, L.Embedding(256, 2, name="emb"), L.Flatten(), L.Dense(3), shape=(8,))),
        "layer 'emb' (Embedding) has weights",
    ),
    "custom_layer_unknown": (
        "a custom layer not registered in this process",
        _model_case(_custom_layer_unregistered),
        "custom layer or object",
    ),
    "lambda_layer": ("a Lambda layer (Python code in the file)", _model_case(_lambda), "--unsafe-load"),
    "single_sigmoid_output": (
        "one sigmoid output (binary classifier)",
        _model_case(lambda t: _flat(t, L.Flatten(), L.Dense(1, activation="sigmoid"))),
        "one score per class",
    ),
    "truncated_keras_file": ("a .keras file cut in half", _model_case(_truncated), "model.keras"),
    "empty_model_file": ("an empty model file", _model_case(_empty_file), "is not a Keras model"),
    "zip_without_config": (
        "a zip archive that is no model",
        _model_case(_zip_without_config),
        "no valid config",
    ),
    "h5_config_not_json": ("an HDF5 file with a broken config", _model_case(_h5_config_not_json), "not JSON"),
    "h5_weights_only": ("a weights-only .weights.h5 file", _model_case(_h5_weights_only), "weights only"),
    "saved_model_dir": ("a TensorFlow SavedModel folder", _model_case(_saved_model_dir), "is a directory"),
    "npz_needs_pickle": ("an .npz with object arrays (pickle)", _pickled, "never loads"),
    "npz_is_text": ("a text file named .npz", _text_as_npz, "not an .npz archive"),
    "npz_wrong_keys": ("an .npz without x/y", _data_case(images=_images(), labels=_labels()), "needs x/y"),
    "labels_fractional": (
        "soft labels (fractions)",
        _data_case(x=_images(), y=np.linspace(0, 2, 40)),
        "not whole numbers",
    ),
    "labels_negative": ("negative labels", _data_case(x=_images(), y=_labels() - 1), "negative"),
    "labels_text": ("text labels", _data_case(x=_images(), y=np.array(["cat"] * 40)), "labels have dtype"),
    "samples_text": ("text samples", _data_case(x=np.array(["img"] * 40), y=_labels()), "samples have dtype"),
    "labels_one_hot_soft": (
        "one-hot rows that are not 0/1",
        _data_case(x=_images(), y=np.full((40, 3), 1 / 3)),
        "do not hold exactly one 1",
    ),
    "grayscale_for_rgb_model": ("grayscale data for an RGB model", _rgb_model, "channel counts differ"),
    "one_sample_split": (
        "one sample, split into search and held-out",
        _data_case(x=_images(1), y=np.array([0])),
        "too few to split",
    ),
    "float_model_never_right": (
        "labels no prediction matches",
        lambda tmp, files: [files["model"], "--data", _data(tmp, x=_images(3), y=np.array([2, 2, 2]))],
        "classifies no sample",
    ),
    "scale_not_finite": ("--scale nan", _scale("nan"), "scale must be a finite number"),
    "scale_overflows": ("--scale 1e38: the scaled samples overflow", _scale("1e38"), "overflow float32"),
    "float_activations_overflow": (
        "weights so large the float activations overflow",
        _model_case(
            lambda t: _flat(
                t, L.Flatten(), L.Dense(3, name="huge", kernel_initializer=keras.initializers.Constant(3e38))
            )
        ),
        "layer(s) huge are not finite",
    ),
    "out_is_a_file": ("--out names a file", _out_is_a_file, "is a file"),
    "partial_exists": ("an interrupted run's work folder, no --resume", _partial_exists, "--resume"),
    "resume_nothing": ("--resume with no interrupted run", _resume_nothing, "nothing to resume"),
    "resume_unreadable": ("--resume with a damaged work folder", _partial_unreadable, "unreadable"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_one_line(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    _, build, phrase = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args = build(inputs, files)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _run("run", *args, "--out", out, "--criterion", "paper")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert phrase in errors[0], errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output or work folder written


@pytest.mark.parametrize(
    ("output", "name"),
    [
        (L.Dense(3, name="logits"), "logits"),
        (L.Dense(3, activation="sigmoid", name="multi_sigmoid"), "sigmoid"),
    ],
)
def test_logits_and_sigmoid_outputs_work(
    output: keras.layers.Layer, name: str, files: dict[str, Path], tmp_path: Path
) -> None:
    model = _flat(tmp_path, L.Conv2D(2, 3, activation="relu", name="c"), L.Flatten(), output)
    result = _run("evaluate", model, "--data", files["data"])
    assert result.exit_code == 0, result.output
    assert "uniform 8-bit" in result.output


def test_the_catalogue_lists_every_case() -> None:
    """Every row of docs/robustness.md's table names a test that exists, and every case here has a row."""
    text = DOC.read_text()
    ids = re.findall(r"`(tests/[\w/]+\.py)::([\w\[\]\-.]+)`", text)
    assert len(ids) >= 25
    root = DOC.parents[1]
    for file, test in ids:
        source = (root / file).read_text()
        if file.endswith("test_robustness.py") and "[" in test:
            assert test.split("[")[1].rstrip("]") in CASES, test
        else:
            assert f"def {test.split('[')[0]}(" in source, (file, test)
    listed = {test.split("[")[1].rstrip("]") for file, test in ids if "[" in test and "robustness" in file}
    assert listed >= set(CASES)


# --------------------------------------------------------------------------------------------------
# Numerics


def _overflowing_model() -> keras.Model:
    """Float outputs near the float32 limit (finite); a coarse activation format rounds them past it.

    ``h`` passes its input x in [1.02, 1.1]; BatchNorm multiplies by 3e38 (still finite); a format
    with F = -1 rounds h to 2, and 2 * 3e38 is inf, which the softmax turns into NaN.
    """
    inputs = keras.Input((1,))
    h = L.Dense(1, name="h", activation="relu")(inputs)
    z = L.BatchNormalization(name="bn", epsilon=0.0)(h)
    out = L.Dense(2, name="out", activation="softmax")(z)
    model = keras.Model(inputs, out)
    model.get_layer("h").set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("bn").set_weights([np.full(1, 3e38, np.float32), np.zeros(1), np.zeros(1), np.ones(1)])
    model.get_layer("out").set_weights([np.array([[1.0, 1.0]], np.float32), np.array([1.0, 0.0], np.float32)])
    return model


@pytest.mark.parametrize(
    "evaluator",
    [
        KerasEvaluator,
        CachedEvaluator,
    ],
)
def test_a_candidate_that_overflows_is_rejected_not_counted_right(evaluator: type[KerasEvaluator]) -> None:
    qmodel = quantized_model(_overflowing_model())
    x = np.linspace(1.02, 1.1, 40, dtype=np.float32).reshape(-1, 1)
    data = Dataset(x, np.zeros(40, dtype=np.int64), "overflow")
    ev = evaluator(qmodel, data)
    assert ev.float_accuracy == 1.0  # float: finite scores, class 0 (ties go to the first)
    coarse = {TensorId("h", "A"): Format(4, -1)}
    result = (
        ev.evaluate(coarse, varying=TensorId("h", "A"))
        if evaluator is CachedEvaluator
        else ev.evaluate(coarse)
    )
    assert result.loss == 1.0 and not result.accepted(0.5)  # NaN rows count as wrong


def test_below_chance_accuracy_is_warned_about_and_the_run_goes_on(
    files: dict[str, Path], tmp_path: Path
) -> None:
    x = np.load(files["data"])["x"]
    y = np.load(files["data"])["y"]
    wrong = (y + 1) % 3
    wrong[10::6] = y[10::6]  # a few right: below chance (1/3) but not zero
    data = _data(tmp_path, x=x, y=wrong)
    result = CliRunner().invoke(cli, ["evaluate", str(files["model"]), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert (
        "below chance (33.33% for 3 classes)" in result.output and "warning: the float model" in result.output
    )
