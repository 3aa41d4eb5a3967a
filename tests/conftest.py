"""Shared test settings (quiet TensorFlow, a deterministic hypothesis profile for CI) and the tiny
models and result folders the tests share: built here once, imported as ``from conftest import ...``."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import settings

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=100)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


import importlib.util  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from optsearch.core.fixedpoint import Format  # noqa: E402
from optsearch.core.tensors import TensorId  # noqa: E402
from optsearch.model.graph import quantized_model, uniform_formats  # noqa: E402
from optsearch.results.result import FORMATS_SCHEMA  # noqa: E402

L = keras.layers
N = 120
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def script_module(path: Path, name: str | None = None) -> Iterator[ModuleType]:
    """The Python file at ``path`` (a script under scripts/, an exported helper) imported as a
    module, registered in ``sys.modules`` while in use (its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained-looking CNN (raw uint8 in) and data it mostly gets right, plus broken variants."""
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Rescaling(1 / 255, name="scale"),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.Flatten(name="flat"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
    y = np.argmax(model.predict(x.astype(np.float32), verbose=0), axis=1)
    y[:10] = (y[:10] + 1) % 3
    paths = {"model": root / "model.keras", "data": root / "data.npz"}
    model.save(paths["model"])
    np.savez_compressed(paths["data"], x=x, y=y)

    def npz(name: str, **arrays: np.ndarray) -> None:
        paths[name] = root / f"{name}.npz"
        np.savez_compressed(paths[name], **arrays)

    npz("wrong_shape", x=rng.integers(0, 256, size=(N, 10, 10, 1), dtype=np.uint8), y=y)
    npz("labels_out_of_range", x=x, y=np.full(N, 7))
    npz("labels_wrong_length", x=x, y=y[:-5])
    bad = x.astype(np.float32)
    bad[3, 0, 0, 0] = np.nan
    bad[5, 1, 1, 0] = np.inf
    npz("nan", x=bad, y=y)
    npz("empty", x=x[:0], y=y[:0])
    npz("one_hot", x=x, y=np.eye(3, dtype=np.float32)[y])
    paths["not_a_model"] = root / "notes.keras"
    paths["not_a_model"].write_text("these are not the weights you are looking for\n")
    paths["plain"] = root / "plain.keras"
    keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Softmax()]).save(paths["plain"])
    return paths


# --------------------------------------------------------------------------------------------------
# Tiny models and result folders shared by the deployment, export and contract tests


def tiny_model() -> keras.Model:
    """Both kinds of layer: c1 takes a real input; c2 and out take fixed-point codes (integer-only).

    Conv(relu) -> Q -> MaxPool -> Conv -> BN -> ReLU -> Q -> Flatten -> Dense(softmax, split) -> Q.
    The pool is named ``p``, which hls4ml 1.3 renames ``p_0``.
    """
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Rescaling(1 / 255, name="scale")(inputs)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(x)
    x = L.MaxPooling2D(2, padding="same", name="p")(x)
    x = L.Conv2D(6, 3, padding="same", name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Flatten(name="flat")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    randomize_batchnorm(model, np.random.default_rng(1))
    return model


def randomize_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    """Trained-looking BatchNorm statistics (untrained ones are the identity)."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, c),
                    rng.normal(0, 0.5, c),
                    rng.normal(0, 0.5, c),
                    rng.uniform(0.2, 3.0, c),
                ]
            )


def images(n: int, shape: tuple[int, ...] = (8, 8, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape)).astype(np.float32)


def make_result_dir(
    model: keras.Model,
    x: np.ndarray,
    out: Path,
    bw: int = 8,
    data_spec: str | None = None,
    name: str | None = None,
) -> Path:
    """A result folder as `optsearch run` writes it, with uniform ``bw``-bit formats sized on ``x``.

    ``name`` is the model's name in formats.json (`optsearch run` uses the file's stem).
    """
    qmodel = quantized_model(model)
    probe = qmodel.activation_probe()
    acts = probe.predict(x, verbose=0)
    acts = acts if isinstance(acts, list) else [acts]
    ranges = {q.name: float(np.max(np.abs(a))) for q, a in zip(qmodel.layers, acts, strict=True)}
    formats = uniform_formats(qmodel, bw, ranges)
    qmodel.set_formats(formats)
    out.mkdir(parents=True)
    qmodel.save(str(out / "quantized.keras"))
    write_formats(out, name or model.name, qmodel.layers, formats, data_spec)
    return out


def write_formats(
    out: Path, name: str, layers: object, formats: dict[TensorId, Format], data_spec: str | None
) -> None:
    """The parts of formats.json the deployment commands read."""
    data = {
        "schema": FORMATS_SCHEMA,
        "model": {"name": name},
        "data": {"spec": data_spec, "scale": None, "resize": None} if data_spec else {},
        "layers": [
            {
                "name": q.name,  # type: ignore[attr-defined]
                "tensors": {
                    t.kind: {"bw": formats[t].bw, "f": formats[t].f}
                    for t in q.tensors()  # type: ignore[attr-defined]
                },
            }
            for q in layers  # type: ignore[attr-defined]
        ],
    }
    (out / "formats.json").write_text(json.dumps(data))
