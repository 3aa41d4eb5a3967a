"""The guarded acceptance test's statistics (issue 20): exact binomial checks, properties, coverage."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from optsearch.core.confidence import (
    SIZE_TABLE_ACCURACIES,
    SIZE_TABLE_SAMPLES,
    AcceptanceTest,
    CriterionError,
    accuracy_interval,
    best_case_upper_bound,
    certifiable_loss,
    clopper_pearson_lower,
    clopper_pearson_upper,
    loss_interval,
    loss_lower_bound,
    loss_upper_bound,
    render_size_table,
    resolution,
    samples_needed,
    size_table,
    validate_confidence,
)
from optsearch.core.errors import OptsearchError
from optsearch.methods.evaluator import relative_loss, settled

confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99])


@st.composite
def counts(draw: st.DrawFn, max_correct: int = 5000, max_wrong: int = 2000) -> tuple[int, int, int, int]:
    """(losses, gains, float_correct, samples) that paired outcomes can produce."""
    float_correct = draw(st.integers(1, max_correct))
    float_wrong = draw(st.integers(0, max_wrong))
    losses = draw(st.integers(0, min(float_correct, 200)))
    gains = draw(st.integers(0, min(float_wrong, 200)))
    return losses, gains, float_correct, float_correct + float_wrong


# --- exact binomial computations -----------------------------------------------------------------


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (1, 10), (3, 50), (37, 3850), (199, 200)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_limits_are_the_exact_binomial_tails(
    successes: int, trials: int, confidence: float
) -> None:
    """P(X <= x | U) = 1 - conf and P(X >= x | lo) = 1 - conf: the definition of the exact limits."""
    upper = clopper_pearson_upper(successes, trials, confidence)
    assert upper == stats.beta.ppf(confidence, successes + 1, trials - successes)
    assert stats.binom.cdf(successes, trials, upper) == pytest.approx(1 - confidence, rel=1e-9)
    lower = clopper_pearson_lower(successes, trials, confidence)
    if successes == 0:
        assert lower == 0.0
    else:
        assert stats.binom.sf(successes - 1, trials, lower) == pytest.approx(1 - confidence, rel=1e-9)
    assert lower <= successes / trials <= upper


def test_clopper_pearson_at_the_ends() -> None:
    assert clopper_pearson_upper(10, 10, 0.95) == 1.0
    assert clopper_pearson_lower(0, 10, 0.95) == 0.0
    assert clopper_pearson_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-12)


@given(counts(), confidences)
def test_without_gains_the_bound_is_clopper_pearson_on_the_losses(
    c: tuple[int, int, int, int], confidence: float
) -> None:
    losses, _, float_correct, samples = c
    bound = loss_upper_bound(losses, 0, float_correct, samples, confidence)
    if losses == float_correct:
        assert bound == 1.0
    else:
        assert bound == stats.beta.ppf(confidence, losses + 1, float_correct - losses)


@pytest.mark.parametrize("float_correct", [1, 37, 3850, 49500])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_the_bound_of_a_candidate_that_flips_nothing(float_correct: int, confidence: float) -> None:
    """``1 - (1 - conf)^(1/C)``: about 3 samples of relative loss at 95%, and certifiable_loss agrees."""
    bound = loss_upper_bound(0, 0, float_correct, float_correct + 10, confidence)
    assert bound == pytest.approx(1 - (1 - confidence) ** (1 / float_correct), rel=1e-12)
    samples = 2 * float_correct
    assert certifiable_loss(samples, 0.5, confidence) == pytest.approx(bound, rel=1e-12)


def test_a_worked_example() -> None:
    """L = 37, G = 12, C = 3850 (n = 5000): estimate 0.649%, bound by hand from the two exact limits."""
    upper = stats.beta.ppf(0.95, 38, 3850 - 37)
    v = stats.beta.ppf(0.05, 12, 3862 - 12 + 1)
    expected = 25 / 3850 + math.sqrt((upper - 37 / 3850) ** 2 + (12 / 3850 - v / (1 - v)) ** 2)
    assert loss_upper_bound(37, 12, 3850, 5000, 0.95) == pytest.approx(expected, rel=1e-12)
    assert loss_upper_bound(37, 12, 3850, 5000, 0.95) == pytest.approx(0.009783, abs=1e-6)
    assert loss_upper_bound(37, 0, 3850, 5000, 0.95) > 37 / 3850
    assert loss_upper_bound(37, 12, 3850, 5000, 0.95) < loss_upper_bound(37, 0, 3850, 5000, 0.95)


# --- properties ----------------------------------------------------------------------------------


@given(counts(), confidences)
def test_the_bound_is_monotone_in_losses_and_gains(c: tuple[int, int, int, int], confidence: float) -> None:
    losses, gains, float_correct, samples = c
    bound = loss_upper_bound(losses, gains, float_correct, samples, confidence)
    if losses < float_correct:
        assert loss_upper_bound(losses + 1, gains, float_correct, samples, confidence) >= bound
    if gains < samples - float_correct:
        assert loss_upper_bound(losses, gains + 1, float_correct, samples, confidence) <= bound


@given(counts())
def test_the_bound_grows_with_confidence(c: tuple[int, int, int, int]) -> None:
    bounds = [loss_upper_bound(*c, conf) for conf in (0.6, 0.8, 0.9, 0.95, 0.99)]
    assert bounds == sorted(bounds)


@given(counts(), confidences)
def test_the_bound_lies_between_the_estimate_and_one(c: tuple[int, int, int, int], confidence: float) -> None:
    """So the guarded test never accepts what the paper's test rejects."""
    losses, gains, float_correct, samples = c
    bound = loss_upper_bound(losses, gains, float_correct, samples, confidence)
    assert (losses - gains) / float_correct <= bound <= 1.0
    guarded, paper = AcceptanceTest("guarded", confidence), AcceptanceTest("paper", confidence)
    for budget in (0.0, 0.005, 0.01, 0.05):
        if guarded.accepts(losses, gains, float_correct, samples, budget):
            assert paper.accepts(losses, gains, float_correct, samples, budget)


@given(counts(), confidences)
def test_the_two_sided_interval(c: tuple[int, int, int, int], confidence: float) -> None:
    lower, upper = loss_interval(*c, confidence)
    losses, gains, float_correct, _ = c
    assert lower <= (losses - gains) / float_correct <= upper
    assert upper == loss_upper_bound(*c, (1 + confidence) / 2)
    assert lower == loss_lower_bound(*c, (1 + confidence) / 2)


def test_accuracy_interval_is_two_sided_clopper_pearson() -> None:
    lower, upper = accuracy_interval(4900, 5000, 0.95)
    assert lower == stats.beta.ppf(0.025, 4900, 101)
    assert upper == stats.beta.ppf(0.975, 4901, 100)
    assert accuracy_interval(5000, 5000, 0.95)[1] == 1.0
    assert accuracy_interval(0, 5000, 0.95)[0] == 0.0


# --- early rejection ------------------------------------------------------------------------------


@st.composite
def partial(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    """A partial evaluation: (losses, gains, float_correct, samples, unseen float-correct, unseen wrong)."""
    float_correct = draw(st.integers(1, 9))
    float_wrong = draw(st.integers(0, 7))
    unseen_correct = draw(st.integers(0, float_correct))
    unseen_wrong = draw(st.integers(0, float_wrong))
    losses = draw(st.integers(0, float_correct - unseen_correct))
    gains = draw(st.integers(0, float_wrong - unseen_wrong))
    return losses, gains, float_correct, float_correct + float_wrong, unseen_correct, unseen_wrong


@given(partial(), confidences, st.sampled_from(["guarded", "losses", "paper"]))
def test_best_case_is_the_smallest_statistic_of_every_completion(
    p: tuple[int, int, int, int, int, int], confidence: float, criterion: str
) -> None:
    """Brute force over all completions: the best case is at most each, and one attains it."""
    losses, gains, float_correct, samples, unseen_correct, unseen_wrong = p
    test = AcceptanceTest(criterion, confidence)  # type: ignore[arg-type]
    best = test.best_case(losses, gains, float_correct, samples, unseen_correct, unseen_wrong)
    completions = [
        test.statistic(losses + x, gains + y, float_correct, samples)
        for x in range(unseen_correct + 1)
        for y in range(unseen_wrong + 1)
    ]
    assert best == min(completions)
    if criterion == "guarded":
        assert best == best_case_upper_bound(*p, confidence)


outcomes = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30).filter(
    lambda o: any(f for f, _ in o)
)


CRITERIA_ALL = st.sampled_from(["guarded", "losses", "paper"])


@given(outcomes, st.floats(-0.2, 0.6), confidences, CRITERIA_ALL, st.booleans())
def test_early_rejection_never_stops_a_candidate_the_full_evaluation_accepts(
    pairs: list[tuple[bool, bool]], budget: float, confidence: float, criterion: str, wrong_first: bool
) -> None:
    """Walk the samples (float-wrong first, as the evaluator orders them, or as drawn) and stop as the
    evaluator would: every stop is a rejection of the full evaluation, and the end is the statistic."""
    if wrong_first:
        pairs = sorted(pairs, key=lambda pair: pair[0])
    test = AcceptanceTest(criterion, confidence)  # type: ignore[arg-type]
    float_correct = sum(f for f, _ in pairs)
    samples = len(pairs)
    final = test.statistic(
        sum(f and not q for f, q in pairs), sum(q and not f for f, q in pairs), float_correct, samples
    )
    losses = gains = 0
    for seen, (f, q) in enumerate(pairs, start=1):
        losses += f and not q
        gains += q and not f
        rest = pairs[seen:]
        unseen_correct = sum(f for f, _ in rest)
        unseen_wrong = len(rest) - unseen_correct
        best = test.best_case(losses, gains, float_correct, samples, unseen_correct, unseen_wrong)
        assert best <= final
        if settled(best, budget, None):
            assert not test.accepts(*_totals(pairs), budget)
        if not rest:
            assert best == final


def _totals(pairs: list[tuple[bool, bool]]) -> tuple[int, int, int, int]:
    return (
        sum(f and not q for f, q in pairs),
        sum(q and not f for f, q in pairs),
        sum(f for f, _ in pairs),
        len(pairs),
    )


def test_the_paper_criterion_is_the_evaluators_loss_and_bound() -> None:
    """Same float as ``relative_loss`` for the same counts, and the evaluator's early bound today."""
    paper = AcceptanceTest("paper")
    float_correct, samples = 3850, 5000
    for losses, gains in [(0, 0), (37, 12), (3, 40), (1, 0)]:
        quantized_correct = float_correct - losses + gains
        assert paper.statistic(losses, gains, float_correct, samples) == relative_loss(
            float_correct, quantized_correct
        )
    # 4000 seen (all 1150 float-wrong and 2850 float-correct): 30 losses, 12 gains, 1000 left, all right.
    correct_seen = 2850 - 30 + 12
    expected = relative_loss(float_correct, correct_seen + 1000)
    assert paper.best_case(30, 12, float_correct, samples, 1000, 0) == expected


# --- coverage ------------------------------------------------------------------------------------


def _exact_coverage(float_correct: int, float_wrong: int, q_loss: float, q_gain: float, conf: float) -> float:
    """P(bound >= true loss) by enumerating L ~ Bin(C, q_L) and G ~ Bin(W, q_G), given the float split.

    The true relative loss is ``q_L - q_G (1 - a) / a`` with ``a = C / n``.
    """
    samples = float_correct + float_wrong
    truth = q_loss - q_gain * float_wrong / float_correct
    loss_values = np.arange(float_correct + 1)
    gain_values = np.arange(float_wrong + 1)
    p_loss = stats.binom.pmf(loss_values, float_correct, q_loss)
    p_gain = stats.binom.pmf(gain_values, float_wrong, q_gain)
    covered = 0.0
    for loss, pl in zip(loss_values[p_loss > 1e-10], p_loss[p_loss > 1e-10], strict=True):
        for gain, pg in zip(gain_values[p_gain > 1e-10], p_gain[p_gain > 1e-10], strict=True):
            if loss_upper_bound(int(loss), int(gain), float_correct, samples, conf) >= truth:
                covered += pl * pg
    return covered


@pytest.mark.parametrize(
    ("float_correct", "float_wrong", "q_loss", "q_gain"),
    [
        (300, 100, 0.01, 0.0),  # losses only: exact Clopper-Pearson
        (300, 100, 0.03, 0.03),  # flips both ways, true loss 0.02
        (385, 115, 0.05, 0.15),  # CIFAR-like split, many gains
        (495, 5, 0.01, 0.4),  # MNIST-like split: few float-wrong samples, half flip
        (200, 200, 0.02, 0.02),  # no net loss
    ],
)
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_exact_coverage_on_a_grid(
    float_correct: int, float_wrong: int, q_loss: float, q_gain: float, confidence: float
) -> None:
    coverage = _exact_coverage(float_correct, float_wrong, q_loss, q_gain, confidence)
    assert coverage >= confidence - 1e-9


def test_monte_carlo_coverage_with_a_random_float_split() -> None:
    """Paired outcomes drawn with known P(L), P(G), a (C itself random): the bound covers the true
    relative loss in at least ``confidence`` of the runs, within 3 Monte-Carlo standard errors."""
    rng = np.random.default_rng(20)
    runs, confidence = 2000, 0.95
    bound = functools.lru_cache(maxsize=None)(loss_upper_bound)
    for samples, accuracy, p_loss, p_gain in [
        (1000, 0.99, 0.004, 0.002),
        (1000, 0.77, 0.01, 0.006),
        (2000, 0.90, 0.008, 0.0),
        (500, 0.75, 0.02, 0.02),
    ]:
        truth = (p_loss - p_gain) / accuracy
        probabilities = [accuracy - p_loss, p_loss, p_gain, 1 - accuracy - p_gain]
        draws = rng.multinomial(samples, probabilities, size=runs)
        covered = sum(
            bound(int(loss), int(gain), int(both + loss), samples, confidence) >= truth
            for both, loss, gain, _ in draws
        )
        error = math.sqrt(confidence * (1 - confidence) / runs)
        assert covered / runs >= confidence - 3 * error, (samples, accuracy, p_loss, p_gain, covered / runs)


# --- data size -----------------------------------------------------------------------------------


def test_resolution_is_one_sample() -> None:
    assert resolution(5000, 0.77) == 1 / 3850
    assert resolution(500, 1.0) == 1 / 500


@given(st.floats(1e-4, 0.2), st.floats(0.05, 1.0), confidences)
def test_samples_needed_is_the_smallest_sufficient_size(
    eps: float, accuracy: float, confidence: float
) -> None:
    needed = samples_needed(eps, accuracy, confidence)
    assert certifiable_loss(needed, accuracy, confidence) <= eps
    assert needed == 1 or certifiable_loss(needed - 1, accuracy, confidence) > eps


def test_samples_needed_literal() -> None:
    """ln(20) / (0.99 ln(1 / 0.99)) = 301.1 at 95%: 302 samples to certify 1% at 99% accuracy."""
    assert samples_needed(0.01, 0.99, 0.95) == 302


def test_size_table_rows() -> None:
    rows = size_table(0.95)
    assert [(r.samples, r.accuracy) for r in rows] == [
        (n, a) for n in SIZE_TABLE_SAMPLES for a in SIZE_TABLE_ACCURACIES
    ]
    for row in rows:
        assert row.resolution == resolution(row.samples, row.accuracy)
        assert row.certifiable_loss == certifiable_loss(row.samples, row.accuracy, 0.95)
        assert row.certifiable_loss == pytest.approx(-math.log(0.05) * row.resolution, rel=0.01)


def test_size_table_render_snapshot() -> None:
    assert render_size_table(size_table(0.95)) == (
        "| search samples n | a = 99% | a = 90% | a = 75% |\n"
        "|---:|---:|---:|---:|\n"
        "| 500 | 0.603% (0.202%) | 0.664% (0.222%) | 0.796% (0.267%) |\n"
        "| 1,000 | 0.302% (0.101%) | 0.332% (0.111%) | 0.399% (0.133%) |\n"
        "| 2,000 | 0.151% (0.0505%) | 0.166% (0.0556%) | 0.2% (0.0667%) |\n"
        "| 5,000 | 0.0605% (0.0202%) | 0.0665% (0.0222%) | 0.0799% (0.0267%) |\n"
        "| 10,000 | 0.0303% (0.0101%) | 0.0333% (0.0111%) | 0.0399% (0.0133%) |\n"
        "| 50,000 | 0.00605% (0.00202%) | 0.00666% (0.00222%) | 0.00799% (0.00267%) |\n"
        "\n"
        "Smallest certifiable relative loss at confidence 0.95 (one sample of relative loss, 1/(n a))."
    )


# --- the acceptance test object and its validation ------------------------------------------------


@pytest.mark.parametrize("confidence", [0.5, 1.0, 0.3, 1.2, -1.0, float("nan"), float("inf")])
def test_confidence_outside_the_open_interval_is_refused(confidence: float) -> None:
    message = r"--confidence must be in the open interval \(0\.5, 1\)"
    with pytest.raises(CriterionError, match=message) as info:
        AcceptanceTest("guarded", confidence)
    assert isinstance(info.value, ValueError) and isinstance(info.value, OptsearchError)
    with pytest.raises(ValueError, match="--confidence"):
        loss_upper_bound(0, 0, 10, 10, confidence)


def test_confidence_inside_is_kept() -> None:
    assert validate_confidence(0.95) == 0.95
    assert AcceptanceTest().criterion == "guarded" and AcceptanceTest().confidence == 0.95


def test_unknown_criterion_is_refused() -> None:
    message = r"--criterion must be one of guarded, losses, paper, got 'strict'"
    with pytest.raises(CriterionError, match=message):
        AcceptanceTest("strict")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("losses", "gains", "float_correct", "samples"),
    [(0, 0, 0, 10), (11, 0, 10, 20), (0, 11, 10, 20), (-1, 0, 10, 20), (0, 0, 11, 10)],
)
def test_impossible_counts_are_refused(losses: int, gains: int, float_correct: int, samples: int) -> None:
    with pytest.raises(ValueError):
        loss_upper_bound(losses, gains, float_correct, samples, 0.95)
    with pytest.raises(ValueError):
        AcceptanceTest("paper").statistic(losses, gains, float_correct, samples)


def test_impossible_partial_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        best_case_upper_bound(5, 0, 10, 20, 6, 0, 0.95)  # 5 losses among 4 float-correct seen
    with pytest.raises(ValueError, match="do not fit"):
        AcceptanceTest("paper").best_case(0, 0, 10, 20, 11, 0)


@given(counts(), confidences)
def test_the_losses_criterion_is_the_guarded_bound_without_gains(
    c: tuple[int, int, int, int], confidence: float
) -> None:
    losses, gains, float_correct, samples = c
    strict, guarded = AcceptanceTest("losses", confidence), AcceptanceTest("guarded", confidence)
    assert strict.statistic(losses, gains, float_correct, samples) == guarded.statistic(
        losses, 0, float_correct, samples
    )
    assert strict.statistic(losses, gains, float_correct, samples) >= guarded.statistic(
        losses, gains, float_correct, samples
    )
    assert strict.bound(losses, gains, float_correct, samples) == strict.statistic(
        losses, 0, float_correct, samples
    )
    assert strict.certifiable_loss(samples, float_correct / samples) == guarded.certifiable_loss(
        samples, float_correct / samples
    )


def test_acceptance_and_certifiable_loss_per_criterion() -> None:
    guarded, paper = AcceptanceTest("guarded", 0.95), AcceptanceTest("paper", 0.95)
    assert paper.accepts(38, 0, 3850, 5000, 0.01) and not guarded.accepts(38, 0, 3850, 5000, 0.01)
    assert guarded.accepts(28, 0, 3850, 5000, 0.01) and not guarded.accepts(29, 0, 3850, 5000, 0.01)
    assert paper.certifiable_loss(5000, 0.77) == 0.0
    assert guarded.certifiable_loss(5000, 0.77) == certifiable_loss(5000, 0.77, 0.95)
    assert "95%" in guarded.describe() and "Clopper-Pearson" in guarded.describe()
    assert paper.describe().startswith("paper")


def test_the_module_imports_neither_keras_nor_tensorflow() -> None:
    code = (
        "import sys, optsearch.core.confidence; "
        "loaded = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
