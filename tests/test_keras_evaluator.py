"""Evaluation (spec §4-§5): accuracy, relative loss, independent/dependent candidates, early stop."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optsearch.core.confidence import AcceptanceTest, loss_upper_bound
from optsearch.core.errors import DataError
from optsearch.core.fixedpoint import Format, quantize
from optsearch.core.tensors import TensorId
from optsearch.data import Dataset, Preprocess
from optsearch.evaluators.keras import KerasEvaluator, activation_ranges, chunk_bounds
from optsearch.methods.evaluator import candidate_formats, eval_acc_loss, relative_loss
from optsearch.model.graph import quantized_model

CLASSES = 4
W, B, A = TensorId("d", "W"), TensorId("d", "B"), TensorId("d", "A")


def _identity_model() -> keras.Model:
    """Dense with an identity kernel and zero bias: it predicts argmax(x)."""
    model = keras.Sequential([keras.Input((CLASSES,)), keras.layers.Dense(CLASSES, name="d")])
    model.get_layer("d").set_weights([np.eye(CLASSES, dtype=np.float32), np.zeros(CLASSES, np.float32)])
    return model


def _data(n: int = 200, wrong: int = 20, seed: int = 0) -> Dataset:
    """Labels equal argmax(x) except for the first ``wrong`` samples: float accuracy (n - wrong) / n."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, CLASSES)).astype(np.float32)
    y = np.argmax(x, axis=1).astype(np.int64)
    y[:wrong] = (y[:wrong] + 1) % CLASSES
    return Dataset(x=x, y=y, source="synthetic")


@pytest.fixture(scope="module")
def evaluator() -> KerasEvaluator:
    return KerasEvaluator(quantized_model(_identity_model()), _data(), batch_size=32)


def test_float_accuracy_and_zero_loss(evaluator: KerasEvaluator) -> None:
    assert evaluator.float_correct == 180
    assert evaluator.float_accuracy == pytest.approx(0.9)
    result = evaluator.evaluate({})
    assert (result.loss, result.correct, result.samples, result.exact) == (0.0, 180, 200, True)


def test_loss_of_a_known_quantization(evaluator: KerasEvaluator) -> None:
    """Pruned weights give all-zero scores: argmax 0 for every sample."""
    data = evaluator.data
    result = evaluator.evaluate({W: Format(1, 0)})
    correct = int(np.sum(data.y == 0))
    assert result.correct == correct
    assert result.loss == relative_loss(180, correct)
    assert result.accepted(result.loss) and not result.accepted(result.loss - 1e-9)


def test_activation_format_changes_predictions_like_numpy(evaluator: KerasEvaluator) -> None:
    fmt = Format(3, 1)
    scores = quantize(evaluator.data.x, fmt)  # the identity layer's logits, quantized
    expected = np.argmax(scores, axis=1)
    np.testing.assert_array_equal(evaluator.predictions({A: fmt}), expected)
    assert evaluator.accuracy({A: fmt}) == pytest.approx(float(np.mean(expected == evaluator.data.y)))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.sampled_from([Format(1, 0), Format(2, 0), Format(3, 1), Format(8, 4)]))
def test_early_stop_never_changes_the_decision(max_loss: float, fmt: Format) -> None:
    evaluator = _shared_evaluator()
    full = evaluator.evaluate({A: fmt})
    early = evaluator.evaluate({A: fmt}, varying=A, max_loss=max_loss)
    assert early.accepted(max_loss) == full.accepted(max_loss)
    if early.exact:
        assert early.loss == full.loss
    else:
        assert full.loss >= early.loss > max_loss and early.samples < full.samples


_CACHE: dict[str, KerasEvaluator] = {}


def _shared_evaluator() -> KerasEvaluator:
    if "e" not in _CACHE:
        _CACHE["e"] = KerasEvaluator(
            quantized_model(_identity_model()), _data(), batch_size=16, fragile_first=False
        )
    return _CACHE["e"]


def test_early_stop_happens_in_the_first_batches() -> None:
    evaluator = _shared_evaluator()
    result = evaluator.evaluate({W: Format(1, 0)}, max_loss=0.01)
    # Pruned weights predict class 0: a sample is missed when its label is not 0. Best case, every
    # unseen sample is right (200 - 180 = 20 more than the float model), so the evaluation stops at
    # the first chunk boundary where misses - 20 already exceed 1% of the 180 float-correct.
    ends = np.array([stop for _, stop in evaluator.chunks])
    lost = np.cumsum(evaluator.data.y != 0)[ends - 1] - (len(evaluator.data) - evaluator.float_correct)
    stop = ends[int(np.argmax(lost / evaluator.float_correct > 0.01))]
    assert not result.exact and result.samples == stop < len(evaluator.data)


@pytest.mark.parametrize(
    ("total", "batch", "first", "sizes"),
    [
        (1000, 500, None, [62, 124, 248, 496, 70]),
        (3000, 500, None, [62, 124, 248, 496, 500, 500, 500, 500, 70]),
        (100, 16, 4, [4, 8, 16, 16, 16, 16, 16, 8]),
        (10, 500, 64, [10]),
        (0, 8, None, []),
        (5, 1, None, [1, 1, 1, 1, 1]),
    ],
)
def test_chunks_start_small_and_double_up_to_the_batch_size(
    total: int, batch: int, first: int | None, sizes: list[int]
) -> None:
    bounds = chunk_bounds(total, batch, first)
    assert [stop - start for start, stop in bounds] == sizes
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_fragile_first_changes_no_loss_and_rejects_sooner() -> None:
    """Float-wrong samples first, then by float margin (top-1 minus top-2): same losses, earlier rejection."""
    ordered = KerasEvaluator(quantized_model(_identity_model()), _data(), batch_size=16)
    plain = _shared_evaluator()
    wrong = ordered.float_predictions != ordered.data.y
    assert wrong[:20].all() and not wrong[20:].any()
    top2 = np.sort(ordered.data.x[20:], axis=1)[:, -2:]
    assert np.all(np.diff(top2[:, 1] - top2[:, 0]) >= 0)
    assert ordered.float_correct == plain.float_correct
    for fmt in (Format(2, 0), Format(3, 1), Format(4, 2), Format(8, 4)):
        assert ordered.evaluate({A: fmt}).loss == plain.evaluate({A: fmt}).loss
    early_ordered = ordered.evaluate({A: Format(2, 0)}, max_loss=0.0)
    early_plain = plain.evaluate({A: Format(2, 0)}, max_loss=0.0)
    assert not early_ordered.exact and early_ordered.samples <= early_plain.samples


def test_independent_and_dependent_candidates(evaluator: KerasEvaluator) -> None:
    """Alg. 1: independent quantizes only the tensor under test; dependent adds r_Q."""
    decided = {W: Format(1, 0)}
    assert candidate_formats(A, Format(8, 4), independent=True, decided=decided) == {A: Format(8, 4)}
    assert candidate_formats(A, Format(8, 4), independent=False, decided=decided) == {
        W: Format(1, 0),
        A: Format(8, 4),
    }
    ind = eval_acc_loss(evaluator, A, Format(8, 4), independent=True, decided=decided)
    dep = eval_acc_loss(evaluator, A, Format(8, 4), independent=False, decided=decided)
    assert ind.loss == 0.0
    assert dep.loss == evaluator.evaluate({W: Format(1, 0)}).loss > 0.0


def test_activation_ranges_are_float_maxima(evaluator: KerasEvaluator) -> None:
    qmodel = evaluator.qmodel
    qmodel.set_formats({A: Format(2, 0)})
    ranges = activation_ranges(qmodel, evaluator.data, batch_size=7)
    assert ranges == {"d": pytest.approx(float(np.max(np.abs(evaluator.data.x))), rel=1e-7)}
    assert qmodel.formats == {A: Format(2, 0)}  # restored afterwards


def test_preprocessing_is_applied_per_batch() -> None:
    data = _data()
    scaled = Dataset(x=(data.x * 10.0).astype(np.float32), y=data.y, source="scaled")
    evaluator = KerasEvaluator(
        quantized_model(_identity_model()), scaled, Preprocess(scale=0.1), batch_size=50
    )
    assert evaluator.float_correct == 180


def test_float_model_with_no_correct_prediction_is_refused() -> None:
    data = _data(n=40, wrong=40)
    with pytest.raises(DataError, match=r"classifies no sample.*synthetic.*preprocessing"):
        KerasEvaluator(quantized_model(_identity_model()), data)


def test_relative_loss_definition() -> None:
    """eq. 6: da = (a - a_q) / a."""
    assert relative_loss(200, 198) == 0.01
    assert relative_loss(100, 101) == -0.01
    with pytest.raises(ValueError, match="undefined"):
        relative_loss(0, 0)


def _guarded_evaluator(fragile_first: bool) -> KerasEvaluator:
    key = f"guarded-{fragile_first}"
    if key not in _CACHE:
        _CACHE[key] = KerasEvaluator(
            quantized_model(_identity_model()),
            _data(),
            batch_size=16,
            fragile_first=fragile_first,
            acceptance=AcceptanceTest("guarded", 0.95),
        )
    return _CACHE[key]


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.0, 1.0),
    st.sampled_from([Format(1, 0), Format(2, 0), Format(3, 1), Format(4, 2), Format(8, 4)]),
    st.booleans(),
    st.floats(0.0, 1.0) | st.none(),
)
def test_guarded_early_stop_never_changes_the_decision(
    max_loss: float, fmt: Format, fragile_first: bool, must_beat: float | None
) -> None:
    """The guarded test stops a candidate only when no completion brings its bound back under the
    budget (or below ``must_beat``): accepting, and beating, come out as a full evaluation says."""
    evaluator = _guarded_evaluator(fragile_first)
    full = evaluator.evaluate({A: fmt})
    assert full.bound is not None and full.bound >= full.loss
    counts = (full.losses or 0, full.gains or 0, evaluator.float_correct, 200)
    assert full.bound == loss_upper_bound(*counts, 0.95)
    early = evaluator.evaluate({A: fmt}, varying=A, max_loss=max_loss, must_beat=must_beat)
    if early.exact:
        assert (early.loss, early.bound) == (full.loss, full.bound)
        return
    # Stopped: its statistic is a lower bound of the full one, and already settles the question.
    assert full.statistic >= early.statistic and full.loss >= early.loss
    rejected = early.statistic > max_loss
    beaten = must_beat is not None and early.statistic >= must_beat
    assert rejected or beaten
    assert (not rejected or not full.accepted(max_loss)) and (not beaten or full.statistic >= must_beat)


def test_paper_counts_losses_and_gains(evaluator: KerasEvaluator) -> None:
    """L and G are counted under either criterion; the paper's statistic is the loss itself."""
    result = evaluator.evaluate({A: Format(2, 0)})
    assert result.bound is None and result.statistic == result.loss
    assert result.loss == (result.losses - result.gains) / evaluator.float_correct  # type: ignore[operator]
