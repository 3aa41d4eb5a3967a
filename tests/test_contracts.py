"""Contract tests: every implementation of an interface through the same checks (scikit-learn's
``parametrize_with_checks`` style). Every evaluator (plain, cached engine, naive) and every exporter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from conftest import images, make_result_dir, tiny_model

from optsearch.core.tensors import TensorId
from optsearch.data import Dataset, Preprocess
from optsearch.deploy.exporters import EXPORTERS, Exporter
from optsearch.evaluators.engine import CachedEvaluator
from optsearch.evaluators.keras import KerasEvaluator, activation_ranges
from optsearch.evaluators.naive import NaiveEvaluator
from optsearch.methods.evaluator import Evaluator
from optsearch.model.graph import QuantizedModel, quantized_model, uniform_formats

PREPROCESS = Preprocess(scale=1 / 255)
Factory = Callable[[keras.Model, QuantizedModel, Dataset], Evaluator]

EVALUATORS: dict[str, Factory] = {
    "keras": lambda model, qmodel, data: KerasEvaluator(qmodel, data, PREPROCESS, batch_size=32),
    "engine": lambda model, qmodel, data: CachedEvaluator(qmodel, data, PREPROCESS, batch_size=32),
    "engine-tight-cache": lambda model, qmodel, data: CachedEvaluator(
        qmodel, data, PREPROCESS, batch_size=32, cache_mb=0.001
    ),
    "naive": lambda model, qmodel, data: NaiveEvaluator(model, data, PREPROCESS, batch_size=32),
}


@pytest.fixture(scope="module")
def setup() -> tuple[keras.Model, QuantizedModel, Dataset, dict[str, Any]]:
    """The shared tiny model, data labelled by it (a few labels flipped), and two sets of formats."""
    model = tiny_model()
    x = images(96).astype(np.uint8)
    y = np.argmax(model.predict(PREPROCESS(x), verbose=0), axis=1).astype(np.int64)
    y[:6] = (y[:6] + 1) % 3
    data = Dataset(x, y, "tiny")
    qmodel = quantized_model(model)
    ranges = activation_ranges(qmodel, data, PREPROCESS, 32)
    formats = {
        "8-bit": uniform_formats(qmodel, 8, ranges),
        "3-bit": uniform_formats(qmodel, 3, ranges),
    }
    return model, qmodel, data, formats


def _reference(setup: tuple[keras.Model, QuantizedModel, Dataset, dict[str, Any]], name: str) -> float:
    model, qmodel, data, formats = setup
    return EVALUATORS["keras"](model, qmodel, data).evaluate(formats[name]).loss


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_evaluator_contract(
    name: str, setup: tuple[keras.Model, QuantizedModel, Dataset, dict[str, Any]]
) -> None:
    model, qmodel, data, formats = setup
    evaluator = EVALUATORS[name](model, qmodel, data)
    # The float network: no loss, exactly; the float accuracy is a fraction of the samples.
    assert 0.0 < evaluator.float_accuracy <= 1.0
    assert evaluator.float_accuracy * len(data) == pytest.approx(round(evaluator.float_accuracy * len(data)))
    nothing = evaluator.evaluate({})
    assert nothing.loss == 0.0 and nothing.exact and nothing.samples == len(data)
    # Every implementation gives the same loss for the same formats (eq. 6 on the same counts).
    for key in ("8-bit", "3-bit"):
        result = evaluator.evaluate(formats[key])
        assert result.exact and result.loss == _reference(setup, key)
        assert result.correct == round(len(data) * evaluator.float_accuracy * (1 - result.loss))
    # Early rejection: what comes back either is exact or is a lower bound already over max_loss.
    full = _reference(setup, "3-bit")
    tensor = TensorId("c1", "W")
    early = evaluator.evaluate(formats["3-bit"], varying=tensor, max_loss=full / 4)
    if early.exact:
        assert early.loss == full
    else:
        assert full / 4 < early.loss <= full
    # Quantizing some tensors only leaves the rest float.
    part = {t: f for t, f in formats["3-bit"].items() if t.layer == "out"}
    assert evaluator.evaluate(part).loss == EVALUATORS["keras"](model, qmodel, data).evaluate(part).loss


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from optsearch.run.deployed import load_result

    folder = make_result_dir(tiny_model(), images(64), tmp_path_factory.mktemp("contract") / "r", bw=6)
    return load_result(folder)


@pytest.mark.parametrize("name", sorted(EXPORTERS))
def test_exporter_contract(name: str, tiny_result: Any, tmp_path: Path) -> None:
    exporter: Exporter = EXPORTERS[name]
    assert exporter.name == name and exporter.description
    written = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        folder.mkdir()
        result = exporter.write(
            tiny_result.netlist, folder, tiny_result.name, "tiny", tiny_result.recorded, input_bits=16
        )
        # Every file it names is there and not empty, and nothing else is.
        assert result.files and sorted(result.files) == sorted(p.name for p in folder.iterdir())
        assert all((folder / f).stat().st_size > 0 for f in result.files)
        assert all(isinstance(note, str) and note for note in result.notes)
        written.append({f: (folder / f).read_bytes() for f in result.files})
    # The same result gives the same files, byte for byte.
    assert written[0] == written[1]
