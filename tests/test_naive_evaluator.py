"""The naive evaluator (rebuild + full predict per candidate) against the in-place ``KerasEvaluator``.

Contract: both give the same correct counts and losses for any formats, and the same search
decisions, dependent and independent. The naive one is slow (a new model and a new trace per call),
so the search here is kept to a tiny model, 200 samples, eps 0.05 and small starting bitwidths.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.data import Dataset, Preprocess
from optsearch.evaluators.keras import KerasEvaluator, activation_ranges
from optsearch.evaluators.naive import NaiveEvaluator
from optsearch.methods.opt_search import SearchSettings, opt_search
from optsearch.model.graph import QuantizedModel, quantized_model

L = keras.layers
N = 200
FLIPPED = 6
PREPROCESS = Preprocess(scale=1 / 64)
C1W, C1B, C1A = TensorId("c1", "W"), TensorId("c1", "B"), TensorId("c1", "A")
OUTW, OUTB, OUTA = TensorId("out", "W"), TensorId("out", "B"), TensorId("out", "A")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.Flatten(name="flat"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )


@pytest.fixture(scope="module")
def data(model: keras.Model) -> Dataset:
    """uint8 images labelled by the float model, a few flipped: float accuracy high but below 1."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
    y = np.argmax(model.predict(PREPROCESS(x), verbose=0), axis=1).astype(np.int64)
    y[:FLIPPED] = (y[:FLIPPED] + 1) % 3
    return Dataset(x=x, y=y, source="synthetic")


@pytest.fixture(scope="module")
def qmodel(model: keras.Model) -> QuantizedModel:
    return quantized_model(model)


@pytest.fixture(scope="module")
def naive(model: keras.Model, data: Dataset) -> NaiveEvaluator:
    return NaiveEvaluator(model, data, PREPROCESS)


@pytest.fixture(scope="module")
def naive_batched(model: keras.Model, data: Dataset) -> NaiveEvaluator:
    """Batches of 64 with a ragged last one (200 = 3 * 64 + 8), so batching cannot hide a difference."""
    return NaiveEvaluator(model, data, PREPROCESS, batch_size=64)


@pytest.fixture(scope="module")
def fast(qmodel: QuantizedModel, data: Dataset) -> KerasEvaluator:
    return KerasEvaluator(qmodel, data, PREPROCESS)


def test_float_accuracy_is_the_float_models(naive: NaiveEvaluator, fast: KerasEvaluator) -> None:
    assert naive.samples == N
    assert naive.float_correct == fast.float_correct == N - FLIPPED
    assert naive.float_accuracy == fast.float_accuracy


@pytest.mark.parametrize(
    "formats",
    [
        {},
        {C1W: Format(1, 0)},
        {OUTW: Format(1, 0)},
        {C1A: Format(2, 0)},
        {OUTA: Format(3, 1)},
        {C1W: Format(4, 3), C1B: Format(4, 3), C1A: Format(4, 1), OUTW: Format(4, 3), OUTA: Format(5, 2)},
    ],
    ids=["float", "pruned-conv-weights", "pruned-dense-weights", "coarse-A1", "coarse-logits", "W+B+A"],
)
def test_same_counts_and_loss_as_the_in_place_evaluator(
    formats: dict[TensorId, Format], naive_batched: NaiveEvaluator, fast: KerasEvaluator
) -> None:
    """Exact results, whatever ``varying`` and ``max_loss`` say; one evaluation counted per call."""
    calls = naive_batched.evaluations
    got = naive_batched.evaluate(formats, varying=next(iter(formats), None), max_loss=0.0)
    expected = fast.evaluate(formats)
    assert expected.exact
    assert (got.loss, got.correct, got.samples, got.exact) == (
        expected.loss,
        expected.correct,
        expected.samples,
        True,
    )
    assert naive_batched.evaluations == calls + 1


def test_never_stops_early_and_leaves_the_float_model_alone(
    naive: NaiveEvaluator, model: keras.Model
) -> None:
    before = [w.copy() for w in model.get_weights()]
    result = naive.evaluate({C1W: Format(1, 0)}, max_loss=0.0)
    assert result.exact and result.samples == N and result.loss > 0.0
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("independent", [False, True], ids=["dependent", "independent"])
def test_search_decisions_match_the_in_place_evaluator(
    independent: bool,
    naive: NaiveEvaluator,
    fast: KerasEvaluator,
    qmodel: QuantizedModel,
    data: Dataset,
) -> None:
    """Every decision (format, loss, rule, evaluation count) is the same with either evaluator."""
    ranges = activation_ranges(qmodel, data, PREPROCESS)
    magnitudes = qmodel.magnitudes(ranges)
    bw0 = {"W": 6, "B": 6, "A": 6}  # small starts keep the naive search to a few dozen rebuilds
    settings = (
        SearchSettings.independent_search(eps=0.05, bw0=bw0)
        if independent
        else SearchSettings(eps=0.05, bw0=bw0)
    )
    tensors = [q.tensors() for q in qmodel.layers]
    expected = opt_search(fast, tensors, magnitudes, settings)
    got = opt_search(naive, tensors, magnitudes, settings)
    assert got.formats == expected.formats
    assert [d.loss for d in got.decisions] == [d.loss for d in expected.decisions]
    assert got.decisions == expected.decisions
    assert got.evaluations == expected.evaluations
