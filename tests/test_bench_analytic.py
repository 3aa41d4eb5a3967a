"""scripts/bench_analytic.py (docs/analytic.md) rendered from synthetic measurements: no search runs here."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, script_module

from optsearch.core.analytic import mismatch_bound
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with script_module(ROOT / "scripts" / "bench_analytic.py") as module:
        yield module


def _measured(
    loss: float, memory: float, evaluations: int, losses: int = 3, gains: int = 1
) -> dict[str, Any]:
    part = {
        "samples": 1000,
        "float_correct": 990,
        "losses": losses,
        "gains": gains,
        "loss": loss,
        "interval": [loss - 0.005, loss + 0.005],
        "upper_bound": loss + 0.004,
    }
    return {
        "eps": 0.01,
        "search": part,
        "held_out": dict(part),
        "held_out_exact_loss": loss,
        "memory_vs_8bit": memory,
        "multiply_vs_8bit": memory,
        "evaluations": evaluations,
        "tensors": 10,
        "search_seconds": 30.0,
    }


def test_page_from_synthetic_measurements(bench: ModuleType) -> None:
    model = "sequential_mnist"
    measured = {(m, key): None for m, _ in bench.MODELS for key in bench.ROWS}
    measured.update({
        (model, "analytic"): _measured(0.002, -0.10, 1),
        (model, "sens"): _measured(0.006, 0.55, 40),
        (model, "warm"): _measured(0.008, 0.59, 300),
        (model, "paper"): _measured(0.007, 0.60, 675),
        (model, "pareto"): _measured(0.008, 0.61, 460),
    })  # fmt: skip
    predicted = {
        (model, "analytic"): {
            "bound": 0.006,
            "recomputed": 0.006,
            "budget": 0.0099,
            "b_min": 3,
            "samples": 2000,
        },
        (model, "warm"): {"bound": 0.2, "warm": 3},
        (model, "paper"): {"bound": math.inf},
    }
    page = bench.render(measured, predicted)
    assert "| sequential_mnist | analytic, no search (`--method analytic`) | 0.20% |" in page
    assert "| 1 (0.1) | 30 s | 0.60% | 0.40% / 0.40% |" in page
    assert "∞ (a pruned tensor)" in page
    assert "not yet run: `optsearch batch configs/analytic.yaml --only 'branched_cifar10-warm'`" in page
    assert "- sequential_mnist: met: 300 evaluations vs Alg. 2's 675 (2.25x fewer; met)" in page
    assert "memory 59.00% vs 60.00% (-1.0 points; met)" in page
    assert "Met on 1 of 1 models measured (6 needed)." in page
    assert "Within eps on 1 of 1 models measured (6 needed; over: none)" in page
    assert "memory -10.00% vs Alg. 2's 60.00% (-70.0 points)" in page
    assert "40 evaluations vs 460 (9%)" in page
    assert "B_min 3, bound 0.60% within the budget 0.99% (gains on 2000 samples)" in page
    assert "(the bound is 1.5x that lower bound, so at most that many times" in page
    assert "warm start from B_min 3" in page


def test_bound_from_predicted_curves(bench: ModuleType) -> None:
    gains = {"c1:W": 3.0, "c1:B": 0.0, "c1:A": 0.25}
    z = {"c1:W": 0.4, "c1:B": 0.0, "c1:A": 2.5}
    curves = [
        {"tensor": name, "points": [{"bw": bw, "f": bw - 1, "noise": g * 4.0 ** -(bw - 1)} for bw in (2, 8)]}
        for name, g in gains.items()
    ]
    sens = {
        "pareto": {
            "curves_from": "analytic: Sakr & Shanbhag noise gains on 20 search samples",
            "curves": curves,
        }
    }
    assert bench.gains_from_curves(sens) == gains
    assert bench.gains_from_curves({"pareto": {**sens["pareto"], "curves_from": None}}) is None
    found = {"c1:W": (6, 7), "c1:B": (1, 0), "c1:A": (8, 5)}
    tensors = {name[-1]: {"bw": bw, "f": f, "z": z[name]} for name, (bw, f) in found.items()}
    formats = {"layers": [{"name": "c1", "tensors": tensors}]}
    expected = mismatch_bound(
        {TensorId.parse(n): g for n, g in gains.items()},
        {TensorId.parse(n): Format(*v) for n, v in found.items()},
        {TensorId.parse(n): v for n, v in z.items()},
    )
    assert bench.bound_of(gains, formats) == pytest.approx(expected)
    assert expected == pytest.approx(3.0 * 4.0**-7 + 0.25 * 4.0**-5)  # the zero tensor adds nothing
    assert bench.bound_of({"c1:W": 1.0}, formats) is None
