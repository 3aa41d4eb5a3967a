"""The ``--method pareto`` stage of a run (issue 21): curves, allocation, verification, the record.

Curves are measured on the search set's engine (every other tensor float), each appended to
``curves.jsonl`` in the work folder as it is finished, so ``--resume`` measures only what is left;
``optsearch pareto`` passes the curves of an earlier result instead (none measured). Every curve
point and every verification step is a line of ``search_log.jsonl``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from optsearch.core.confidence import AcceptanceTest
from optsearch.core.files import sha256
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.evaluators.engine import CachedEvaluator
from optsearch.methods.knapsack import OBJECTIVE_NAMES, CostModel, cost_model
from optsearch.methods.opt_search import SearchSettings, TensorDecision, search_plan
from optsearch.methods.pareto import AdjustStep, FrontPoint, ParetoOutcome, pareto_search
from optsearch.methods.sensitivity import CURVE_REACH, START_BW, Curve, CurvePoint, measure_curves
from optsearch.model.graph import QuantizedModel
from optsearch.results.folder import FORMATS_FILE, LOG_FILE, ResultError, ResultFolder
from optsearch.results.result import ParetoRecord
from optsearch.run.resume import append_line
from optsearch.settings import RunSettings

CURVES_FILE = "curves.jsonl"


@dataclass(frozen=True)
class StoredCurves:
    """The curves of an earlier result, for ``optsearch pareto``: where from and their reach."""

    curves: dict[TensorId, Curve]
    source: str
    reach: float

    @classmethod
    def of(cls, record: ParetoRecord, source: str) -> StoredCurves:
        curves = {c.tensor: c for c in (Curve.from_dict(d) for d in record.curves)}
        return cls(curves, source, record.reach)


def reusable_curves(settings: RunSettings, out: Path) -> StoredCurves | None:
    """The curves of a finished ``--method pareto`` result beside ``out`` that answer ``settings``
    (same model file by sha256, same data and settings but eps and objective, a reach of at least
    this eps), the one reaching furthest; None when there is none. A batch's eps or objective sweep
    measures its curves once."""
    if settings.search.method != "pareto" or not out.parent.is_dir() or not settings.model.is_file():
        return None
    model_sha = sha256(settings.model)
    found: list[tuple[float, str, ParetoRecord]] = []
    for folder in sorted(out.parent.iterdir()):
        if folder == out or not (folder / FORMATS_FILE).is_file():
            continue
        try:
            result = ResultFolder.at(folder).read()
        except ResultError:
            continue
        record = result.pareto
        if record is None or record.reach < settings.search.eps or result.model.sha256 != model_sha:
            continue
        same = settings.with_search(eps=result.eps, objective=result.settings.search.objective)
        if same.differences(result.settings):  # eps and objective aside: the curves answer any
            continue
        found.append((record.reach, str(folder), record))
    if not found:
        return None
    _, source, record = max(found, key=lambda f: f[0])
    return StoredCurves.of(record, source)


@dataclass(frozen=True)
class ParetoFound:
    """The stage's answer: decisions shaped as Alg. 2's (one per tensor, in search order), the
    record for formats.json, the log lines and the evaluations this run spent."""

    decisions: tuple[TensorDecision, ...]
    record: ParetoRecord
    log: list[str]
    evaluations: int
    seconds: float


def _untimed(data: dict[str, Any]) -> dict[str, Any]:
    """A curve or step for formats.json: without its seconds, which search_log.jsonl and curves.jsonl
    keep, so that two identical runs write the same formats.json (timings aside)."""
    return {key: value for key, value in data.items() if key != "seconds"}


def load_curves(path: Path) -> dict[TensorId, Curve]:
    """The curves a run in progress wrote (a last line cut short by a kill is ignored)."""
    curves: dict[TensorId, Curve] = {}
    if not path.is_file():
        return curves
    for line in path.read_text().splitlines():
        try:
            curve = Curve.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            break
        curves[curve.tensor] = curve
    return curves


def pareto_stage(
    qmodel: QuantizedModel,
    evaluator: CachedEvaluator,
    magnitudes: Mapping[TensorId, float],
    search: SearchSettings,
    input_bits: int,
    samples: int,
    tmp: Path,
    echo: Callable[[str], None],
    *,
    resume: bool = False,
    stored: StoredCurves | None = None,
    recorded: list[int] | None = None,
) -> ParetoFound:
    """Curves (measured, resumed or ``stored``), then ``methods.pareto.pareto_search``."""
    t0 = time.perf_counter()
    tensors = [t for layer in qmodel.layers for t in layer.tensors()]
    test = search.acceptance
    reach = CURVE_REACH * search.eps if stored is None else stored.reach
    measured: dict[TensorId, Curve] = {} if stored is None else dict(stored.curves)
    if resume and stored is None:
        measured.update(load_curves(tmp / CURVES_FILE))
        if measured:
            echo(f"resuming {tmp}: {len(measured)} of {len(tensors)} curves measured before")
    counter = recorded if recorded is not None else [0]
    counter[0] += len(measured) if stored is None else 0
    fresh = [t for t in tensors if t not in measured]
    with (
        open(tmp / LOG_FILE, "a") as log_file,
        open(tmp / CURVES_FILE, "a") as curves_file,
        tqdm(
            total=len(tensors),
            initial=len(tensors) - len(fresh),
            desc="curves     ",
            unit="tensor",
            file=sys.stderr,
        ) as bar,
    ):

        def point(tensor: TensorId, p: CurvePoint, phase: str, seconds: float) -> None:
            _log(
                log_file,
                {
                    "stage": "sensitivity",
                    "tensor": str(tensor),
                    "phase": phase,
                    **p.to_dict(),
                    "eps": reach,
                    "accepted": p.exact,
                    "seconds": round(seconds, 6),
                    "cached": False,
                },
            )
            bar.set_postfix_str(f"{tensor} {p.fmt} flips {p.losses}", refresh=False)

        def curve_done(curve: Curve) -> None:
            append_line(curves_file, curve.to_dict())
            counter[0] += 1
            bar.update(1)

        curves = measure_curves(
            evaluator,
            tensors,
            magnitudes,
            reach=reach,
            offset_rule=search.offset_rule,
            bw_cap=search.bw0_cap,
            measured=measured,
            on_point=point,
            on_curve=curve_done,
        )
        model = cost_model(qmodel.layers, search.objective, input_bits)
        float_correct = round(evaluator.float_accuracy * samples)

        def step(s: AdjustStep) -> None:
            _log(log_file, {"stage": s.action, **s.to_dict(), "eps": search.eps})

        outcome = pareto_search(
            evaluator,
            curves,
            model,
            test,
            search.eps,
            samples=samples,
            reach=reach,
            bw_cap=search.bw0_cap,
            on_step=step,
        )
    # This run's curves, those measured before a resume included (a resumed run counts as one run).
    own = [] if stored is not None else tensors
    curve_evaluations = sum(curves[t].evaluations for t in own)
    memory = cost_model(qmodel.layers, "memory", input_bits)
    record = ParetoRecord(
        objective=search.objective,
        reach=reach,
        capacity=outcome.capacity,
        predicted=outcome.flips(outcome.allocated.predicted),
        scale=outcome.scale,
        curve_evaluations=curve_evaluations,
        curves=[_untimed(curves[t].to_dict()) for t in tensors],
        steps=[_untimed(s.to_dict()) for s in outcome.steps],
        front=[_front_dict(p, outcome, memory, test, float_correct, samples) for p in outcome.front],
        curves_from=None if stored is None else stored.source,
    )
    log = _summary(outcome, record, search, len(own), len(tensors))
    for line in log:
        echo(line)
    decisions = _decisions(qmodel, curves, outcome, search, own)
    seconds = time.perf_counter() - t0
    return ParetoFound(decisions, record, log, curve_evaluations + outcome.evaluations, seconds)


def _log(stream: IO[str], line: Mapping[str, Any]) -> None:
    stream.write(json.dumps(line) + "\n")
    stream.flush()


def _front_dict(
    point: FrontPoint,
    outcome: ParetoOutcome,
    memory: CostModel,
    test: AcceptanceTest,
    float_correct: int,
    samples: int,
) -> dict[str, Any]:
    """One front point: its capacity and predicted output noise power, the flips that predicts (and
    that as a share of the float-correct samples, and the statistic of a network flipping that
    many), its cost and memory, and the statistic measured when the verification evaluated it."""
    flips = outcome.flips(point.predicted)
    return {
        "capacity": point.capacity,
        "predicted_power": point.predicted,
        "predicted_flips": flips,
        "predicted_loss": None if flips is None else flips / float_correct,
        "predicted_statistic": None
        if flips is None
        else test.statistic(min(round(flips), float_correct), 0, float_correct, samples),
        "cost": point.cost,
        "memory_bits": memory.cost({t: f.bw for t, f in point.formats.items()}),
        "measured_statistic": outcome.measured.get(point.capacity),
    }


def _summary(
    outcome: ParetoOutcome, record: ParetoRecord, search: SearchSettings, own: int, total: int
) -> list[str]:
    front = [s for s in outcome.steps if s.action == "front"]
    refines = [s for s in outcome.steps if s.action == "refine"]
    return [
        f"pareto: {own} of {total} curves measured by this run ({record.curve_evaluations} evaluations, "
        f"reach {record.reach:.3%}); objective {OBJECTIVE_NAMES[search.objective]}",
        f"pareto: eps {search.eps:.3%} lets {outcome.capacity} flipped samples through; {len(front)} "
        f"points of the front measured, the cheapest that passes predicted at "
        f"{_flips(record.predicted)}; "
        f"{sum(s.accepted for s in refines)} of {len(refines)} refinements kept; final "
        f"{outcome.final.statistic:.3%}",
    ]


def _flips(flips: float | None) -> str:
    return "an unknown number of flips (no curve point flips any)" if flips is None else f"{flips:.1f} flips"


def _decisions(
    qmodel: QuantizedModel,
    curves: Mapping[TensorId, Curve],
    outcome: ParetoOutcome,
    search: SearchSettings,
    own: Sequence[TensorId],
) -> tuple[TensorDecision, ...]:
    """One decision per tensor in Alg. 2's order (for the result's tables): its own loss at the final
    format with every other tensor float (the curve's, or its top's above it), the knapsack's choice
    as ``diagonal`` and the final format as ``local``."""
    order = search_plan([q.tensors() for q in qmodel.layers], search)
    own_set = set(own)
    out = []
    for tensor, position, eps in order:
        curve, fmt = curves[tensor], outcome.formats[tensor]
        allocated = outcome.allocated.formats[tensor]
        alone = _own(curve, fmt)
        lowered = allocated.bw - fmt.bw
        rule = "pareto: front point" + (
            f", lowered {lowered} bit{'s' * (lowered != 1)} by refinement" if lowered else ""
        )
        out.append(
            TensorDecision(
                tensor=tensor,
                position=position,
                eps=eps,
                fmt=fmt,
                loss=alone.loss,
                bw0=START_BW,
                start=curve.points[0].fmt,
                diagonal=allocated,
                diagonal_loss=_own(curve, allocated).statistic,
                local=fmt,
                local_loss=alone.statistic,
                rule=rule,
                evaluations=curve.evaluations if tensor in own_set else 0,
                bound=None if search.criterion == "paper" else alone.statistic,
            )
        )
    return tuple(out)


def _own(curve: Curve, fmt: Format) -> CurvePoint:
    """The curve's point at ``fmt``, or for a rung above the curve's top, its top (lossless)."""
    for p in curve.points:
        if p.fmt == fmt:
            return p
    return min((p for p in curve.usable() if p.losses == 0), key=lambda p: p.fmt.bw, default=curve.points[0])
