"""The result of a run, as plain data: every output (JSON, CSV, Markdown, plots) is rendered from it.

No Keras here. ``RunResult.to_dict`` / ``from_dict`` round-trip through JSON without loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from optsearch.core.confidence import (
    METHOD,
    accuracy_interval,
    certifiable_loss,
    loss_interval,
    loss_upper_bound,
)
from optsearch.core.costs import savings
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.settings import RunSettings

FORMATS_SCHEMA = "optsearch.formats/1"

#: The fields of formats.json that differ between two runs with the same model, data, settings and
#: seed on one machine: how long things took. Everything else is byte-identical (docs/robustness.md).
TIMING_FIELDS = ("timings",)


def without_timings(data: dict[str, Any]) -> dict[str, Any]:
    """A formats.json's data without ``TIMING_FIELDS``: what two identical runs agree on, byte for byte."""
    return {key: value for key, value in data.items() if key not in TIMING_FIELDS}


@dataclass(frozen=True)
class TensorResult:
    """The format chosen for one tensor and how the search got there (spec §6)."""

    bw: int
    f: int
    eps: float
    """The tensor's budget ``eps_lp`` (eq. 9)."""
    loss: float
    """``da`` of the network when this tensor was decided (dependent: everything decided so far)."""
    z: float
    """Largest magnitude of the float tensor (activations: over the search set)."""
    bw0: int
    start: tuple[int, int]
    diagonal: tuple[int, int]
    local: tuple[int, int]
    rule: str
    evaluations: int
    bound: float | None = None
    """Guarded criterion: the upper confidence bound of ``loss`` that met ``eps``."""
    scheduled_eps: float | None = None
    """When the budget was raised to the smallest loss the search data can certify: eq. 9's own."""
    added_bits: int | None = None
    """Bits the certification gave back after the search (``bw``/``f`` include them)."""

    @property
    def format(self) -> Format:
        return Format(self.bw, self.f)

    @property
    def ap_fixed(self) -> str:
        """hls4ml's type for this format, or ``pruned`` when BW = 1."""
        fmt = self.format
        return "pruned" if fmt.pruned else fmt.ap_fixed()


@dataclass(frozen=True)
class LayerResult:
    """One quantizable layer: its sizes and the result for each of its tensors."""

    index: int
    name: str
    type: str
    activation_at: str
    weights: int
    biases: int
    activations: int
    macs: int
    tensors: dict[str, TensorResult]
    """Keyed by ``W``, ``B`` (when the layer has a bias), ``A``."""


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy of the float model, the found formats and the 8-bit baseline on one data part,
    with the paired counts behind each loss (absent in 0.1.0's files) for its interval."""

    samples: int
    float_model: float
    quantized: float
    quantized_loss: float
    uniform8: float
    uniform8_loss: float
    float_correct: int | None = None
    losses: int | None = None
    """Samples the float model gets right and the found formats wrong."""
    gains: int | None = None
    """Samples the float model gets wrong and the found formats right."""
    uniform8_losses: int | None = None
    uniform8_gains: int | None = None
    mismatches: int | None = None
    """Samples whose top-1 class under the found formats differs from the float model's (the
    mismatch that ``AnalyticRecord.found_bound`` predicts); absent before issue 23."""

    @property
    def mismatch_rate(self) -> float | None:
        """``mismatches / samples``, when counted."""
        return None if self.mismatches is None else self.mismatches / self.samples

    @property
    def counted(self) -> bool:
        """Whether the paired counts are there (files of 0.1.0 have only the rates)."""
        return None not in (self.float_correct, self.losses, self.gains)

    def loss_interval(self, confidence: float) -> tuple[float, float] | None:
        """Two-sided interval of the found formats' true relative loss (``core.confidence``)."""
        if not self.counted:
            return None
        return loss_interval(self.losses, self.gains, self.float_correct, self.samples, confidence)  # type: ignore[arg-type]

    def loss_bound(self, confidence: float) -> float | None:
        """One-sided upper confidence bound of the found formats' true relative loss."""
        if not self.counted:
            return None
        return loss_upper_bound(self.losses, self.gains, self.float_correct, self.samples, confidence)  # type: ignore[arg-type]

    def uniform8_loss_interval(self, confidence: float) -> tuple[float, float] | None:
        if self.float_correct is None or self.uniform8_losses is None or self.uniform8_gains is None:
            return None
        return loss_interval(
            self.uniform8_losses, self.uniform8_gains, self.float_correct, self.samples, confidence
        )

    def accuracy_interval(self, which: str, confidence: float) -> tuple[float, float] | None:
        """Exact two-sided interval of ``float`` or ``quantized`` top-1 accuracy."""
        if not self.counted:
            return None
        correct = self.float_correct if which == "float" else self.float_correct - self.losses + self.gains  # type: ignore[operator]
        return accuracy_interval(correct, self.samples, confidence)  # type: ignore[arg-type]

    def budget_verdict(self, eps: float, confidence: float) -> str:
        """Whether eps holds on these samples: ``holds`` (the upper bound is within eps), ``within,
        not certified`` (observed within eps, bound above), ``over`` (observed above eps)."""
        bound = self.loss_bound(confidence)
        if self.quantized_loss > eps:
            return "over"
        if bound is None or bound > eps:
            return "within, not certified"
        return "holds"

    def intervals(self, confidence: float) -> dict[str, Any]:
        """The intervals formats.json records beside the rates (derived: not read back)."""
        return {
            "confidence": confidence,
            "method": METHOD,
            "accuracy_method": "exact Clopper-Pearson",
            "float_model": self.accuracy_interval("float", confidence),
            "quantized": self.accuracy_interval("quantized", confidence),
            "quantized_loss": self.loss_interval(confidence),
            "quantized_loss_upper_bound": self.loss_bound(confidence),
            "uniform8_loss": self.uniform8_loss_interval(confidence),
        }


@dataclass(frozen=True)
class Costs:
    """Memory (bits, per type and total), multiply cost and BOPs of one network (spec §8)."""

    memory_bits: dict[str, int]
    memory_bits_total: int
    multiply_cost: int
    bops: int
    weights_bytes: int | None = None
    """Flash/ROM: every weight and bias at its bitwidth, packed (``core.memory``)."""
    weights_bytes_aligned: int | None = None
    """The same with each value rounded up to a C integer type (int8/int16/int32)."""
    peak_activation_bytes: int | None = None
    """RAM: the largest set of activation buffers alive at once, layers run in ``model.layers``
    order (TFLite Micro's arena), one sample, packed."""
    peak_activation_bytes_aligned: int | None = None
    peak_step: str | None = None
    """The step at which the activation memory peaks."""

    @property
    def memory_bytes(self) -> float:
        return self.memory_bits_total / 8

    @property
    def hardware_bytes(self) -> dict[str, int] | None:
        """Memory as the target counts it (bytes): weights packed and as C arrays, the activation
        arena's peak packed and as C arrays; None for a file without them (0.1.0)."""
        values = {
            "weights": self.weights_bytes,
            "weights_aligned": self.weights_bytes_aligned,
            "peak_activations": self.peak_activation_bytes,
            "peak_activations_aligned": self.peak_activation_bytes_aligned,
        }
        if any(v is None for v in values.values()):
            return None
        return {k: int(v) for k, v in values.items() if v is not None}

    def hardware_saving(self, base: Costs) -> dict[str, float] | None:
        """``1 - found / base`` for each of ``hardware_bytes`` (the savings formula of eq. 7's)."""
        mine, theirs = self.hardware_bytes, base.hardware_bytes
        if mine is None or theirs is None:
            return None
        return {k: 1.0 - mine[k] / theirs[k] for k in mine}

    def saving(self, base: Costs) -> dict[str, float]:
        """Relative savings against ``base`` (0.5 = half): memory, multiply cost, BOPs (spec §8)."""
        return savings(
            (self.memory_bits_total, self.multiply_cost, self.bops),
            (base.memory_bits_total, base.multiply_cost, base.bops),
        )


@dataclass(frozen=True)
class ModelInfo:
    """What the run measured of the model (its path is in the settings)."""

    name: str
    sha256: str
    input_shape: list[int | None]
    classes: int
    batchnorm_folds: list[dict[str, Any]] | None = None
    """What ``--fold-bn`` did with each BatchNorm (only with ``--fold-bn``)."""
    float_accuracy_before_folding: dict[str, float] | None = None
    float_inputs: dict[str, str] | None = None
    """Each quantizable layer that reads a real-valued input, and the layer that makes it real."""

    @property
    def folded(self) -> list[str]:
        """The BatchNorms folded into other layers (``--fold-bn``), in model order."""
        return [fold["batchnorm"] for fold in self.batchnorm_folds or [] if fold.get("into")]


@dataclass(frozen=True)
class DataInfo:
    """What the run measured of its data (where they came from is in the settings)."""

    source: str
    search_samples: int
    held_out_samples: int

    @property
    def labels_from_model(self) -> bool:
        """True when the data had no labels and the float model's own top-1 predictions stood in."""
        return "(labels: the float model's own predictions)" in self.source


#: The optional parts of ``ModelInfo``, written only when present (as 0.1.0 did).
_OPTIONAL_MODEL = ("batchnorm_folds", "float_accuracy_before_folding", "float_inputs")


@dataclass(frozen=True)
class AnalyticRecord:
    """Sakr & Shanbhag's prediction for a run (``core.analytic``, issue 23): the noise-gain-equalised
    precisions ``--method analytic`` chooses at eps (``B_min``, each tensor's bits, their mismatch
    bound within the budget ``eps * a``), and the bound of the formats the run found, to set beside
    the measured mismatch (``Accuracy.mismatches``).

    ``--method analytic``'s formats are the prediction. Files of session 9 hold only the first four
    fields, and only for ``--method analytic``."""

    bound: float | None
    """Thm. 1's bound of the predicted formats; None when no ``B_min`` fits the budget."""
    budget: float
    b_min: int | None
    samples: int
    """Search samples the noise gains were taken on."""
    bits: dict[str, int] | None = None
    """Predicted bitwidth per tensor (``layer:W``); None when no ``B_min`` fits."""
    found_bound: float | None = None
    """Thm. 1's bound of the formats the run found."""
    note: str | None = None
    """Why there is no prediction (no ``B_min`` fits the budget), else None."""
    pruned: list[str] | None = None
    """Found tensors pruned (BW = 1) of non-zero values: no small rounding noise, so outside
    ``found_bound`` (Thm. 1 says nothing about them)."""

    def predicted_bits(self, layer: str, kind: str) -> int | None:
        """The predicted bitwidth of one tensor, if predicted."""
        return None if self.bits is None else self.bits.get(f"{layer}:{kind}")


@dataclass(frozen=True)
class ParetoRecord:
    """What ``--method pareto`` measured and decided (``methods.pareto``), as JSON data: every
    tensor's sensitivity curve, the allocation's capacity and prediction, each verification, repair
    and refinement step, and the predicted front (one point per capacity, in flipped samples)."""

    objective: str
    reach: float
    """The statistic up to which the curves were measured: budgets up to it are answered from them."""
    capacity: int
    """``K``: the most flipped samples the acceptance test lets through at eps."""
    predicted: float | None
    """The predicted flips of the front point the verification chose (before refinement); None when
    no curve point flips a sample (no scale from noise power to flips)."""
    curve_evaluations: int
    """Evaluations this run spent on curves (0 when they came from another result)."""
    curves: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    front: list[dict[str, Any]]
    scale: float | None = None
    """Flips per square root of output noise power, from the curves (``methods.pareto.flip_scale``)."""
    curves_from: str | None = None
    """The result folder the curves were read from (``optsearch pareto``), or None."""

    @property
    def adjust_evaluations(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class RunResult:
    """Everything a run found and measured; rendered to formats.json, formats.csv, report.md, plots."""

    model: ModelInfo
    data: DataInfo
    settings: RunSettings
    layers: list[LayerResult]
    accuracy: dict[str, Accuracy]
    """``search`` and, with a split, ``held_out``."""
    costs: dict[str, Costs]
    """``quantized``, ``uniform8`` and ``float32``."""
    steps: list[dict[str, Any]]
    """The loss as the network is quantized step by step (tensor, format, loss), in search order."""
    evaluations: int
    timings: dict[str, float]
    versions: dict[str, str]
    schema: str = FORMATS_SCHEMA
    log: list[str] = field(default_factory=list)
    analytic: AnalyticRecord | None = None
    """Sakr & Shanbhag's predicted bits and bounds (``--predict-samples``; always for ``--method
    analytic``); None when skipped (and in older files)."""
    pareto: ParetoRecord | None = None
    """``--method pareto``'s curves, steps and front; None for the other methods."""

    @property
    def formats(self) -> dict[TensorId, Format]:
        """The found format of every tensor."""
        return {
            TensorId(layer.name, kind): result.format  # type: ignore[arg-type]
            for layer in self.layers
            for kind, result in layer.tensors.items()
        }

    @property
    def eps(self) -> float:
        """The accuracy loss budget the run searched with."""
        return self.settings.search.eps

    def search_limits(self) -> tuple[float, float] | None:
        """On the search set: one sample of relative loss (``1 / C``) and the smallest loss the guarded
        test certifies at the run's confidence; None for a file without the counts (0.1.0)."""
        search = self.accuracy["search"]
        if search.float_correct is None:
            return None
        return 1.0 / search.float_correct, certifiable_loss(
            search.samples, search.float_model, self.settings.search.confidence
        )

    def savings(self, baseline: str) -> dict[str, float]:
        """Relative savings of the found formats against ``uniform8`` or ``float32`` (0.5 = half)."""
        return self.costs["quantized"].saving(self.costs[baseline])

    def to_dict(self) -> dict[str, Any]:
        """formats.json's data: the layout 0.1.0 wrote, key for key (``analytic`` only when present)."""
        model: dict[str, Any] = {
            "path": str(self.settings.model),
            "name": self.model.name,
            "sha256": self.model.sha256,
            "input_shape": self.model.input_shape,
            "classes": self.model.classes,
        }
        for key in _OPTIONAL_MODEL:
            if getattr(self.model, key) is not None:
                model[key] = getattr(self.model, key)
        data = self.settings.data
        return {
            "model": model,
            "data": {
                "source": self.data.source,
                "spec": data.spec,
                "search_samples": self.data.search_samples,
                "held_out_samples": self.data.held_out_samples,
                "search_fraction": data.search_fraction,
                "seed": data.seed,
                "scale": data.scale,
                "resize": list(data.resize) if data.resize else None,
            },
            "settings": self.settings.recorded(),
            "layers": [_layer_dict(layer) for layer in self.layers],
            "accuracy": {
                k: _accuracy_dict(v, self.settings.search.confidence) for k, v in self.accuracy.items()
            },
            "costs": {k: _without_absent(asdict(v), _OPTIONAL_COSTS) for k, v in self.costs.items()},
            "steps": self.steps,
            "evaluations": self.evaluations,
            "timings": self.timings,
            "versions": self.versions,
            "schema": self.schema,
            "log": self.log,
            "savings": {"vs_uniform8": self.savings("uniform8"), "vs_float32": self.savings("float32")},
            **(
                {}
                if self.analytic is None
                else {"analytic": _without_absent(asdict(self.analytic), _OPTIONAL_ANALYTIC)}
            ),
            **({} if self.pareto is None else {"pareto": asdict(self.pareto)}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Read back what ``to_dict`` wrote (derived fields such as ``savings`` are recomputed)."""
        if data.get("schema") != FORMATS_SCHEMA:
            raise ValueError(
                f"not an optsearch formats file (schema {data.get('schema')!r}, expected {FORMATS_SCHEMA})"
            )
        layers = [
            LayerResult(
                **{
                    **layer,
                    "tensors": {
                        kind: TensorResult(
                            **{
                                **t,
                                "start": tuple(t["start"]),
                                "diagonal": tuple(t["diagonal"]),
                                "local": tuple(t["local"]),
                            }
                        )
                        for kind, t in layer["tensors"].items()
                    },
                }
            )
            for layer in data["layers"]
        ]
        model, measured = data["model"], data["data"]
        return cls(
            model=ModelInfo(
                name=model["name"],
                sha256=model["sha256"],
                input_shape=model["input_shape"],
                classes=model["classes"],
                **{key: model[key] for key in _OPTIONAL_MODEL if key in model},
            ),
            data=DataInfo(
                source=measured["source"],
                search_samples=measured["search_samples"],
                held_out_samples=measured["held_out_samples"],
            ),
            settings=RunSettings.from_recorded(model, measured, data["settings"]),
            layers=layers,
            accuracy={
                k: Accuracy(**{f: v[f] for f in Accuracy.__dataclass_fields__ if f in v})
                for k, v in data["accuracy"].items()
            },
            costs={k: Costs(**v) for k, v in data["costs"].items()},
            steps=data["steps"],
            evaluations=data["evaluations"],
            timings=data["timings"],
            versions=data["versions"],
            schema=data["schema"],
            log=data.get("log", []),
            analytic=_analytic(data["analytic"]) if "analytic" in data else None,
            pareto=ParetoRecord(**data["pareto"]) if "pareto" in data else None,
        )


def _analytic(data: Mapping[str, Any]) -> AnalyticRecord:
    """formats.json's ``analytic`` without the keys files of session 9 lack."""
    return AnalyticRecord(**{k: v for k, v in data.items() if k in AnalyticRecord.__dataclass_fields__})


def _without_absent(data: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without the optional keys that are None: a file of 0.1.0 reads back as it was."""
    return {k: v for k, v in data.items() if k not in optional or v is not None}


_OPTIONAL_ANALYTIC = ("bits", "found_bound", "note", "pruned")
_OPTIONAL_TENSOR = ("bound", "scheduled_eps", "added_bits")
_OPTIONAL_ACCURACY = (
    "float_correct",
    "losses",
    "gains",
    "uniform8_losses",
    "uniform8_gains",
    "mismatches",
)
_OPTIONAL_COSTS = (
    "weights_bytes",
    "weights_bytes_aligned",
    "peak_activation_bytes",
    "peak_activation_bytes_aligned",
    "peak_step",
)


def _layer_dict(layer: LayerResult) -> dict[str, Any]:
    out = asdict(layer)
    out["tensors"] = {k: _without_absent(v, _OPTIONAL_TENSOR) for k, v in out["tensors"].items()}
    return out


def _accuracy_dict(accuracy: Accuracy, confidence: float) -> dict[str, Any]:
    out = _without_absent(asdict(accuracy), _OPTIONAL_ACCURACY)
    if accuracy.counted:
        out["intervals"] = accuracy.intervals(confidence)
    return out
