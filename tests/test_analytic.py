"""Analytic precisions (issue 23): noise gains, the mismatch bound, B_min, Park's classifier floor."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import images, tiny_model
from hypothesis import given
from hypothesis import strategies as st

from optsearch.core.analytic import (
    GAIN_CONSTANT,
    NoiseGains,
    analytic_formats,
    choose_b_min,
    classifier_floors,
    classifier_min_bits,
    classifier_min_bitwidth,
    equalised_bitwidths,
    mismatch_bound,
    mismatch_budget,
    noise_variance,
    normalised_gains,
    range_scale,
    tensor_bounds,
)
from optsearch.core.fixedpoint import Format, start_format
from optsearch.core.tensors import TensorId
from optsearch.model.graph import QuantizedModel, quantized_model
from optsearch.model.noise_gain import classifier, needs_pairs, noise_gains, park_floors

L = keras.layers


def _linear_net(hidden: int | None, classes: int = 4, inputs: int = 5, seed: int = 0) -> keras.Model:
    """``Dense(hidden) -> Dense(classes, softmax)`` (or one Dense), all linear, non-zero biases."""
    keras.utils.set_random_seed(seed)
    layers: list[keras.layers.Layer] = [keras.Input((inputs,))]
    if hidden is not None:
        layers.append(L.Dense(hidden, name="h"))
    layers.append(L.Dense(classes, activation="softmax", name="d"))
    model = keras.Sequential(layers)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0.0, 0.3, bias.shape)])
    return model


def _margins(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yhat, D = z_yhat - z, mask of i != yhat)."""
    rows = np.arange(len(z))
    yhat = z.argmax(axis=1)
    others = np.ones_like(z, dtype=bool)
    others[rows, yhat] = False
    return yhat, z[rows, yhat][:, None] - z, others


def _measured_mismatch(qmodel: QuantizedModel, formats: dict[TensorId, Format], x: np.ndarray) -> float:
    """Share of samples whose top-1 class changes when ``formats`` are applied."""
    qmodel.set_formats({})
    reference = qmodel.keras_model.predict(x, verbose=0).argmax(axis=1)
    qmodel.set_formats(formats)
    try:
        return float(np.mean(qmodel.keras_model.predict(x, verbose=0).argmax(axis=1) != reference))
    finally:
        qmodel.set_formats({})


# --------------------------------------------------------------------------------------------------
# Noise gains of linear layers: hand computation and Monte Carlo


def test_linear_gains_match_a_hand_computation() -> None:
    """Two linear Dense layers: d(z_yhat - z_i)/dA_h = W2[:, yhat] - W2[:, i]; the kernel gradient is
    the input times that; the bias gradient equals the activation gradient (Sakr et al. 2017, Thm. 1)."""
    model = _linear_net(hidden=3)
    x = np.random.default_rng(1).normal(size=(70, 5)).astype(np.float32)
    gains = noise_gains(quantized_model(model), x, batch_size=16)  # 70 = 4 full batches + 6

    (w1, b1), (w2, b2) = (layer.get_weights() for layer in model.layers)
    x64 = x.astype(np.float64)
    h = x64 @ w1 + b1
    yhat, d, others = _margins(h @ w2 + b2)
    inv = np.where(others, GAIN_CONSTANT / np.where(others, d, 1.0) ** 2, 0.0)  # [n, classes]
    # ||W2[:, yhat] - W2[:, i]||^2 for every sample and class i
    diff = w2.T[yhat][:, None, :] - w2.T[None, :, :]
    back = np.sum(diff**2, axis=2)  # [n, classes]
    expected = {
        TensorId("d", "W"): np.mean(2 * np.sum(h**2, axis=1) * inv.sum(axis=1)),
        TensorId("d", "B"): np.mean(2 * inv.sum(axis=1)),
        TensorId("d", "A"): np.mean(2 * inv.sum(axis=1)),
        TensorId("h", "W"): np.mean(np.sum(x64**2, axis=1) * np.sum(back * inv, axis=1)),
        TensorId("h", "B"): np.mean(np.sum(back * inv, axis=1)),
        TensorId("h", "A"): np.mean(np.sum(back * inv, axis=1)),
    }
    assert gains.samples == 70 and gains.ambiguous == 0
    assert set(gains.gains) == set(expected)
    for tensor, value in expected.items():
        assert gains.gains[tensor] == pytest.approx(value, rel=1e-4), tensor


def test_dense_gain_matches_monte_carlo_of_uniform_noise() -> None:
    """Inject noise uniform on [-Delta/2, Delta/2] into W, B and A (the logits) of one Dense layer:
    E_q[dD_i^2] / (2 Delta^2 D_i^2), averaged like E, is the gain; and the mismatch rate of the noisy
    layer stays below the bound sum Delta^2 E."""
    model = _linear_net(hidden=None)
    x = np.random.default_rng(2).normal(size=(60, 5)).astype(np.float32)
    gains = noise_gains(quantized_model(model), x).gains
    w, b = model.layers[0].get_weights()
    x64 = x.astype(np.float64)
    yhat, d, others = _margins(x64 @ w + b)
    rng = np.random.default_rng(3)
    draws, delta = 4000, 0.05

    def gain_of(dz: np.ndarray) -> float:  # dz: [draws, n, classes] noise on the scores
        dd = np.take_along_axis(dz, yhat[None, :, None], axis=2) - dz
        per = np.mean(dd**2, axis=0) / (2 * delta**2 * np.where(others, d, 1.0) ** 2)
        return float(np.mean(np.sum(np.where(others, per, 0.0), axis=1)))

    noise_w = rng.uniform(-delta / 2, delta / 2, size=(draws, *w.shape))
    noise_b = rng.uniform(-delta / 2, delta / 2, size=(draws, 1, w.shape[1]))
    monte_carlo = {
        TensorId("d", "W"): gain_of(np.einsum("nk,rkc->rnc", x64, noise_w)),
        TensorId("d", "B"): gain_of(np.broadcast_to(noise_b, (draws, *d.shape))),
        TensorId("d", "A"): gain_of(rng.uniform(-delta / 2, delta / 2, size=(draws, *d.shape))),
    }
    for tensor, value in monte_carlo.items():
        assert gains[tensor] == pytest.approx(value, rel=0.05), tensor
    assert np.var(noise_w) == pytest.approx(noise_variance(delta), rel=0.02)

    # The bound holds for the noisy layer, at a step where it is informative (bound = 0.3).
    step = math.sqrt(0.3 / sum(gains.values()))
    noisy = (
        x64 @ w
        + b
        + np.einsum("nk,rkc->rnc", x64, rng.uniform(-step / 2, step / 2, size=(1000, *w.shape)))
        + rng.uniform(-step / 2, step / 2, size=(1000, 1, w.shape[1]))
        + rng.uniform(-step / 2, step / 2, size=(1000, *d.shape))
    )
    flipped = float(np.mean(noisy.argmax(axis=2) != yhat[None, :]))
    formats_bound = step**2 * sum(gains.values())
    assert 0 < flipped <= formats_bound == pytest.approx(0.3)


def test_noise_gains_use_float_values_and_a_subset() -> None:
    """Gains are the float model's whatever formats the quantized model holds, and any subset of
    tensors gives the same values as the whole set."""
    qmodel = quantized_model(_linear_net(hidden=3))
    x = np.random.default_rng(4).normal(size=(20, 5)).astype(np.float32)
    full = noise_gains(qmodel, x)
    formats = {t: Format(3, 1) for t in qmodel.tensors}
    qmodel.set_formats(formats)
    subset = [TensorId("h", "A"), TensorId("d", "W")]
    part = noise_gains(qmodel, x, tensors=subset)
    assert qmodel.formats == formats
    assert list(part.gains) == subset
    for tensor in subset:
        assert part.gains[tensor] == pytest.approx(full.gains[tensor], rel=1e-9)
    with pytest.raises(KeyError, match="nope:A"):
        noise_gains(qmodel, x, tensors=[TensorId("nope", "A")])


def _shortcut_net(size: int) -> keras.Model:
    """ResNet's strided 1x1 shortcut beside a 3x3 path, on ``size`` x ``size`` inputs."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((size, size, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c0")(inputs)
    main = L.Conv2D(8, 3, strides=2, padding="same", name="main")(x)
    short = L.Conv2D(8, 1, strides=2, name="short")(x)
    x = L.ReLU(name="r")(L.Add(name="add")([main, short]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(4, name="out")(x))


def test_noise_gains_of_a_strided_1x1_shortcut() -> None:
    """TensorFlow 2.21's oneDNN filter gradient of a 1x1 stride-2 convolution aborts the process on
    one 16x16 sample: such models are differentiated in pairs, with the same gains as one by one
    where one by one works (8x8)."""
    qmodel = quantized_model(_shortcut_net(16))
    assert needs_pairs(qmodel.keras_model)
    x = np.random.default_rng(3).normal(size=(6, 16, 16, 3)).astype(np.float32)
    gains = noise_gains(qmodel, x)
    assert all(np.isfinite(g) and g > 0 for g in gains.gains.values())
    small = quantized_model(_shortcut_net(8))
    x8 = x[:, :8, :8]
    paired, single = noise_gains(small, x8, pairs=True), noise_gains(small, x8, pairs=False)
    for tensor, gain in single.gains.items():
        assert paired.gains[tensor] == pytest.approx(gain, rel=1e-6)
    assert not needs_pairs(tiny_model())


# --------------------------------------------------------------------------------------------------
# The bound against measured mismatch on a tiny CNN


@pytest.fixture(scope="module")
def tiny() -> tuple[QuantizedModel, np.ndarray, NoiseGains, dict[TensorId, float]]:
    """The shared tiny CNN (conv, pool, conv-BN-ReLU, Dense with its softmax split off), non-zero
    biases, its gains and every tensor's largest magnitude on the data."""
    model = tiny_model()
    rng = np.random.default_rng(5)
    for name in ("c1", "c2", "out"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, rng.normal(0.0, 0.2, bias.shape)])
    qmodel = quantized_model(model)
    x = images(300, seed=6)
    activations = qmodel.activation_probe().predict(x, verbose=0)
    ranges = {q.name: float(np.max(np.abs(a))) for q, a in zip(qmodel.layers, activations, strict=True)}
    return qmodel, x, noise_gains(qmodel, x, batch_size=64), qmodel.magnitudes(ranges)


def test_bound_is_an_upper_bound_of_measured_mismatch(
    tiny: tuple[QuantizedModel, np.ndarray, NoiseGains, dict[TensorId, float]],
) -> None:
    """Random formats (BW 3-8, F from the range): the measured mismatch never exceeds the bound."""
    qmodel, x, gains, magnitudes = tiny
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(12):
        formats = {t: start_format(z, int(rng.integers(3, 9))) for t, z in magnitudes.items()}
        rows.append((mismatch_bound(gains, formats, magnitudes), _measured_mismatch(qmodel, formats, x)))
    for bound, measured in rows:
        assert measured <= bound, rows
    informative = [(b, m) for b, m in rows if b < 0.5]
    assert len(informative) >= 6, rows
    assert any(m > 0 for b, m in informative), rows  # the check is not vacuous


def test_chosen_b_min_meets_its_budget_on_the_tiny_cnn(
    tiny: tuple[QuantizedModel, np.ndarray, NoiseGains, dict[TensorId, float]],
) -> None:
    qmodel, x, gains, magnitudes = tiny
    for eps in (0.02, 0.1):
        plan = choose_b_min(gains, magnitudes, mismatch_budget(eps, 1.0))
        assert plan.bound <= eps
        assert _measured_mismatch(qmodel, plan.formats, x) <= plan.bound
        for tensor, fmt in plan.formats.items():
            assert fmt == start_format(magnitudes[tensor], fmt.bw)
            assert fmt.bw == max(2, plan.b_min + plan.offsets[tensor])
        looser = analytic_formats(gains, magnitudes, plan.b_min - 1)
        if looser != plan.formats:  # below, every tensor is at 2 bits already
            assert mismatch_bound(gains, looser, magnitudes) > eps


def test_a_near_zero_gain_does_not_hold_the_others_up() -> None:
    """Criterion 1 anchors every tensor to the smallest gain: one tensor with a near-zero gain would
    put the others ~20 bits above it. Where B_min = 2 fits, the smallest-gain tensors are held at 2
    bits instead and the others lowered while the bound fits; the terms of those above 2 stay equal."""
    a, b, c = TensorId("l", "W"), TensorId("l", "A"), TensorId("m", "W")
    gains = NoiseGains({a: 1e-12, b: 1.0, c: 4.0}, samples=100)
    magnitudes = {a: 1.0, b: 1.0, c: 1.0}
    plan = choose_b_min(gains, magnitudes, budget=0.01)
    assert plan.formats[a].bw == 2
    assert plan.b_min < 2
    assert plan.formats[c].bw == plan.formats[b].bw + 1  # sqrt(4) = 2: one bit more
    assert plan.bound <= 0.01
    lower = {t: Format(max(2, f.bw - 1), f.f - (f.bw > 2)) for t, f in plan.formats.items()}
    assert mismatch_bound(gains, lower, magnitudes) > 0.01  # one bit less everywhere: over
    paper = analytic_formats(gains, magnitudes, 2)  # the paper's smallest B_min
    assert paper[b].bw >= 2 + 19 and paper[b].bw > plan.formats[b].bw + 10


# --------------------------------------------------------------------------------------------------
# The bound's arithmetic


def test_bound_terms_are_lsb_squared_times_gain() -> None:
    w, b, a = TensorId("l", "W"), TensorId("l", "B"), TensorId("l", "A")
    gains = NoiseGains({w: 3.0, b: 2.0, a: 5.0}, samples=100, ambiguous=1)
    assert math.isclose(GAIN_CONSTANT, 1 / 12 / 2)  # uniform noise variance, halved by symmetry
    assert tensor_bounds(gains, {w: Format(8, 4)}) == {w: 3.0 / 256}
    assert mismatch_bound(gains, {w: Format(8, 4), a: Format(6, -1)}) == pytest.approx(
        0.01 + 3.0 / 256 + 5.0 * 4
    )
    assert mismatch_bound(gains.gains, {}) == 0.0  # every tensor float
    assert mismatch_bound(gains, {b: Format(1, 0)}) == math.inf  # pruning is no small noise
    assert mismatch_bound(gains, {b: Format(1, 0)}, magnitudes={b: 0.0}) == pytest.approx(0.01)
    with pytest.raises(KeyError, match="x:W"):
        mismatch_bound(gains, {TensorId("x", "W"): Format(8, 4)})


def test_noise_gains_round_trip_and_validation() -> None:
    gains = NoiseGains({TensorId("c1", "W"): 0.25, TensorId("c1", "A"): 1e-3}, samples=8, ambiguous=2)
    assert NoiseGains.from_dict(gains.as_dict()) == gains
    assert gains.ambiguous_fraction == 0.25
    with pytest.raises(ValueError, match="finite"):
        NoiseGains({TensorId("c1", "W"): math.inf}, samples=1)
    with pytest.raises(ValueError, match="ambiguous"):
        NoiseGains({}, samples=1, ambiguous=2)


def test_eps_read_as_a_mismatch_budget_relative_to_float_accuracy() -> None:
    """p_m <= eps * a keeps (a - a_q) / a <= eps: only changed predictions can lose accuracy."""
    assert mismatch_budget(0.01, 0.9) == pytest.approx(0.009)
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 10, 1000)
    predictions = np.where(rng.random(1000) < 0.8, labels, (labels + 1) % 10)
    a = np.mean(predictions == labels)
    for eps in (0.01, 0.05, 0.2):
        changed = predictions.copy()
        flips = rng.choice(1000, int(mismatch_budget(eps, a) * 1000), replace=False)
        changed[flips] = (changed[flips] + 3) % 10
        assert (a - np.mean(changed == labels)) / a <= eps
    with pytest.raises(ValueError, match="eps"):
        mismatch_budget(0.0, 0.9)


# --------------------------------------------------------------------------------------------------
# B_min selection on synthetic gains

_positive = st.floats(1e-4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def _problems(draw: st.DrawFn) -> tuple[dict[TensorId, float], dict[TensorId, float], float]:
    count = draw(st.integers(1, 8))
    tensors = [TensorId(f"l{i // 3}", "WBA"[i % 3]) for i in range(count)]  # type: ignore[arg-type]
    gains = {t: draw(_positive) for t in tensors}
    magnitudes = {t: draw(st.one_of(st.just(0.0), st.floats(1e-3, 1e2))) for t in tensors}
    return gains, magnitudes, draw(st.floats(1e-4, 0.5))


@given(_problems())
def test_chosen_b_min_is_the_smallest_that_fits(
    problem: tuple[dict[TensorId, float], dict[TensorId, float], float],
) -> None:
    gains, magnitudes, budget = problem
    plan = choose_b_min(gains, magnitudes, budget)
    assert plan.bound == mismatch_bound(gains, plan.formats, magnitudes) <= budget
    if plan.b_min > 2:
        looser = analytic_formats(gains, magnitudes, plan.b_min - 1)
        assert mismatch_bound(gains, looser, magnitudes) > budget
    assert choose_b_min(gains, magnitudes, 2 * budget).b_min <= plan.b_min  # monotone in the budget


@given(_problems())
def test_equalised_precisions_equalise_the_bound_terms(
    problem: tuple[dict[TensorId, float], dict[TensorId, float], float],
) -> None:
    """B_t = B_min + round(log2 sqrt(E_t / E_min)) on range-normalised gains makes every term
    Delta_t^2 E_t lie within a factor 2 of the smallest-gain tensor's (paper rule: Delta = R 2^-(B-1))."""
    gains, magnitudes, _ = problem
    live = {t: z for t, z in magnitudes.items() if z > 0}
    formats = analytic_formats(gains, magnitudes, b_min=6)
    assert all(formats[t] == Format(1, 0) for t in magnitudes if t not in live)
    if not live:
        return
    normalised = {t: gains[t] * range_scale(z) ** 2 for t, z in live.items()}
    assert normalised_gains(gains, magnitudes) == pytest.approx(normalised)
    smallest = min(normalised, key=normalised.__getitem__)
    terms = tensor_bounds(gains, {t: formats[t] for t in live})
    for tensor, term in terms.items():
        offset = math.floor(0.5 * math.log2(normalised[tensor] / normalised[smallest]) + 0.5)
        assert formats[tensor].bw == 6 + offset
        assert 0.5 <= term / terms[smallest] <= 2.0


def test_equalised_bitwidths_on_the_seed_table() -> None:
    """Sakr & Shanbhag (2019), CIFAR-10 ResNet layer 1-2 weights (seed 000): 2.41e3 and 9.80e2 differ
    by one bit, 0.5 * log2(2.41e3 / 9.80e2) = 0.65 -> 1."""
    w1, w2 = TensorId("l1", "W"), TensorId("l2", "W")
    assert equalised_bitwidths({w1: 2.41e3, w2: 9.80e2}, 10) == {w1: 11, w2: 10}
    assert equalised_bitwidths({w1: 0.0, w2: 4.0}, 3) == {w1: 3, w2: 3}


def test_b_min_errors_say_what_to_do() -> None:
    t = TensorId("l", "W")
    with pytest.raises(ValueError, match="raise eps"):
        choose_b_min({t: 1e30}, {t: 1.0}, 1e-6)
    with pytest.raises(ValueError, match="tie"):
        choose_b_min(NoiseGains({t: 1.0}, samples=10, ambiguous=2), {t: 1.0}, 0.1)


# --------------------------------------------------------------------------------------------------
# Park et al. (2018), eq. 4-5: the classifier's floor


@pytest.mark.parametrize(("classes", "bits", "bw"), [(10, 5.1699, 6), (1000, 11.9643, 12)])
def test_park_floor_on_a_dense_classifier(classes: int, bits: float, bw: int) -> None:
    model = keras.Sequential([keras.Input((16,)), L.Dense(classes, activation="softmax", name="fc")])
    qmodel = quantized_model(model)
    layer, found = classifier(qmodel)
    assert (layer.name, found) == ("fc", classes)
    assert classifier_min_bits(classes) == pytest.approx(bits, abs=1e-4)
    assert classifier_min_bitwidth(classes) == bw
    assert 0.5 / (classes - 1) >= 2.0 ** -(bw - 1) and 0.5 / (classes - 1) < 2.0 ** -(bw - 2)  # eq. 4
    floors = park_floors(qmodel)
    assert floors == dict.fromkeys(qmodel.layer("fc").tensors(), bw)
    gains = dict.fromkeys(qmodel.tensors, 1e-6)
    plan = choose_b_min(gains, dict.fromkeys(qmodel.tensors, 1.0), 0.1, floors=floors)
    assert plan.b_min == 2 and all(fmt.bw == bw for fmt in plan.formats.values())


def test_park_floor_finds_logits_before_a_separate_softmax() -> None:
    """The zoo's classifier: Dense ``logits`` then a Softmax layer; eq. 4 holds with equality at 3."""
    inputs = keras.Input((6,))
    hidden = L.Dense(8, activation="relu", name="h")(inputs)
    outputs = L.Softmax(name="softmax")(L.Dense(3, name="logits")(hidden))
    layer, classes = classifier(quantized_model(keras.Model(inputs, outputs)))
    assert (layer.name, classes) == ("logits", 3)
    assert classifier_min_bitwidth(3) == 3  # eq. 4 allows equality; eq. 5's ">" would ask for 4
    assert classifier_floors([TensorId("logits", "W")], 3, alpha=0.25) == {TensorId("logits", "W"): 4}
