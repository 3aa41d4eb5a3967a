"""The main job: search the formats of a model and write every output, atomically (spec §5-§8).

Everything is written into the work folder ``<out>.partial`` beside the output folder, renamed into
place only when the run has finished: an interrupted or failed run never leaves a half result. An
interrupted run keeps its work folder (the decisions made so far) for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from optsearch import __version__
from optsearch.core.costs import FLOAT_BITS, network_cost, uniform_bits
from optsearch.core.errors import OptsearchError
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import KIND_NAMES, ActivationPoint, FoldMode, TensorId
from optsearch.data import Dataset, batches
from optsearch.deploy.netlist import DeployError, real_inputs
from optsearch.evaluate.engine import DEFAULT_CACHE_MB, CachedEvaluator
from optsearch.evaluate.keras import (
    DEFAULT_BATCH_SIZE,
    KerasEvaluator,
    activation_ranges,
    below_chance_warning,
    predicted_classes,
)
from optsearch.model.graph import Fold, QuantizedModel, uniform_formats
from optsearch.render.plots import plot_bitwidths, plot_loss_steps
from optsearch.render.report import formats_csv, report_markdown
from optsearch.results.result import Accuracy, Costs, LayerResult, RunResult, TensorResult
from optsearch.run.deployed import read_netlist
from optsearch.run.inputs import DataSettings, Inputs, prepare
from optsearch.run.outdir import FOLDED_MODEL_FILE, MODEL_FILE, check_out_dir, partial_dir, work_dir
from optsearch.run.resume import (
    DECISIONS_FILE,
    LOG_FILE,
    REQUEST_FILE,
    append_line,
    decision_to_dict,
    fingerprint_differences,
    load_decisions,
    read_request,
    trim_log,
    write_request,
)
from optsearch.search.opt_search import (
    EvaluationRecord,
    SearchSettings,
    TensorDecision,
    opt_search,
    search_plan,
)

UNIFORM_BW = 8


@dataclass(frozen=True)
class RunRequest:
    """Everything ``optsearch run`` needs to know."""

    model_path: Path
    data: DataSettings
    search: SearchSettings
    out_dir: Path
    overwrite: bool = False
    unsafe_load: bool = False
    activation_point: ActivationPoint = "activation"
    fold_bn: FoldMode = "off"
    batch_size: int = DEFAULT_BATCH_SIZE
    input_bits: int = 8
    cache_mb: float = DEFAULT_CACHE_MB
    resume: bool = False


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during the search: how far it got and where the work folder is."""

    def __init__(self, decided: int, total: int, work: Path, kept: bool) -> None:
        super().__init__(f"interrupted after {decided} of {total} tensors")
        self.decided = decided
        self.total = total
        self.work = work
        self.kept = kept


def run(request: RunRequest, echo: Callable[[str], None] = print) -> RunResult:
    """Search the formats of ``request.model_path`` and write formats, report, plots, model, log.

    Everything is written into ``<out>.partial`` and renamed to ``--out`` at the end. With
    ``request.resume`` the decisions recorded there by an interrupted run are applied, not searched
    again; the fingerprint of the run (settings, model, data, versions) must match.
    """
    started = time.perf_counter()
    check_out_dir(request.out_dir, request.overwrite, request.resume)
    fingerprint = request_fingerprint(request)
    work = partial_dir(request.out_dir)
    if request.resume:
        differences = fingerprint_differences(read_request(work), fingerprint)
        if differences:
            raise OptsearchError(
                f"cannot resume {work}: it was started with other settings or inputs: "
                + "; ".join(differences[:5])
                + ". Resume with the settings it was started with, or pass --overwrite (without --resume) "
                "to start again"
            )
    inputs = prepare(
        request.model_path,
        request.data,
        unsafe_load=request.unsafe_load,
        activation_point=request.activation_point,
        fold_bn=request.fold_bn,
    )
    qmodel = inputs.qmodel
    folding: dict[str, Any] = {}
    for fold in inputs.folds:
        echo(_fold_line(fold))
    if inputs.folds:
        parts = {"search": inputs.search, "held_out": inputs.held_out}
        folding["float_accuracy_before_folding"] = {
            name: _unfolded_accuracy(inputs, part, request.batch_size)
            for name, part in parts.items()
            if part is not None
        }
    echo(
        f"{request.model_path}: {len(qmodel.layers)} quantizable layers, {len(qmodel.tensors)} tensors; "
        f"search set {len(inputs.search)} samples"
        + (f", held-out {len(inputs.held_out)}" if inputs.held_out is not None else ", no held-out set")
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ranges = activation_ranges(qmodel, inputs.search, inputs.preprocess, request.batch_size)
    search_eval = CachedEvaluator(
        qmodel, inputs.search, inputs.preprocess, request.batch_size, request.cache_mb
    )
    timings["setup_seconds"] = time.perf_counter() - t0
    echo(f"float accuracy on the search set: {search_eval.float_accuracy:.2%}")
    warning = below_chance_warning(search_eval.float_accuracy, inputs.num_classes, "search set")
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    magnitudes = {
        t: (ranges[t.layer] if t.kind == "A" else qmodel.largest_magnitude(t)) for t in qmodel.tensors
    }
    tensors_by_layer = [q.tensors() for q in qmodel.layers]
    plan = [t for t, _, _ in search_plan(tensors_by_layer, request.search)]
    recorded = [0]

    def keep(err: BaseException) -> bool:
        """Keep the work folder of an interrupted or crashed run that has something to resume."""
        return recorded[0] > 0 and not isinstance(err, OptsearchError)

    with work_dir(request.out_dir, request.overwrite, request.resume, keep) as tmp:
        write_request(tmp, fingerprint)
        decided, log_lines, searched_before = load_decisions(tmp, plan) if request.resume else ({}, [], 0.0)
        recorded[0] = len(decided)
        trim_log(tmp, decided)
        if request.resume:
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
            _Progress(qmodel, request.search) as progress,
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

            for decision in decided.values():
                progress.decided(decision)
            try:
                outcome = opt_search(
                    search_eval,
                    tensors_by_layer,
                    magnitudes,
                    request.search,
                    on_evaluation=lambda record: (
                        _write_record(log_file, record),
                        progress.evaluated(record),
                    ),
                    on_decision=decided_now,
                    decided=decided,
                    log=note,
                )
            except KeyboardInterrupt as err:
                raise RunInterrupted(recorded[0], len(plan), tmp, recorded[0] > 0) from err
        timings["search_seconds"] = searched_before + time.perf_counter() - t0
        if request.resume:
            timings["search_seconds_before_resume"] = searched_before
        t0 = time.perf_counter()
        found = outcome.formats
        steps = _steps(outcome.decisions, search_eval, request.search.independent)
        uniform8 = uniform_formats(qmodel, UNIFORM_BW, ranges, request.search.offset_rule)
        accuracy = {"search": _accuracy(search_eval, found, uniform8)}
        if inputs.held_out is not None:
            held_eval = KerasEvaluator(qmodel, inputs.held_out, inputs.preprocess, request.batch_size)
            accuracy["held_out"] = _accuracy(held_eval, found, uniform8)
        timings["report_evaluation_seconds"] = time.perf_counter() - t0
        qmodel.set_formats(found)
        qmodel.save(str(tmp / MODEL_FILE))
        float_inputs = _float_inputs(qmodel, found)
        if any(fold.into for fold in inputs.folds):  # the float model the formats belong to
            qmodel.float_model.save(str(tmp / FOLDED_MODEL_FILE))
        timings["total_seconds"] = time.perf_counter() - started
        result = RunResult(
            model={**_model_info(inputs), **folding, **float_inputs},
            data=_data_info(inputs, request.data),
            settings=_settings_info(request),
            layers=_layer_results(qmodel, outcome.decisions, magnitudes),
            accuracy=accuracy,
            costs=_costs(qmodel, found, request.input_bits),
            steps=steps,
            # Every decision's evaluations, also those made before a resume (the same as one run).
            evaluations=sum(d.evaluations for d in outcome.decisions),
            timings={**timings, "forward_passes": float(search_eval.passes)},
            versions=versions(),
            log=log_lines,
        )
        write_outputs(result, tmp)
        for name in (REQUEST_FILE, DECISIONS_FILE):
            (tmp / name).unlink(missing_ok=True)
    return result


def request_fingerprint(request: RunRequest) -> dict[str, Any]:
    """What decides a run's result, recorded in its work folder and compared by ``--resume``.

    The search settings (``batch_size`` included: it decides how the data are batched), the model
    and data files by sha256, and the versions of the libraries and the machine. ``cache_mb`` only
    changes what is recomputed, not any number, and is left out.
    """
    settings = {k: v for k, v in _settings_info(request).items() if k != "cache_mb"}
    data = request.data
    spec_path = Path(data.spec)
    data_info: dict[str, Any] = {
        "spec": data.spec,
        "scale": data.scale,
        "resize": list(data.resize) if data.resize else None,
        "search_fraction": data.search_fraction,
        "seed": data.seed,
    }
    if spec_path.is_file():
        data_info["sha256"] = sha256(spec_path)
    model = {"path": str(request.model_path)}
    if request.model_path.is_file():
        model["sha256"] = sha256(request.model_path)
    return {
        "settings": settings,
        "model": model,
        "data": data_info,
        "unsafe_load": request.unsafe_load,
        "versions": versions(),
    }


def write_outputs(result: RunResult, folder: Path) -> None:
    """formats.json, formats.csv, report.md and the plots, all rendered from ``result``."""
    (folder / "formats.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (folder / "formats.csv").write_text(formats_csv(result))
    (folder / "report.md").write_text(report_markdown(result))
    plot_bitwidths(result, folder / "bitwidths.png")
    plot_loss_steps(result, folder / "loss_steps.png")


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


def _accuracy(
    evaluator: KerasEvaluator, found: Mapping[TensorId, Format], uniform8: Mapping[TensorId, Format]
) -> Accuracy:
    q = evaluator.evaluate(found)
    u = evaluator.evaluate(uniform8)
    n = evaluator.samples
    return Accuracy(n, evaluator.float_accuracy, q.correct / n, q.loss, u.correct / n, u.loss)


def _costs(qmodel: QuantizedModel, found: Mapping[TensorId, Format], input_bits: int) -> dict[str, Costs]:
    def as_costs(cost: Any) -> Costs:
        return Costs(dict(cost.memory_bits_by_kind), cost.memory_bits, cost.multiply_cost, cost.bops)

    layers = qmodel.layers
    return {
        "quantized": as_costs(network_cost(layers, {t: f.bw for t, f in found.items()}, input_bits)),
        "uniform8": as_costs(network_cost(layers, uniform_bits(layers, UNIFORM_BW), input_bits)),
        "float32": as_costs(network_cost(layers, uniform_bits(layers, FLOAT_BITS), FLOAT_BITS)),
    }


def _layer_results(
    qmodel: QuantizedModel, decisions: tuple[TensorDecision, ...], magnitudes: Mapping[TensorId, float]
) -> list[LayerResult]:
    by_tensor = {d.tensor: d for d in decisions}
    layers = []
    for q in qmodel.layers:
        tensors = {}
        for tensor in q.tensors():
            d = by_tensor[tensor]
            tensors[tensor.kind] = TensorResult(
                bw=d.fmt.bw,
                f=d.fmt.f,
                eps=d.eps,
                loss=d.loss,
                z=magnitudes[tensor],
                bw0=d.bw0,
                start=(d.start.bw, d.start.f),
                diagonal=(d.diagonal.bw, d.diagonal.f),
                local=(d.local.bw, d.local.f),
                rule=d.rule,
                evaluations=d.evaluations,
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_info(inputs: Inputs) -> dict[str, Any]:
    info: dict[str, Any] = {
        "path": str(inputs.model_path),
        "name": inputs.model_path.stem,
        "sha256": sha256(inputs.model_path),
        "input_shape": list(inputs.model.inputs[0].shape[1:]),
        "classes": inputs.num_classes,
    }
    if inputs.folds:
        info["batchnorm_folds"] = [asdict(fold) for fold in inputs.folds]
    return info


def _float_inputs(qmodel: QuantizedModel, found: Mapping[TensorId, Format]) -> dict[str, Any]:
    """``float_inputs``: each quantizable layer that reads a real-valued input, and the layer that
    makes it real (a float BatchNorm, a Rescaling, ...), for the report's note on hardware; nothing
    when the network is not one the deployment references read (its exporters say why)."""
    try:
        netlist = read_netlist(qmodel.keras_model, found, qmodel.keras_model.name)
    except DeployError:
        return {}
    causes = {layer: f"{node.source} '{node.name}'" for layer, node in real_inputs(netlist).items()}
    return {"float_inputs": causes}


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


def _data_info(inputs: Inputs, data: DataSettings) -> dict[str, Any]:
    return {
        "source": inputs.search.source.split(" [")[0],
        "spec": data.spec,
        "search_samples": len(inputs.search),
        "held_out_samples": len(inputs.held_out) if inputs.held_out is not None else 0,
        "search_fraction": data.search_fraction,
        "seed": data.seed,
        "scale": data.scale,
        "resize": list(data.resize) if data.resize else None,
    }


def _settings_info(request: RunRequest) -> dict[str, Any]:
    s = request.search
    return {
        "eps": s.eps,
        "independent": s.independent,
        "bw0": dict(s.bw0),
        "bw0_step": s.bw0_step,
        "bw0_cap": s.bw0_cap,
        "delta": s.delta,
        "offset_rule": s.offset_rule,
        "type_order": list(s.type_order),
        "layer_order": s.layer_order,
        "interleave": s.interleave,
        "allocation": {kind: asdict(rule) for kind, rule in s.allocation.items()},
        "activation_point": request.activation_point,
        "fold_bn": request.fold_bn,
        "input_bits": request.input_bits,
        "batch_size": request.batch_size,
        "cache_mb": request.cache_mb,
    }


#: CPU instruction-set extensions that change which kernels TensorFlow and oneDNN run.
_SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
)


def versions() -> dict[str, str]:
    """Versions that decide the numbers (recorded in formats.json; see docs/robustness.md)."""
    return {
        "optsearch": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_flags": cpu_flags(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


def cpu_flags() -> str:
    """The SIMD extensions of this CPU that TensorFlow may use (from /proc/cpuinfo; "unknown" elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith(("flags", "Features")):
                    present = set(line.partition(":")[2].split())
                    return " ".join(f for f in _SIMD_FLAGS if f in present) or "none"
    except OSError:
        pass
    return "unknown"


def load_formats(path: Path, qmodel: QuantizedModel) -> dict[TensorId, Format]:
    """The formats of a formats.json, checked against the model: every tensor, nothing else."""
    try:
        data = json.loads(path.read_text())
        layers = data["layers"]
        formats = {
            TensorId(layer["name"], kind): Format(int(t["bw"]), int(t["f"]))
            for layer in layers
            for kind, t in layer["tensors"].items()
        }
    except FileNotFoundError as err:
        raise OptsearchError(f"formats file not found: {path}") from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise OptsearchError(
            f"{path} is not a formats.json written by `optsearch run` ({type(err).__name__}: {err})"
        ) from err
    expected = set(qmodel.tensors)
    missing = sorted(str(t) for t in expected - set(formats))
    extra = sorted(str(t) for t in set(formats) - expected)
    if missing or extra:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"not in the model {', '.join(extra[:5])}"] if extra else []
        )
        raise OptsearchError(f"{path} does not match the model: {'; '.join(parts)}")
    return formats
