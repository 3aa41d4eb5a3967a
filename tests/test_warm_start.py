"""``--warm-start analytic`` (issue 23): each diagonal starts at a given bitwidth instead of BW0.

On synthetic evaluators: ``start_bits`` changes only where the diagonal starts, and the start is
still raised by ``bw0_step`` (up to ``bw0_cap``) while it is not acceptable. End to end on the tiny
model: the run says it is not Alg. 2 and evaluates no more than the same run from BW0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from optsearch.cli.main import cli
from optsearch.core.allocation import constant_allocation
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.methods.evaluator import Evaluation
from optsearch.methods.opt_search import SearchError, SearchSettings, TensorDecision, opt_search
from optsearch.settings import DataSettings, RunSettings

T = TensorId("conv", "W")


class ThresholdEvaluator:
    """Z = 1 everywhere (start ``(BW, BW - 1)``): a format is lossless when it keeps at least ``k``
    fractional bits and one integer bit (the sign), and loses everything otherwise; the loss of a
    network is the sum over its quantized tensors. Every search therefore ends at ``(k + 1, k)``."""

    def __init__(self, k: Mapping[TensorId, int]) -> None:
        self.k = k
        self.calls = 0

    @property
    def float_accuracy(self) -> float:
        return 0.99

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Evaluation:
        self.calls += 1
        loss = sum(0.0 if f.f >= self.k[t] and f.bw - f.f >= 1 else 1.0 for t, f in formats.items())
        return Evaluation(loss, 0, 10, True, 0.0)


def _settings(**kwargs: object) -> SearchSettings:
    options: dict[str, object] = {
        "eps": 0.005,
        "allocation": constant_allocation(1.0),
        "bw0": {"W": 8, "B": 8, "A": 8},
    }
    options.update(kwargs)
    return SearchSettings(**options)  # type: ignore[arg-type]


def _search(
    k: int, start_bits: Mapping[TensorId, int] | None, log: list[str] | None = None
) -> tuple[TensorDecision, int]:
    evaluator = ThresholdEvaluator({T: k})
    outcome = opt_search(
        evaluator,
        [[T]],
        {T: 1.0},
        _settings(),
        start_bits=start_bits,
        log=None if log is None else log.append,
    )
    assert outcome.evaluations == evaluator.calls
    return outcome.decisions[0], outcome.evaluations


@given(k=st.integers(1, 20), start=st.integers(2, 24))
def test_start_bits_change_only_the_start_and_the_raise_rule_holds(k: int, start: int) -> None:
    cold, _ = _search(k, None)
    warm, _ = _search(k, {T: start})
    # The same format as from BW0 ...
    assert warm.fmt == cold.fmt == Format(k + 1, k)
    # ... from a start raised by bw0_step (4), capped at 24, until it is acceptable.
    expected = start
    while expected - 1 < k:
        expected = min(expected + 4, 24)
    assert warm.bw0 == expected and warm.start == Format(expected, expected - 1)


def test_a_start_near_the_answer_saves_evaluations_and_the_decision_records_it() -> None:
    cold, cold_evaluations = _search(5, None)
    warm, warm_evaluations = _search(5, {T: 7})
    assert (cold.bw0, cold.start) == (8, Format(8, 7)) and (warm.bw0, warm.start) == (7, Format(7, 6))
    assert warm.fmt == cold.fmt and warm_evaluations == cold_evaluations - 1


def test_an_unacceptable_warm_start_is_raised_and_logged() -> None:
    messages: list[str] = []
    decision, _ = _search(7, {T: 4}, messages)
    assert decision.start == Format(8, 7) and decision.fmt == Format(8, 7)
    assert messages == ["layer 'conv', weights: start (4, 3) is not acceptable, raising the warm start to 8"]


def test_past_the_cap_a_warm_start_fails_as_bw0_does() -> None:
    with pytest.raises(SearchError, match=r"no acceptable format even at \(24, 23\)"):
        _search(30, {T: 22})


def test_tensors_without_a_start_bitwidth_start_at_bw0() -> None:
    a, b = TensorId("l1", "W"), TensorId("l2", "W")
    outcome = opt_search(
        ThresholdEvaluator({a: 3, b: 3}), [[a], [b]], {a: 1.0, b: 1.0}, _settings(eps=0.5), start_bits={b: 5}
    )
    assert [(d.bw0, d.start) for d in outcome.decisions] == [(8, Format(8, 7)), (5, Format(5, 4))]


@pytest.mark.parametrize("bits", [1, 25])
def test_start_bits_outside_the_range_are_refused(bits: int) -> None:
    with pytest.raises(ValueError, match=r"start bitwidth must be in \[2, 24\]"):
        _search(3, {T: bits})


def test_warm_start_is_validated_and_recorded() -> None:
    with pytest.raises(ValueError, match="warm start must be one of"):
        SearchSettings(warm_start="cold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method analytic has none"):
        SearchSettings(method="analytic", warm_start="analytic")
    with pytest.raises(ValueError, match="leave independent off"):
        SearchSettings.independent_search(warm_start="analytic")
    settings = RunSettings(Path("m.keras"), DataSettings("d.npz"), SearchSettings(warm_start="analytic"))
    recorded = settings.recorded()
    keys = list(recorded)
    assert keys[keys.index("method") + 1] == "warm_start" and recorded["warm_start"] == "analytic"
    again = RunSettings.from_recorded({"path": "m.keras"}, {"spec": "d.npz"}, recorded)
    assert again.search.warm_start == "analytic"
    del recorded["warm_start"]  # a formats.json written before the warm start
    assert (
        RunSettings.from_recorded({"path": "m.keras"}, {"spec": "d.npz"}, recorded).search.warm_start
        == "none"
    )


# --------------------------------------------------------------------------------------------------
# End to end on the tiny model


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _search_run(files: dict[str, Path], out: Path, *extra: str) -> Path:
    result = _run(
        "run", files["model"], "--data", files["data"], "--criterion", "paper", "--search-fraction", "1.0",
        "--eps", "0.2", "--method", "paper", "--out", out, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("warm")
    return {
        "cold": _search_run(files, root / "cold"),
        "warm": _search_run(files, root / "warm", "--warm-start", "analytic"),
    }


def test_warm_start_run_says_it_is_not_alg2_and_evaluates_no_more(runs: dict[str, Path]) -> None:
    warm = json.loads((runs["warm"] / "formats.json").read_text())
    cold = json.loads((runs["cold"] / "formats.json").read_text())
    assert warm["settings"]["warm_start"] == "analytic" and cold["settings"]["warm_start"] == "none"
    assert any(line.startswith("warm start: analytic (not Alg. 2)") for line in warm["log"])
    assert "warm start" not in (runs["cold"] / "report.md").read_text()
    assert "warm start: analytic (not Alg. 2)" in (runs["warm"] / "report.md").read_text()
    assert warm["evaluations"] <= cold["evaluations"]
    print(f"evaluations: warm start {warm['evaluations']}, from BW0 {cold['evaluations']}")
    # Every decision records the start it used: somewhere the warm start differs from BW0.
    starts = [t["bw0"] for layer in warm["layers"] for t in layer["tensors"].values()]
    bw0 = [warm["settings"]["bw0"][kind] for layer in warm["layers"] for kind in layer["tensors"]]
    assert starts != bw0


def test_cli_refuses_warm_start_with_method_analytic(files: dict[str, Path], tmp_path: Path) -> None:
    result = _run(
        "run", files["model"], "--data", files["data"], "--method", "analytic", "--warm-start", "analytic",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert result.exit_code == 2 and "method analytic has none" in result.output
    assert not (tmp_path / "o").exists()


def test_no_precisions_within_the_budget_fall_back_to_bw0(monkeypatch: pytest.MonkeyPatch) -> None:
    """When no B_min fits the budget, the warm start gives no start bits (the search starts at BW0)."""
    import optsearch.run.runner as runner
    from optsearch.core.errors import OptsearchError

    def no_plan(*args: object, **kwargs: object) -> None:
        raise OptsearchError("--warm-start analytic: no B_min up to 32 fits")

    monkeypatch.setattr(runner, "analytic_plan", no_plan)
    notes: list[str] = []
    bits, note, _ = runner.warm_start_bits(None, None, notes.append)  # type: ignore[arg-type]
    assert bits == {} and "starting at BW0" in note and notes == [note]
