"""The main job: search the formats of a model and write every output, atomically (spec §5-§8).

One run is four stages: ``prepare`` (model, data, evaluator, magnitudes), ``search_formats`` (Alg. 2
over the evaluator, resumable per tensor), ``measure`` (accuracy and costs of the found formats) and
``write_result`` (the folder). Everything is written into the work folder ``<out>.partial`` beside
the output folder, renamed into place only when the run has finished: an interrupted or failed run
never leaves a half result. An interrupted run keeps its work folder for ``--resume``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from optsearch.core import analytic
from optsearch.core.analytic import NoiseGains
from optsearch.core.confidence import loss_upper_bound, samples_needed
from optsearch.core.costs import FLOAT_BITS, network_cost, uniform_bits
from optsearch.core.errors import ModelError, OptsearchError
from optsearch.core.files import sha256
from optsearch.core.fixedpoint import Format
from optsearch.core.memory import buffer_bits, peak_activation_memory, uniform_buffer_bits, weights_memory
from optsearch.core.netlist import DeployError, real_inputs
from optsearch.core.tensors import KIND_NAMES, ActivationPoint, TensorId
from optsearch.data import Dataset, batches, split
from optsearch.evaluators.engine import CachedEvaluator
from optsearch.evaluators.keras import (
    KerasEvaluator,
    activation_ranges,
    below_chance_warning,
    predicted_classes,
)
from optsearch.methods.certify import BackOff, Certification, certify
from optsearch.methods.opt_search import (
    WARM_START_MARGIN,
    EvaluationRecord,
    SearchOutcome,
    SearchSettings,
    TensorDecision,
    opt_search,
    search_plan,
)
from optsearch.methods.sensitivity import CURVE_REACH, predicted_curves
from optsearch.model.environment import versions
from optsearch.model.folding import Fold
from optsearch.model.graph import QuantizedModel, uniform_formats
from optsearch.model.netlist import read_netlist
from optsearch.model.noise_gain import noise_gains, park_floors
from optsearch.model.schedule import activation_schedule
from optsearch.render.files import write_rendered
from optsearch.results.folder import FOLDED_MODEL_FILE, LOG_FILE, MODEL_FILE, ResultFolder
from optsearch.results.result import (
    Accuracy,
    AnalyticRecord,
    Costs,
    DataInfo,
    LayerResult,
    ModelInfo,
    ParetoRecord,
    RunResult,
    TensorResult,
)
from optsearch.run.inputs import Inputs, prepare
from optsearch.run.outdir import check_out_dir, partial_dir, work_dir
from optsearch.run.pareto_run import CURVES_FILE, StoredCurves, pareto_stage
from optsearch.run.resume import (
    DECISIONS_FILE,
    REQUEST_FILE,
    append_line,
    decision_to_dict,
    fingerprint_differences,
    load_decisions,
    read_request,
    trim_log,
    write_request,
)
from optsearch.settings import RunSettings

UNIFORM_BW = 8
#: ``--method analytic`` takes the noise gains on about this many search samples (a stratified, seeded
#: subset: ``data.split``), so that a 5,000-sample CIFAR search set does not spend minutes on per-sample
#: gradients; formats.json records how many. The network's loss is measured on the whole search set.
ANALYTIC_GAIN_SAMPLES = 2_000
Echo = Callable[[str], None]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during the search: how far it got and where the work folder is."""

    def __init__(self, decided: int, total: int, work: Path, kept: bool) -> None:
        super().__init__(f"interrupted after {decided} of {total} tensors")
        self.decided = decided
        self.total = total
        self.work = work
        self.kept = kept


@dataclass
class Prepared:
    """A run's inputs, ready to search: the evaluator on the search set and each tensor's ``Z``."""

    inputs: Inputs
    evaluator: CachedEvaluator
    ranges: dict[str, float]
    magnitudes: dict[TensorId, float]
    folding: dict[str, Any]
    setup_seconds: float
    floor: float = 0.0
    """No tensor's budget below this: the smallest loss the guarded test can certify on the search set."""
    certify_set: Dataset | None = None
    """The part of the search data no decision sees (``--certify-fraction``), or None."""
    gains: NoiseGains | None = None
    """The noise gains once measured (``measured_gains``): the analytic method, warm start or
    sensitivity take them, the report's prediction reuses them."""

    @property
    def qmodel(self) -> QuantizedModel:
        return self.inputs.qmodel


@dataclass(frozen=True)
class Searched:
    """What the search stage found, and the wall time it took (across resumes)."""

    outcome: SearchOutcome
    log: list[str]
    seconds: float
    seconds_before_resume: float | None


def run(
    settings: RunSettings,
    out: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    echo: Echo = print,
    dataset: Dataset | None = None,
    stored: StoredCurves | None = None,
) -> RunResult:
    """Search the formats of ``settings.model`` and write formats, report, plots, model, log to ``out``.

    Everything is written into ``<out>.partial`` and renamed to ``out`` at the end. With ``resume``
    the decisions recorded there by an interrupted run are applied, not searched again; the
    fingerprint of the run (settings, model, data, versions) must match. ``dataset`` replaces the
    data that ``settings.data`` names (the Python API's arrays). ``stored``: the curves of an earlier
    ``--method pareto`` result, used instead of measuring them (``optsearch pareto``).
    """
    started = time.perf_counter()
    check_out_dir(out, overwrite, resume)
    fingerprint = run_fingerprint(settings)
    if resume:
        _check_resumable(partial_dir(out), fingerprint)
    prepared = prepare_run(settings, echo, dataset)
    recorded = [0]

    def keep(err: BaseException) -> bool:
        """Keep the work folder of an interrupted or crashed run that has something to resume."""
        return recorded[0] > 0 and not isinstance(err, OptsearchError)

    with work_dir(out, overwrite, resume, keep) as tmp:
        if settings.search.method == "analytic":
            searched = analytic_stage(prepared, settings, tmp, echo)
            result = measure(prepared, settings, searched, started)
        elif settings.search.method == "pareto":
            write_request(tmp, fingerprint)
            if stored is None and settings.search.sensitivity == "analytic":
                stored = analytic_curves(prepared, settings, echo)
            try:
                found = pareto_stage(
                    prepared.qmodel,
                    prepared.evaluator,
                    prepared.magnitudes,
                    settings.search,
                    settings.input_bits,
                    prepared.evaluator.samples,
                    tmp,
                    echo,
                    resume=resume,
                    stored=stored,
                    recorded=recorded,
                )
            except KeyboardInterrupt as err:
                total = len(prepared.qmodel.tensors)
                raise RunInterrupted(recorded[0], total, tmp, recorded[0] > 0) from err
            outcome = SearchOutcome(found.decisions, found.evaluations, found.seconds)
            searched = Searched(outcome, found.log, found.seconds, None)
            result = measure(prepared, settings, searched, started, pareto=found.record)
        else:
            start_bits, warm_note, warm_seconds = None, None, 0.0
            if settings.search.warm_start == "analytic":
                start_bits, warm_note, warm_seconds = warm_start_bits(prepared, settings, echo)
            searched = search_formats(
                prepared, settings.search, tmp, fingerprint, resume, recorded, echo, start_bits
            )
            if warm_note is not None:  # in formats.json's log, and its time in the search's
                searched = replace(
                    searched, log=[warm_note, *searched.log], seconds=searched.seconds + warm_seconds
                )
            certification = certify_stage(prepared, settings, searched, echo)
            result = measure(prepared, settings, searched, started, certification)
        result = _with_prediction(result, prepared, settings, echo)
        write_result(result, prepared, tmp)
        for name in (REQUEST_FILE, DECISIONS_FILE, CURVES_FILE):
            (tmp / name).unlink(missing_ok=True)
    return result


def _check_resumable(work: Path, fingerprint: Mapping[str, Any]) -> None:
    differences = fingerprint_differences(read_request(work), fingerprint)
    if differences:
        raise OptsearchError(
            f"cannot resume {work}: it was started with other settings or inputs: "
            + "; ".join(differences[:5])
            + ". Resume with the settings it was started with, or pass --overwrite (without --resume) "
            "to start again"
        )


def prepare_run(settings: RunSettings, echo: Echo, dataset: Dataset | None = None) -> Prepared:
    """Load and check model and data, build the search set's evaluator, measure every tensor's ``Z``."""
    inputs = prepare(
        settings.model,
        settings.data,
        unsafe_load=settings.unsafe_load,
        activation_point=settings.activation_point,
        fold_bn=settings.fold_bn,
        dataset=dataset,
        batch_size=settings.batch_size,
    )
    qmodel = inputs.qmodel
    selection, certify_set = inputs.search, None
    if settings.search.certify_fraction > 0:
        selection, certify_set = split(
            inputs.search, 1.0 - settings.search.certify_fraction, settings.data.seed
        )
    folding: dict[str, Any] = {}
    for fold in inputs.folds:
        echo(_fold_line(fold))
    if inputs.folds:
        parts = {"search": inputs.search, "held_out": inputs.held_out}
        folding["float_accuracy_before_folding"] = {
            name: _unfolded_accuracy(inputs, part, settings.batch_size)
            for name, part in parts.items()
            if part is not None
        }
    echo(
        f"{settings.model}: {len(qmodel.layers)} quantizable layers, {len(qmodel.tensors)} tensors; "
        f"search set {len(inputs.search)} samples"
        + (
            f" ({len(selection)} to decide on, {len(certify_set)} to certify the result)"
            if certify_set is not None
            else ""
        )
        + (f", held-out {len(inputs.held_out)}" if inputs.held_out is not None else ", no held-out set")
    )
    t0 = time.perf_counter()
    ranges = activation_ranges(qmodel, selection, inputs.preprocess, settings.batch_size)
    evaluator = CachedEvaluator(
        qmodel,
        selection,
        inputs.preprocess,
        settings.batch_size,
        settings.cache_mb,
        acceptance=settings.search.acceptance,
    )
    setup_seconds = time.perf_counter() - t0
    echo(f"float accuracy on the search set: {evaluator.float_accuracy:.2%}")
    warning = below_chance_warning(evaluator.float_accuracy, inputs.num_classes, "search set")
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    floor = budget_floor(settings.search, len(selection), evaluator.float_accuracy)
    if certify_set is not None:
        _check_certify_set(settings.search, len(certify_set), evaluator.float_accuracy)
    magnitudes = qmodel.magnitudes(ranges)
    return Prepared(inputs, evaluator, ranges, magnitudes, folding, setup_seconds, floor, certify_set)


def budget_floor(search: SearchSettings, samples: int, accuracy: float) -> float:
    """The smallest loss the search set can certify, which no budget goes below (guarded criterion).

    Refuses a guarded search that can certify nothing within eps (an ``OptsearchError`` naming the
    samples it needs), and warns when a paper-criterion search could not be certified.
    """
    certifiable, needed = _certifiable(search, samples, accuracy)
    if needed is None:
        return certifiable if search.criterion != "paper" else 0.0
    what = (
        f"the search set ({samples:,} samples, float accuracy {accuracy:.2%}) cannot certify a loss "
        f"of eps {search.eps:.2%} at {search.confidence:.0%} confidence: the smallest it certifies is "
        f"{certifiable:.2%}, and eps {search.eps:.2%} needs at least {needed:,} search samples"
    )
    if search.criterion != "paper":
        raise OptsearchError(
            f"{what}; give more data or a larger --search-fraction, a larger --eps (>= "
            f"{certifiable:.2%}), or --criterion paper (no guarantee on new data)"
        )
    print(f"warning: {what}; the budget will not hold on new data at that confidence", file=sys.stderr)
    return 0.0


def _certifiable(search: SearchSettings, samples: int, accuracy: float) -> tuple[float, int | None]:
    """The bound a candidate that flips nothing gets on ``samples`` at ``accuracy``, computed as the
    evaluator computes it (a closed form can differ in the last bit, and a lossless candidate would
    then miss its floor), and the samples eps needs when that bound is above eps (else None)."""
    certifiable = loss_upper_bound(0, 0, round(samples * accuracy), samples, search.confidence)
    if certifiable <= search.eps:
        return certifiable, None
    return certifiable, samples_needed(search.eps, accuracy, search.confidence)


def _check_certify_set(search: SearchSettings, samples: int, accuracy: float) -> None:
    """Refuse a certification set too small to certify eps even for a network that flips nothing
    there: backing off could never succeed, and would only spend bits."""
    certifiable, needed = _certifiable(search, samples, accuracy)
    if needed is None:
        return
    raise OptsearchError(
        f"--certify-fraction {search.certify_fraction:g} leaves {samples:,} samples to certify the result "
        f"on, which certify at best {certifiable:.2%} at {search.confidence:.0%} confidence; eps "
        f"{search.eps:.2%} needs at least {needed:,} (and more, to allow for any flip): give more data, a "
        "larger --certify-fraction or --eps, or leave --certify-fraction at 0"
    )


def search_formats(
    prepared: Prepared,
    search: SearchSettings,
    tmp: Path,
    fingerprint: Mapping[str, Any],
    resume: bool,
    recorded: list[int],
    echo: Echo,
    start_bits: Mapping[TensorId, int] | None = None,
) -> Searched:
    """Alg. 2 over the search set's evaluator, every evaluation and decision written as it happens.

    ``recorded[0]`` counts the decisions on disk (the caller keeps the work folder when it is > 0).
    ``start_bits``: a warm start (``warm_start_bits``), passed to ``opt_search``.
    """
    qmodel = prepared.qmodel
    tensors_by_layer = [q.tensors() for q in qmodel.layers]
    plan = [t for t, _, _ in search_plan(tensors_by_layer, search)]
    write_request(tmp, fingerprint)
    decided, log_lines, searched_before = load_decisions(tmp, plan) if resume else ({}, [], 0.0)
    recorded[0] = len(decided)
    trim_log(tmp, decided)
    if resume:
        echo(f"resuming {tmp}: {len(decided)} of {len(plan)} tensors decided before")
    t0 = time.perf_counter()
    last_decision = [t0]
    pending: list[str] = []

    def note(message: str) -> None:
        pending.append(message)
        tqdm.write(message, file=sys.stderr)

    with (
        open(tmp / LOG_FILE, "a") as log_file,
        open(tmp / DECISIONS_FILE, "a") as decisions_file,
        _Progress(qmodel, search) as progress,
    ):

        def decided_now(decision: TensorDecision) -> None:
            recorded[0] += 1  # first: an interruption during the write still keeps the folder
            now = time.perf_counter()
            seconds, last_decision[0] = round(now - last_decision[0], 3), now
            line = {"decision": decision_to_dict(decision), "notes": pending, "seconds": seconds}
            append_line(decisions_file, line)
            log_lines.extend(pending)
            pending.clear()
            progress.decided(decision)

        def evaluated(record: EvaluationRecord) -> None:
            _write_record(log_file, record)
            progress.evaluated(record)

        for decision in decided.values():
            progress.decided(decision)
        try:
            outcome = opt_search(
                prepared.evaluator,
                tensors_by_layer,
                prepared.magnitudes,
                search,
                on_evaluation=evaluated,
                on_decision=decided_now,
                decided=decided,
                log=note,
                floor=prepared.floor,
                start_bits=start_bits,
            )
        except KeyboardInterrupt as err:
            raise RunInterrupted(recorded[0], len(plan), tmp, recorded[0] > 0) from err
    return Searched(
        outcome,
        log_lines,
        searched_before + time.perf_counter() - t0,
        searched_before if resume else None,
    )


def gain_samples(
    prepared: Prepared, batch_size: int, seed: int, limit: int = ANALYTIC_GAIN_SAMPLES
) -> np.ndarray:
    """About ``limit`` search samples (stratified by class, ``seed``), preprocessed as the network
    sees them, converted batch by batch."""
    data = prepared.inputs.search
    chosen = data if len(data) <= limit else split(data, limit / len(data), seed)[0]
    return np.concatenate([x for x, _ in batches(chosen, batch_size, prepared.inputs.preprocess)])


def measured_gains(
    prepared: Prepared, settings: RunSettings, echo: Echo, label: str, limit: int = ANALYTIC_GAIN_SAMPLES
) -> NoiseGains:
    """The noise gains of every tensor on ``gain_samples`` (at most ``limit``), measured once per run."""
    if prepared.gains is None:
        qmodel = prepared.qmodel
        x = gain_samples(prepared, settings.batch_size, settings.data.seed, limit)
        echo(f"{label}: noise gains of {len(qmodel.tensors)} tensors on {len(x)} search samples")
        prepared.gains = noise_gains(qmodel, x)
    return prepared.gains


def analytic_plan(
    prepared: Prepared, settings: RunSettings, echo: Echo, option: str, label: str
) -> tuple[analytic.AnalyticPlan, NoiseGains]:
    """The noise gains on ``gain_samples`` and the smallest ``B_min`` whose noise-gain-equalised
    formats (Park's floor on the classifier) have a predicted mismatch bound within ``eps * a``
    (``core.analytic.choose_b_min``). ``option`` names the flag that asked, in errors; ``label``
    starts the line echoed."""
    gains = measured_gains(prepared, settings, echo, label)
    try:
        plan = _plan(prepared, settings, gains)
    except ValueError as err:
        raise OptsearchError(f"{option}: {err}") from err
    return plan, gains


def _budget(prepared: Prepared, settings: RunSettings) -> float:
    """The mismatch budget ``eps * a`` on the search set (``core.analytic.mismatch_budget``)."""
    return analytic.mismatch_budget(settings.search.eps, prepared.evaluator.float_accuracy)


def _plan(prepared: Prepared, settings: RunSettings, gains: NoiseGains) -> analytic.AnalyticPlan:
    """``core.analytic.choose_b_min`` within ``_budget``, Park's floor on the classifier; ValueError
    when no ``B_min`` fits."""
    return analytic.choose_b_min(
        gains,
        prepared.magnitudes,
        _budget(prepared, settings),
        settings.search.offset_rule,
        park_floors(prepared.qmodel),
    )


def _with_prediction(result: RunResult, prepared: Prepared, settings: RunSettings, echo: Echo) -> RunResult:
    """``result`` with its ``prediction`` and the seconds it took (in the total too)."""
    t0 = time.perf_counter()
    predicted = prediction(prepared, settings, result.formats, echo)
    if predicted is None:
        return result
    seconds = time.perf_counter() - t0
    timings = {**result.timings, "prediction_seconds": seconds}
    timings["total_seconds"] = result.timings["total_seconds"] + seconds
    return replace(result, analytic=predicted, timings=timings)


def prediction(
    prepared: Prepared, settings: RunSettings, found: Mapping[TensorId, Format], echo: Echo
) -> AnalyticRecord | None:
    """Sakr & Shanbhag beside the found formats (issue 23): the bits ``--method analytic`` would
    choose at eps and their bound, and the bound of ``found``. None when ``--predict-samples 0``
    and no gains were measured, or when the model has no class scores to take margins of."""
    if settings.predict_samples == 0 and prepared.gains is None:
        return None
    try:
        gains = measured_gains(prepared, settings, echo, "prediction", settings.predict_samples)
    except ModelError as err:
        echo(f"prediction skipped: {err}")
        return None
    # A pruned tensor of non-zero values is no small rounding noise: its term is infinite, and the
    # bound is given over the other tensors, with the pruned ones counted beside it.
    terms = analytic.tensor_bounds(gains, found, prepared.magnitudes)
    pruned = sorted(str(t) for t, term in terms.items() if math.isinf(term))
    kept = {t: f for t, f in found.items() if str(t) not in pruned}
    found_bound = analytic.mismatch_bound(gains, kept, prepared.magnitudes)
    budget = _budget(prepared, settings)
    try:
        plan = _plan(prepared, settings, gains)
    except ValueError as err:
        return AnalyticRecord(
            None, budget, None, gains.samples, found_bound=found_bound, note=str(err), pruned=pruned
        )
    bits = {str(t): f.bw for t, f in plan.formats.items()}
    return AnalyticRecord(plan.bound, budget, plan.b_min, gains.samples, bits, found_bound, pruned=pruned)


def analytic_curves(prepared: Prepared, settings: RunSettings, echo: Echo) -> StoredCurves:
    """``--sensitivity analytic``: every tensor's curve predicted from its noise gain on
    ``gain_samples`` (``methods.sensitivity.predicted_curves``), none measured (issue 23)."""
    gains = measured_gains(prepared, settings, echo, "sensitivity analytic")
    curves = predicted_curves(gains.gains, prepared.magnitudes, settings.search.offset_rule)
    source = f"analytic: Sakr & Shanbhag noise gains on {gains.samples} search samples"
    return StoredCurves(curves, source, CURVE_REACH * settings.search.eps)


def warm_start_bits(
    prepared: Prepared, settings: RunSettings, echo: Echo
) -> tuple[dict[TensorId, int], str, float]:
    """``--warm-start analytic`` (not Alg. 2): each tensor's start bitwidth, its ``analytic_plan``
    precision plus ``WARM_START_MARGIN``, at most ``bw0_cap``; all-zero tensors are left out (they
    are pruned whatever the start). Returns the bits, the run's log line and the seconds it took."""
    t0 = time.perf_counter()
    try:
        plan, gains = analytic_plan(prepared, settings, echo, "--warm-start analytic", "warm start")
    except OptsearchError as err:  # no B_min fits: the search starts at BW0, as Alg. 2 does
        note = f"warm start: analytic found no precisions within the budget ({err}); starting at BW0"
        echo(note)
        return {}, note, time.perf_counter() - t0
    cap = settings.search.bw0_cap
    bits = {t: min(f.bw + WARM_START_MARGIN, cap) for t, f in plan.formats.items() if not f.pruned}
    note = (
        f"warm start: analytic (not Alg. 2): each diagonal starts {WARM_START_MARGIN} bits above its "
        f"noise-gain-predicted precision (B_min {plan.b_min}, at most {cap} bits; noise gains on "
        f"{gains.samples} samples), raised as BW0 is while not acceptable"
    )
    echo(note)
    return bits, note, time.perf_counter() - t0


def analytic_formats(
    prepared: Prepared, settings: RunSettings, echo: Echo
) -> tuple[SearchOutcome, AnalyticRecord, list[EvaluationRecord]]:
    """``--method analytic``: no search. The smallest ``B_min`` whose noise-gain-equalised formats
    (Park's floor on the classifier) have a predicted mismatch bound within ``eps * a``
    (``core.analytic.choose_b_min``); the network is evaluated once on the search set.

    Returns synthetic decisions (each tensor's format, the network's loss; one evaluation, counted on
    the last tensor), the prediction, and one search-log record per tensor.
    """
    t0 = time.perf_counter()
    search, qmodel, evaluator = settings.search, prepared.qmodel, prepared.evaluator
    plan, gains = analytic_plan(prepared, settings, echo, "--method analytic", "analytic")
    evaluation = evaluator.evaluate(plan.formats)
    tensors_by_layer = [q.tensors() for q in qmodel.layers]
    order = search_plan(tensors_by_layer, search)
    rule = f"analytic: noise-gain equalised (B_min {plan.b_min})"
    decisions, records = [], []
    for i, (tensor, position, eps) in enumerate(order):
        fmt, last = plan.formats[tensor], i == len(order) - 1
        decisions.append(
            TensorDecision(
                tensor=tensor,
                position=position,
                eps=eps,
                fmt=fmt,
                loss=evaluation.loss,
                bw0=fmt.bw,
                start=fmt,
                diagonal=fmt,
                diagonal_loss=evaluation.statistic,
                local=fmt,
                local_loss=evaluation.statistic,
                rule=rule,
                evaluations=int(last),  # the one evaluation of the whole network
                bound=evaluation.bound,
            )
        )
        records.append(
            EvaluationRecord(
                tensor=tensor,
                fmt=fmt,
                phase="start",
                loss=evaluation.loss,
                accepted=evaluation.accepted(search.eps),
                exact=evaluation.exact,
                eps=search.eps,
                seconds=evaluation.seconds if last else 0.0,
                cached=not last,  # the others share that evaluation
                bound=evaluation.bound,
            )
        )
    seconds = time.perf_counter() - t0
    record = AnalyticRecord(plan.bound, plan.budget, plan.b_min, gains.samples)
    return SearchOutcome(tuple(decisions), 1, seconds), record, records


def analytic_stage(prepared: Prepared, settings: RunSettings, tmp: Path, echo: Echo) -> Searched:
    """``analytic_formats`` with its search log written and its line in the run's log."""
    outcome, record, records = analytic_formats(prepared, settings, echo)
    with open(tmp / LOG_FILE, "w") as log_file:
        for line in records:
            _write_record(log_file, line)
    loss = outcome.decisions[-1].loss if outcome.decisions else 0.0
    summary = (
        f"analytic: B_min {record.b_min}, predicted mismatch bound {record.bound:.3%} within the budget "
        f"{record.budget:.3%} (eps x float accuracy; noise gains on {record.samples} samples); measured "
        f"loss {loss:.3%} on the search set"
    )
    echo(summary)
    return Searched(outcome, [summary], outcome.seconds, None)


def certify_stage(
    prepared: Prepared, settings: RunSettings, searched: Searched, echo: Echo
) -> Certification | None:
    """Test the searched network on the certification set and back off where it fails
    (``methods.certify``); None without ``--certify-fraction``. Every step goes to the run's log."""
    if prepared.certify_set is None:
        return None
    qmodel, eps = prepared.qmodel, settings.search.eps
    evaluator = KerasEvaluator(
        qmodel,
        prepared.certify_set,
        prepared.inputs.preprocess,
        settings.batch_size,
        acceptance=settings.search.acceptance,
    )

    def note(step: BackOff) -> None:
        searched.log.append(
            f"certify: {step.tensor} {step.before} -> {step.after}: "
            f"{'' if step.exact else 'at least '}{step.statistic:.3%} on the certification set"
        )
        tqdm.write(searched.log[-1], file=sys.stderr)

    certification = certify(evaluator, searched.outcome.decisions, eps, on_step=note)
    first = certification.first
    verdict = (
        f"certify: the searched network on {len(prepared.certify_set)} samples no decision saw: "
        f"{'' if first.exact else 'at least '}{first.statistic:.3%} against eps {eps:.3%}; "
        + (
            "certified as searched"
            if not certification.steps and certification.certified
            else f"{len(certification.steps)} bits given back, "
            + ("certified" if certification.certified else f"NOT certified ({certification.why})")
        )
    )
    searched.log.append(verdict)
    echo(verdict)
    return certification


def measure(
    prepared: Prepared,
    settings: RunSettings,
    searched: Searched,
    started: float,
    certification: Certification | None = None,
    pareto: ParetoRecord | None = None,
) -> RunResult:
    """Accuracy of the found formats and of uniform 8-bit on every data part, and the costs.
    ``pareto``: ``--method pareto``'s record (its verification steps are the run's steps)."""
    inputs, qmodel, search_eval = prepared.inputs, prepared.qmodel, prepared.evaluator
    timings = {"setup_seconds": prepared.setup_seconds, "search_seconds": searched.seconds}
    if searched.seconds_before_resume is not None:
        timings["search_seconds_before_resume"] = searched.seconds_before_resume
    t0 = time.perf_counter()
    outcome = searched.outcome
    found = outcome.formats if certification is None else certification.formats
    steps = (
        _steps(outcome.decisions, search_eval, settings.search.independent)
        if pareto is None
        else _pareto_steps(pareto)
    )
    uniform8 = uniform_formats(qmodel, UNIFORM_BW, prepared.ranges, settings.search.offset_rule)
    accuracy = {"search": _accuracy(search_eval, found, uniform8)}
    for part, data in (("certify", prepared.certify_set), ("held_out", inputs.held_out)):
        if data is not None:
            evaluator = KerasEvaluator(
                qmodel, data, inputs.preprocess, settings.batch_size, acceptance=settings.search.acceptance
            )
            accuracy[part] = _accuracy(evaluator, found, uniform8)
    timings["report_evaluation_seconds"] = time.perf_counter() - t0
    qmodel.set_formats(found)
    # A resumed run's total counts the search time spent before the resume too, as search_seconds does.
    timings["total_seconds"] = time.perf_counter() - started + (searched.seconds_before_resume or 0.0)
    return RunResult(
        model=_model_info(inputs, prepared.folding, _float_inputs(qmodel, found)),
        data=DataInfo(
            source=inputs.search.source.split(" [")[0],
            search_samples=len(inputs.search),
            held_out_samples=len(inputs.held_out) if inputs.held_out is not None else 0,
        ),
        settings=settings,
        layers=_layer_results(
            qmodel,
            outcome.decisions,
            prepared.magnitudes,
            settings.search,
            certification.added_bits if certification else {},
        ),
        accuracy=accuracy,
        costs=_costs(qmodel, found, settings.input_bits, settings.activation_point),
        steps=steps,
        # Every decision's evaluations, also those made before a resume (the same as one run).
        evaluations=sum(d.evaluations for d in outcome.decisions)
        + (0 if pareto is None else pareto.adjust_evaluations),
        timings={**timings, "forward_passes": float(search_eval.passes)},
        versions=versions(),
        log=searched.log,
        pareto=pareto,
    )


def write_result(result: RunResult, prepared: Prepared, folder: Path) -> None:
    """The quantized model (with the found formats set), the folded float model if any, and every
    file rendered from ``result``."""
    qmodel = prepared.qmodel
    qmodel.save(str(folder / MODEL_FILE))
    if any(fold.into for fold in prepared.inputs.folds):  # the float model the formats belong to
        qmodel.float_model.save(str(folder / FOLDED_MODEL_FILE))
    ResultFolder.at(folder).write_json(result)
    write_rendered(result, folder)


def run_fingerprint(settings: RunSettings) -> dict[str, Any]:
    """What decides a run's result, recorded in its work folder and compared by ``--resume``: the
    settings, the model and data files by sha256, and the versions of the libraries and the machine."""
    spec_path = Path(settings.data.spec)
    return {
        **settings.fingerprint(
            sha256(settings.model) if settings.model.is_file() else None,
            sha256(spec_path) if spec_path.is_file() else None,
        ),
        "versions": versions(),
    }


def _write_record(stream: IO[str], record: EvaluationRecord) -> None:
    """One JSON line per evaluation, flushed at once so the log survives an interruption."""
    line = {
        "tensor": str(record.tensor),
        "bw": record.fmt.bw,
        "f": record.fmt.f,
        "phase": record.phase,
        "loss": record.loss,
        "accepted": record.accepted,
        "exact": record.exact,
        "eps": record.eps,
        **({} if record.bound is None else {"bound": record.bound}),
        "seconds": round(record.seconds, 6),
        "cached": record.cached,
    }
    stream.write(json.dumps(line) + "\n")
    stream.flush()


class _Progress:
    """A tqdm bar per tensor type (one bar when interleaved) with the current layer, format and loss."""

    def __init__(self, qmodel: QuantizedModel, settings: SearchSettings) -> None:
        plan = search_plan([q.tensors() for q in qmodel.layers], settings)
        self.interleave = settings.interleave
        self.totals: dict[str, int] = {}
        for tensor, _, _ in plan:
            key = "tensors" if self.interleave else KIND_NAMES[tensor.kind]
            self.totals[key] = self.totals.get(key, 0) + 1
        self.bar: tqdm[Any] | None = None
        self.key: str | None = None

    def _bar_for(self, tensor: TensorId) -> tqdm[Any]:
        key = "tensors" if self.interleave else KIND_NAMES[tensor.kind]
        if key != self.key or self.bar is None:
            if self.bar is not None:
                self.bar.close()
            self.key = key
            self.bar = tqdm(
                total=self.totals[key], desc=f"{key:11s}", unit="tensor", file=sys.stderr, leave=True
            )
        return self.bar

    def evaluated(self, record: EvaluationRecord) -> None:
        self._bar_for(record.tensor).set_postfix_str(
            f"{record.tensor.layer} {record.fmt} loss {record.loss:.3%}", refresh=False
        )

    def decided(self, decision: TensorDecision) -> None:
        bar = self._bar_for(decision.tensor)
        bar.set_postfix_str(
            f"{decision.tensor.layer} -> {decision.fmt} loss {decision.loss:.3%}", refresh=False
        )
        bar.update(1)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _steps(
    decisions: tuple[TensorDecision, ...], evaluator: KerasEvaluator, independent: bool
) -> list[dict[str, Any]]:
    """The loss of the network after each decision, in search order (paper Fig. 5b / 11a).

    Dependent: each decision's own loss (it was measured with everything decided before it).
    Independent: the decisions combined naively, measured one more time per step.
    """
    steps: list[dict[str, Any]] = []
    applied: dict[TensorId, Format] = {}
    previous = 0.0
    for decision in decisions:
        applied[decision.tensor] = decision.fmt
        if independent:
            loss = evaluator.evaluate(dict(applied)).loss
        else:  # a pruned all-zero tensor was not evaluated: the network did not change
            loss = decision.loss if decision.evaluations else previous
        previous = loss
        steps.append(
            {"tensor": str(decision.tensor), "bw": decision.fmt.bw, "f": decision.fmt.f, "loss": loss}
        )
    return steps


def _pareto_steps(record: ParetoRecord) -> list[dict[str, Any]]:
    """``--method pareto``: the whole network's loss at each verification step (the first one, then
    every rung moved, refinements refused included, as they were tried)."""
    out = []
    for step in record.steps:
        tensor = step["tensor"] or "allocation"
        bw, f = step["after"] if step["after"] else (None, None)
        out.append({"tensor": f"{step['action']} {tensor}", "bw": bw, "f": f, "loss": step["loss"]})
    return out


def _accuracy(
    evaluator: KerasEvaluator, found: Mapping[TensorId, Format], uniform8: Mapping[TensorId, Format]
) -> Accuracy:
    q = evaluator.evaluate(found)
    u = evaluator.evaluate(uniform8)
    n = evaluator.samples
    return Accuracy(
        n,
        evaluator.float_accuracy,
        q.correct / n,
        q.loss,
        u.correct / n,
        u.loss,
        evaluator.float_correct,
        q.losses,
        q.gains,
        u.losses,
        u.gains,
        q.mismatches,
    )


def _costs(
    qmodel: QuantizedModel,
    found: Mapping[TensorId, Format],
    input_bits: int,
    activation_point: ActivationPoint,
) -> dict[str, Costs]:
    """The paper's costs (eq. 7) and memory as the target counts it (weights in flash, the peak of
    the activation arena in RAM) of the found formats, uniform 8-bit and float32."""
    layers = qmodel.layers
    schedule = activation_schedule(qmodel.float_model, layers, activation_point)
    found_bits = {t: f.bw for t, f in found.items()}
    networks = {
        "quantized": (found_bits, input_bits, buffer_bits(schedule, found_bits, input_bits)),
        "uniform8": (
            uniform_bits(layers, UNIFORM_BW),
            input_bits,
            uniform_buffer_bits(schedule, UNIFORM_BW),
        ),
        "float32": (uniform_bits(layers, FLOAT_BITS), FLOAT_BITS, uniform_buffer_bits(schedule, FLOAT_BITS)),
    }
    out = {}
    for name, (bits, in_bits, buffers) in networks.items():
        cost = network_cost(layers, bits, in_bits)
        weights = weights_memory(layers, bits)
        packed = peak_activation_memory(schedule, buffers, "packed")
        aligned = peak_activation_memory(schedule, buffers, "aligned")
        out[name] = Costs(
            {str(kind): bits_ for kind, bits_ in cost.memory_bits_by_kind.items()},
            cost.memory_bits,
            cost.multiply_cost,
            cost.bops,
            weights.packed_bytes,
            weights.aligned_bytes,
            packed.bytes,
            aligned.bytes,
            packed.step,
        )
    return out


def _layer_results(
    qmodel: QuantizedModel,
    decisions: tuple[TensorDecision, ...],
    magnitudes: Mapping[TensorId, float],
    search: SearchSettings,
    added_bits: Mapping[TensorId, int],
) -> list[LayerResult]:
    by_tensor = {d.tensor: d for d in decisions}
    scheduled = {t: eps for t, _, eps in search_plan([q.tensors() for q in qmodel.layers], search)}
    layers = []
    for q in qmodel.layers:
        tensors: dict[str, TensorResult] = {}
        for tensor in q.tensors():
            d = by_tensor[tensor]
            added = added_bits.get(tensor, 0)
            tensors[tensor.kind] = TensorResult(
                bw=d.fmt.bw + added,
                f=d.fmt.f + added,
                eps=d.eps,
                loss=d.loss,
                z=magnitudes[tensor],
                bw0=d.bw0,
                start=(d.start.bw, d.start.f),
                diagonal=(d.diagonal.bw, d.diagonal.f),
                local=(d.local.bw, d.local.f),
                rule=d.rule,
                evaluations=d.evaluations,
                bound=d.bound,
                scheduled_eps=scheduled[tensor] if scheduled[tensor] != d.eps else None,
                added_bits=added or None,
            )
        layers.append(
            LayerResult(
                q.index,
                q.name,
                q.class_name,
                q.activation_at,
                q.weight_count,
                q.bias_count,
                q.activation_count,
                q.macs,
                tensors,
            )
        )
    return layers


def _model_info(inputs: Inputs, folding: Mapping[str, Any], float_inputs: dict[str, str] | None) -> ModelInfo:
    return ModelInfo(
        name=inputs.model_path.stem,
        sha256=sha256(inputs.model_path),
        input_shape=list(inputs.model.inputs[0].shape[1:]),
        classes=inputs.num_classes,
        batchnorm_folds=[asdict(fold) for fold in inputs.folds] if inputs.folds else None,
        float_accuracy_before_folding=folding.get("float_accuracy_before_folding"),
        float_inputs=float_inputs,
    )


def _float_inputs(qmodel: QuantizedModel, found: Mapping[TensorId, Format]) -> dict[str, str] | None:
    """Each quantizable layer that reads a real-valued input, and the layer that makes it real (a float
    BatchNorm, a Rescaling, ...), for the report's note on hardware; None when the network is not one
    the deployment references read (its exporters say why)."""
    try:
        netlist = read_netlist(qmodel.keras_model, found, qmodel.keras_model.name)
    except DeployError:
        return None
    return {layer: f"{node.source} '{node.name}'" for layer, node in real_inputs(netlist).items()}


def _fold_line(fold: Fold) -> str:
    """One line per BatchNorm under --fold-bn: where it went, or why it stayed."""
    if not fold.into:
        return f"--fold-bn: '{fold.batchnorm}' kept in float: {fold.note}"
    exact = "" if fold.exact else " (not exact: border outputs change)"
    return f"--fold-bn: '{fold.batchnorm}' folded {fold.how} into {', '.join(fold.into)}{exact}"


def _unfolded_accuracy(inputs: Inputs, part: Dataset, batch_size: int) -> float:
    """Top-1 accuracy of the model as given (before --fold-bn) on ``part``, for the report."""
    correct = 0
    for x, y in batches(part, batch_size, inputs.preprocess):
        scores = inputs.model(x, training=False)
        correct += int(np.sum(predicted_classes(scores).numpy() == y))
    return correct / len(part)
