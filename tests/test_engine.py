"""The cached engine gives exactly the losses and decisions of the plain evaluator, with less work."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from optsearch.core.allocation import Allocation, constant_allocation
from optsearch.core.confidence import AcceptanceTest
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.data import Dataset
from optsearch.evaluators.engine import CachedEvaluator
from optsearch.evaluators.keras import KerasEvaluator, activation_ranges
from optsearch.methods.opt_search import SearchSettings, opt_search
from optsearch.model.graph import QuantizedModel, quantized_model

L = keras.layers
N = 240


def _sequential() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, activation="relu", name="c1"),
            L.BatchNormalization(name="bn1"),
            L.Conv2D(6, 3, activation="relu", name="c2"),
            L.Flatten(name="flat"),
            L.Dense(4, activation="softmax", name="out"),
        ]
    )


def _branched() -> keras.Model:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    stem = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    a = L.Conv2D(3, 1, activation="relu", name="a")(stem)
    b = L.Conv2D(3, 3, padding="same", name="b")(L.MaxPooling2D(1, name="pool")(stem))
    merged = L.Concatenate(name="cat")([a, L.ReLU(name="b_relu")(b)])
    return keras.Model(inputs, L.Dense(4, name="out")(L.GlobalAveragePooling2D(name="gap")(merged)))


def _data(model: keras.Model) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8, 8, 1)).astype(np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    y[:12] = (y[:12] + 1) % 4
    return Dataset(x, y.astype(np.int64), "synthetic")


@pytest.fixture(scope="module", params=["sequential", "branched"])
def setup(request: pytest.FixtureRequest) -> tuple[QuantizedModel, Dataset]:
    model = _sequential() if request.param == "sequential" else _branched()
    return quantized_model(model), _data(model)


def _magnitudes(qmodel: QuantizedModel, data: Dataset) -> dict[TensorId, float]:
    ranges = activation_ranges(qmodel, data)
    return qmodel.magnitudes(ranges)


def test_split_reproduces_the_full_model(setup: tuple[QuantizedModel, Dataset]) -> None:
    qmodel, data = setup
    qmodel.set_formats({t: Format(5, 3) for t in qmodel.tensors})
    full = qmodel.keras_model.predict(data.x, verbose=0)
    for tensor in qmodel.tensors:
        prefix, suffix = qmodel.split(tensor)
        np.testing.assert_array_equal(suffix.predict(prefix.predict(data.x, verbose=0), verbose=0), full)
    qmodel.set_formats({})


def test_every_candidate_loss_is_identical(setup: tuple[QuantizedModel, Dataset]) -> None:
    qmodel, data = setup
    plain = KerasEvaluator(qmodel, data, batch_size=64)
    engine = CachedEvaluator(qmodel, data, batch_size=64, cache_mb=0.05)  # part cached, part recomputed
    decided = {t: Format(6, 3) for t in qmodel.tensors[:2]}
    for tensor in qmodel.tensors:
        for fmt in (Format(1, 0), Format(2, 1), Format(3, 2), Format(6, 4), Format(9, 6)):
            formats = {**decided, tensor: fmt}
            want = plain.evaluate(formats)
            got = engine.evaluate(formats, varying=tensor)
            assert (got.loss, got.correct, got.samples, got.exact) == (
                want.loss,
                want.correct,
                want.samples,
                True,
            )
    assert engine.memo_hits > 0  # e.g. the pruned format of different tensors' contexts repeat nothing, but
    # activation formats at the same F that cover the range share one evaluation


SETTINGS = [
    {},
    {"independent": True, "bw0": {"W": 8, "B": 8, "A": 8}, "allocation": constant_allocation(1.0)},
    # Types searched first take the small budgets (with the paper's ranges, A first leaves W nothing).
    {
        "type_order": ("A", "W", "B"),
        "allocation": {
            "A": Allocation("linear", 0.0, 0.5),
            "W": Allocation("linear", 0.5, 1.0),
            "B": Allocation("constant", 1.0, 1.0),
        },
    },
    {"layer_order": "reverse"},
    {"interleave": True, "allocation": constant_allocation(1.0)},
]


@pytest.mark.parametrize(
    "options", SETTINGS, ids=["dependent", "independent", "AWB", "reverse", "interleave"]
)
def test_searches_decide_identically(
    setup: tuple[QuantizedModel, Dataset], options: dict[str, object]
) -> None:
    qmodel, data = setup
    settings = SearchSettings(eps=0.05, **options)  # type: ignore[arg-type]
    tensors = [q.tensors() for q in qmodel.layers]
    magnitudes = _magnitudes(qmodel, data)
    plain = opt_search(KerasEvaluator(qmodel, data, batch_size=64), tensors, magnitudes, settings)
    engine_eval = CachedEvaluator(qmodel, data, batch_size=64)
    fast = opt_search(engine_eval, tensors, magnitudes, settings)
    assert [(d.tensor, d.fmt, d.loss, d.rule) for d in fast.decisions] == [
        (d.tensor, d.fmt, d.loss, d.rule) for d in plain.decisions
    ]
    assert engine_eval.passes <= plain.evaluations
    if options.get("layer_order") != "reverse":  # a later layer's cut is computed from the previous one
        assert engine_eval.incremental_fills > 0


def test_a_tight_cache_and_no_incremental_prefix_decide_identically(
    setup: tuple[QuantizedModel, Dataset],
) -> None:
    qmodel, data = setup
    settings = SearchSettings(eps=0.05)
    tensors = [q.tensors() for q in qmodel.layers]
    magnitudes = _magnitudes(qmodel, data)
    full = opt_search(CachedEvaluator(qmodel, data, batch_size=64), tensors, magnitudes, settings)
    for engine in (
        CachedEvaluator(qmodel, data, batch_size=64, cache_mb=0.02),  # part of the chunks recomputed
        CachedEvaluator(qmodel, data, batch_size=64, incremental=False, first_chunk=64),
    ):
        other = opt_search(engine, tensors, magnitudes, settings)
        assert [(d.tensor, d.fmt, d.loss) for d in other.decisions] == [
            (d.tensor, d.fmt, d.loss) for d in full.decisions
        ]


def _as_list(values: object) -> list[np.ndarray]:
    return [np.asarray(v) for v in values] if isinstance(values, (list, tuple)) else [np.asarray(values)]


def test_a_segment_carries_one_cut_to_the_next(setup: tuple[QuantizedModel, Dataset]) -> None:
    """Where a later cut is computable from an earlier one, the segment reproduces it exactly."""
    qmodel, data = setup
    qmodel.set_formats({t: Format(5, 3) for t in qmodel.tensors})
    chain = [t for q in qmodel.layers for t in q.tensors() if t.kind != "B"]  # W1 A1 W2 A2 ...
    sequential = all(len(qmodel.cut_tensors(t)) == 1 for t in chain)
    found = 0
    for start, end in itertools.combinations(chain, 2):
        segment = qmodel.segment(start, end)
        if sequential:  # a chain: every later cut follows from every earlier one, never the reverse
            assert segment is not None and qmodel.segment(end, start) is None, (start, end)
        if segment is None:
            continue
        found += 1
        begin, _ = qmodel.split(start)
        finish, _ = qmodel.split(end)
        cut = _as_list(begin.predict(data.x, verbose=0))
        assert segment.sources == len(cut)
        used = [cut[i] for i in segment.inputs]
        computed = [] if segment.model is None else _as_list(segment.model.predict(used, verbose=0))
        got = [cut[i] if kind == "source" else computed[i] for kind, i in segment.picks]
        for a, b in zip(got, _as_list(finish.predict(data.x, verbose=0)), strict=True):
            np.testing.assert_array_equal(a, b)
    assert found > 0
    # The branched model's second branch ('b') is not computable from the first branch's cut.
    if not sequential:
        assert qmodel.segment(TensorId("b", "A"), TensorId("a", "W")) is None
    qmodel.set_formats({})


def test_memo_by_content() -> None:
    model = _sequential()
    qmodel, data = quantized_model(model), _data(model)
    engine = CachedEvaluator(qmodel, data, batch_size=64)
    act = TensorId("c2", "A")
    engine.evaluate({act: Format(12, 5)}, varying=act)
    engine.evaluate({act: Format(16, 5)}, varying=act)  # both cover the range at F = 5: the same output
    assert (engine.passes, engine.memo_hits) == (1, 1)
    weights = TensorId("c1", "W")
    z = qmodel.largest_magnitude(weights)
    tiny = Format(2, int(np.floor(-np.log2(z))) - 3)  # rounds every weight to zero
    engine.evaluate({weights: tiny}, varying=weights)
    engine.evaluate({weights: Format(1, 0)}, varying=weights)  # pruned: also all zeros
    assert (engine.passes, engine.memo_hits) == (2, 2)


def test_guarded_searches_decide_as_without_early_stopping(setup: tuple[QuantizedModel, Dataset]) -> None:
    """Under the guarded criterion, the engine (early rejection, memo, incremental cuts) makes the
    decisions of an evaluator that sees every sample of every candidate (the naive one's counts)."""
    qmodel, data = setup
    acceptance = AcceptanceTest("guarded", 0.9)
    settings = SearchSettings(eps=0.2, criterion="guarded", confidence=0.9)
    tensors = [q.tensors() for q in qmodel.layers]
    magnitudes = _magnitudes(qmodel, data)

    class Full:
        """The engine's evaluator with early stopping switched off (max_loss, must_beat dropped)."""

        def __init__(self) -> None:
            self.inner = KerasEvaluator(qmodel, data, batch_size=64, acceptance=acceptance)

        @property
        def float_accuracy(self) -> float:
            return self.inner.float_accuracy

        def evaluate(self, formats: dict[TensorId, object], **_: object) -> object:
            return self.inner.evaluate(formats)  # type: ignore[arg-type]

    full = opt_search(Full(), tensors, magnitudes, settings)  # type: ignore[arg-type]
    engine_eval = CachedEvaluator(qmodel, data, batch_size=64, acceptance=acceptance)
    fast = opt_search(engine_eval, tensors, magnitudes, settings)
    assert [(d.tensor, d.fmt, d.loss, d.bound, d.rule) for d in fast.decisions] == [
        (d.tensor, d.fmt, d.loss, d.bound, d.rule) for d in full.decisions
    ]
    assert all(d.bound is not None and d.bound >= d.loss for d in fast.decisions if d.evaluations)
    assert engine_eval.samples_run < full.evaluations * len(data)
