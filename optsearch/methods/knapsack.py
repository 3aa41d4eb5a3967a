"""One format per tensor at the least cost whose predicted loss fits a budget (issue 21). No Keras.

A multiple-choice knapsack: every tensor has a few candidate formats, each with a predicted loss (its
``weight``, in samples flipped); choose exactly one per tensor so that the summed weight stays within
a capacity and the objective is smallest. The objectives are the costs the report computes (eq. 7):
memory is linear in each tensor's bits; bit operations are bilinear (``MACs x BW_W x BW_in``, with
``BW_in`` the widest source of the layer). Both are solved exactly as a mixed-integer linear program
by HiGHS (``scipy.optimize.milp``); the bilinear terms are linearised exactly (a binary choice times
a bounded continuous bitwidth, the standard big-M product).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from optsearch.core.costs import LayerSizes
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TENSOR_KINDS, TensorId

Objective = Literal["memory", "weights", "activations", "bops"]
OBJECTIVES: tuple[Objective, ...] = ("memory", "weights", "activations", "bops")
#: What each objective counts, for help texts and reports.
OBJECTIVE_NAMES: dict[Objective, str] = {
    "memory": "memory (eq. 7: every weight, bias and activation at its bitwidth)",
    "weights": "weights memory (weights and biases at their bitwidths)",
    "activations": "activation memory (activations at their bitwidths)",
    "bops": "bit operations (MACs x weight bits x input bits)",
}
#: HiGHS gives up on one program after this many seconds (it takes milliseconds on zoo models).
TIME_LIMIT_S = 60.0


@dataclass(frozen=True)
class Choice:
    """One candidate format of a tensor and its predicted loss in flipped samples."""

    fmt: Format
    weight: float


@dataclass(frozen=True)
class Product:
    """A bilinear cost term ``macs x BW(weight) x max(BW(sources), input_bits)``: one layer's BOPs."""

    macs: int
    weight: TensorId
    sources: tuple[TensorId, ...]
    """The activation tensors the layer reads; empty: it reads the network input."""
    input_bits: int


@dataclass(frozen=True)
class CostModel:
    """The objective as a function of the bitwidths: ``sum per_bit[t] BW_t + sum products``."""

    per_bit: Mapping[TensorId, float]
    products: tuple[Product, ...] = ()

    def cost(self, bits: Mapping[TensorId, int]) -> float:
        """The objective's value for these bitwidths (every tensor the model names must be given)."""
        total = float(sum(c * bits[t] for t, c in self.per_bit.items()))
        for p in self.products:
            width = max((bits[s] for s in p.sources), default=p.input_bits)
            total += p.macs * bits[p.weight] * width
        return total


def cost_model(layers: Sequence[LayerSizes], objective: Objective, input_bits: int) -> CostModel:
    """The ``objective`` over ``layers`` as ``core.costs`` computes it (memory by kind of eq. 7, BOPs)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "bops":
        return CostModel(
            {},
            tuple(
                Product(
                    layer.macs,
                    TensorId(layer.name, "W"),
                    tuple(TensorId(s, "A") for s in layer.input_sources),
                    input_bits,
                )
                for layer in layers
            ),
        )
    kinds = {"memory": TENSOR_KINDS, "weights": ("W", "B"), "activations": ("A",)}[objective]
    return CostModel(
        {
            TensorId(layer.name, kind): float(layer.value_count(kind))
            for layer in layers
            for kind in kinds
            if kind != "B" or layer.has_bias
        }
    )


@dataclass(frozen=True)
class Assignment:
    """The knapsack's answer: one format per tensor, its summed weight and its cost."""

    formats: dict[TensorId, Format]
    weight: float
    cost: float


def allocate(
    choices: Mapping[TensorId, Sequence[Choice]], capacity: float, model: CostModel
) -> Assignment | None:
    """The cheapest choice of one format per tensor with summed weight ``<= capacity``; None when
    even the lightest choices exceed it. Exact (HiGHS branch and bound to optimality)."""
    program = Program(choices, model)
    return program.solve(capacity)


def front(
    choices: Mapping[TensorId, Sequence[Choice]], capacities: Sequence[float], model: CostModel
) -> list[Assignment | None]:
    """``allocate`` at every capacity (one program, solved once per capacity): the predicted Pareto
    front of cost against loss."""
    program = Program(choices, model)
    return [program.solve(capacity) for capacity in capacities]


class Program:
    """The mixed-integer program of ``allocate``, built once and solved for any capacity (``solve``).

    Variables: ``x[t, i]`` binary (tensor ``t`` takes choice ``i``); per product ``p`` a continuous
    ``m[p]`` (its input width, at least every source's bitwidth) and ``z[p, i] = x[weight_p, i] m[p]``
    (``z >= m - M (1 - x)``, ``z >= 0``; minimisation makes both tight).
    """

    def __init__(self, choices: Mapping[TensorId, Sequence[Choice]], model: CostModel) -> None:
        for tensor, options in choices.items():
            if not options:
                raise ValueError(f"{tensor}: no candidate format to choose from")
        missing = {t for t in model.per_bit if t not in choices}
        missing |= {t for p in model.products for t in (p.weight, *p.sources) if t not in choices}
        if missing:
            raise ValueError(f"the objective needs tensors without choices: {sorted(map(str, missing))}")
        self.tensors = list(choices)
        self.choices = {t: list(choices[t]) for t in self.tensors}
        self.model = model
        index: dict[tuple[TensorId, int], int] = {}
        for t in self.tensors:
            for i in range(len(self.choices[t])):
                index[(t, i)] = len(index)
        self.index = index
        n_x = len(index)
        big_m = max(
            [c.fmt.bw for options in self.choices.values() for c in options]
            + [p.input_bits for p in model.products]
            + [1]
        )
        cost = np.zeros(n_x)
        for (t, i), k in index.items():
            cost[k] = model.per_bit.get(t, 0.0) * self.choices[t][i].fmt.bw
        rows: list[dict[int, float]] = []
        lower: list[float] = []
        upper: list[float] = []
        var_lb, var_ub, integer = [0.0] * n_x, [1.0] * n_x, [1] * n_x
        extra_cost: list[float] = []

        def new_var(lb: float, ub: float, c: float) -> int:
            var_lb.append(lb)
            var_ub.append(ub)
            integer.append(0)
            extra_cost.append(c)
            return n_x + len(extra_cost) - 1

        for t in self.tensors:  # exactly one choice per tensor
            rows.append({index[(t, i)]: 1.0 for i in range(len(self.choices[t]))})
            lower.append(1.0)
            upper.append(1.0)
        for p in model.products:
            if p.sources:
                m = new_var(0.0, float(big_m), 0.0)
                for s in p.sources:  # m - sum_i bw_i x[s, i] >= 0
                    row = {m: 1.0}
                    for i, c in enumerate(self.choices[s]):
                        row[index[(s, i)]] = row.get(index[(s, i)], 0.0) - c.fmt.bw
                    rows.append(row)
                    lower.append(0.0)
                    upper.append(np.inf)
            else:
                m = new_var(float(p.input_bits), float(p.input_bits), 0.0)
            for i, c in enumerate(self.choices[p.weight]):
                z = new_var(0.0, float(big_m), float(p.macs * c.fmt.bw))
                x = index[(p.weight, i)]  # z - m - M x >= -M
                rows.append({z: 1.0, m: -1.0, x: -float(big_m)})
                lower.append(-float(big_m))
                upper.append(np.inf)
        n = n_x + len(extra_cost)
        weight_row = np.zeros(n)
        for (t, i), k in index.items():
            weight_row[k] = self.choices[t][i].weight
        self.cost = np.concatenate([cost, np.asarray(extra_cost, dtype=float)])
        matrix = sparse.lil_matrix((len(rows), n))
        for r, row in enumerate(rows):
            for k, v in row.items():
                matrix[r, k] = v
        self.fixed = LinearConstraint(matrix.tocsr(), np.asarray(lower), np.asarray(upper))
        self.weight_row = weight_row
        self.bounds = Bounds(np.asarray(var_lb), np.asarray(var_ub))
        self.integrality = np.asarray(integer)
        self.lightest = sum(min(c.weight for c in self.choices[t]) for t in self.tensors)

    def solve(self, capacity: float) -> Assignment | None:
        if capacity < self.lightest - 1e-9:
            return None
        budget = LinearConstraint(self.weight_row[np.newaxis, :], -np.inf, capacity + 1e-9)
        with _quiet_stdout():
            result = milp(
                self.cost,
                constraints=[self.fixed, budget],
                integrality=self.integrality,
                bounds=self.bounds,
                options={"time_limit": TIME_LIMIT_S},
            )
        if result.x is None:
            if result.status == 2:  # infeasible
                return None
            raise RuntimeError(f"the allocation program was not solved: {result.message}")
        formats: dict[TensorId, Format] = {}
        weight = 0.0
        for t in self.tensors:
            i = max(range(len(self.choices[t])), key=lambda i: result.x[self.index[(t, i)]])
            formats[t] = self.choices[t][i].fmt
            weight += self.choices[t][i].weight
        if weight > capacity + 1e-6:  # HiGHS has returned infeasible "optimal" points (scipy#24141)
            raise RuntimeError(
                f"the allocation program returned weight {weight} over its capacity {capacity}"
            )
        bits = {t: f.bw for t, f in formats.items()}
        return Assignment(formats, weight, self.model.cost(bits))


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS' MIP solver prints a debug line to the process's stdout even when silent
    (ERGO-Code/HiGHS, reported as jump-dev/HiGHS.jl#312): stdout's file descriptor points at
    /dev/null while it runs, so the CLI's output stays clean."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (a notebook's): nothing to hide
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
