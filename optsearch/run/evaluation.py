"""``optsearch evaluate`` as data: float and quantized accuracy per data part, and the costs.

Quantized means every tensor at a uniform ``(BW, F0(BW))``, or the formats of a formats.json. The
CLI prints what ``evaluate_formats`` returns; the Python API returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optsearch.core.confidence import DEFAULT_CONFIDENCE, accuracy_interval, loss_interval, loss_upper_bound
from optsearch.core.costs import FLOAT_BITS, network_cost, uniform_bits
from optsearch.core.fixedpoint import Format, OffsetRule
from optsearch.core.tensors import FOLD_MODES, ActivationPoint, FoldMode, TensorId
from optsearch.data import Dataset
from optsearch.evaluators.keras import KerasEvaluator, activation_ranges, below_chance_warning
from optsearch.model.graph import uniform_formats
from optsearch.results.folder import ResultError, ResultFolder, checked_formats
from optsearch.run.inputs import Inputs, prepare
from optsearch.settings import DEFAULT_BATCH_SIZE, DataSettings


@dataclass(frozen=True)
class PartAccuracy:
    """Top-1 accuracy of the float model and of the formats on one data part."""

    part: str
    samples: int
    float_accuracy: float
    quantized_accuracy: float
    loss: float
    """``da = (a - a_q) / a`` (eq. 6)."""
    warning: str | None
    """Set when the float model is no better than chance on this part (wrong data or preprocessing)."""
    float_correct: int
    losses: int
    """Samples the float model gets right and the formats wrong."""
    gains: int
    """Samples the float model gets wrong and the formats right."""
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def loss_interval(self) -> tuple[float, float]:
        """Two-sided interval of the true relative loss at ``confidence`` (docs/algorithm.md)."""
        return loss_interval(self.losses, self.gains, self.float_correct, self.samples, self.confidence)

    @property
    def loss_bound(self) -> float:
        """One-sided upper confidence bound of the true relative loss at ``confidence``."""
        return loss_upper_bound(self.losses, self.gains, self.float_correct, self.samples, self.confidence)

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        """Exact two-sided interval of the formats' top-1 accuracy."""
        correct = self.float_correct - self.losses + self.gains
        return accuracy_interval(correct, self.samples, self.confidence)


@dataclass(frozen=True)
class CostComparison:
    """The formats' memory and multiply cost against one baseline."""

    baseline: str
    memory_bytes: float
    saving: dict[str, float]


@dataclass(frozen=True)
class FormatsEvaluation:
    """What ``optsearch evaluate`` measured."""

    label: str
    """``uniform 8-bit`` or the formats file's name."""
    formats: dict[TensorId, Format]
    parts: tuple[PartAccuracy, ...]
    costs: tuple[CostComparison, ...]


def evaluate_formats(
    model: Path,
    data: DataSettings,
    *,
    bw: int = 8,
    formats_file: Path | None = None,
    offset_rule: OffsetRule = "paper",
    activation_point: ActivationPoint = "activation",
    fold_bn: FoldMode | None = None,
    unsafe_load: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dataset: Dataset | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[FormatsEvaluation, Inputs]:
    """Accuracy of ``model`` in float and with the formats, on the search and held-out parts, and
    the costs against 8-bit and float32. Also returns the inputs (the quantized model is set to the
    formats), for saving the quantized model. ``fold_bn`` None: as the run that wrote
    ``formats_file`` folded its BatchNorms (its formats name the folded model's tensors), else off."""
    recorded_fold = _recorded_fold(formats_file)
    inputs = prepare(
        model,
        data,
        unsafe_load=unsafe_load,
        activation_point=activation_point,
        fold_bn=recorded_fold if fold_bn is None else fold_bn,
        dataset=dataset,
        batch_size=batch_size,
    )
    if formats_file is not None:
        try:
            formats = checked_formats(
                ResultFolder.at(formats_file).read_formats(), set(inputs.qmodel.tensors), str(formats_file)
            )
        except ResultError as err:
            if fold_bn is None or fold_bn == recorded_fold:
                raise
            raise ResultError(
                f"{err}; the run that wrote it used --fold-bn {recorded_fold}: leave --fold-bn out "
                f"(or give --fold-bn {recorded_fold}) to evaluate the model it searched"
            ) from err
        label = formats_file.name
    else:
        ranges = activation_ranges(inputs.qmodel, inputs.search, inputs.preprocess, batch_size)
        formats = uniform_formats(inputs.qmodel, bw, ranges, offset_rule)
        label = f"uniform {bw}-bit"
    parts = [("search", inputs.search)] + ([("held-out", inputs.held_out)] if inputs.held_out else [])
    accuracies = []
    for name, part in parts:
        evaluator = KerasEvaluator(inputs.qmodel, part, inputs.preprocess, batch_size)
        result = evaluator.evaluate(formats)
        accuracies.append(
            PartAccuracy(
                name,
                len(part),
                evaluator.float_accuracy,
                result.correct / result.samples,
                result.loss,
                below_chance_warning(evaluator.float_accuracy, inputs.num_classes, f"{name} set"),
                evaluator.float_correct,
                result.losses or 0,
                result.gains or 0,
                confidence,
            )
        )
    layers = inputs.qmodel.layers
    found = network_cost(layers, {t: f.bw for t, f in formats.items()})
    costs = tuple(
        CostComparison(name, found.memory_bytes, found.saving(base))
        for name, base in (
            ("8-bit", network_cost(layers, uniform_bits(layers, 8))),
            ("float32", network_cost(layers, uniform_bits(layers, FLOAT_BITS), FLOAT_BITS)),
        )
    )
    inputs.qmodel.set_formats(formats)
    return FormatsEvaluation(label, formats, tuple(accuracies), costs), inputs


def _recorded_fold(formats_file: Path | None) -> FoldMode:
    """The ``--fold-bn`` of the run that wrote ``formats_file`` ("off" for uniform formats and for a
    formats.json without settings, e.g. one edited down by hand)."""
    if formats_file is None:
        return "off"
    settings = ResultFolder.at(formats_file).read_data().get("settings")
    mode = settings.get("fold_bn", "off") if isinstance(settings, dict) else "off"
    return next((m for m in FOLD_MODES if m == mode), "off")


@dataclass(frozen=True)
class ModelSummary:
    """What ``optsearch inspect`` shows: the quantizable layers with their sizes, and the totals."""

    input_shape: tuple[int | None, ...]
    rows: list[dict[str, object]]
    """One per quantizable layer: index, layer, type, activation_at, weights, biases, activations, macs."""
    parameters: int
    """Weights and biases of the quantizable layers."""
    macs: int
    """Multiply-accumulates per sample."""


def inspect_model(
    model: Path, *, unsafe_load: bool = False, activation_point: ActivationPoint = "activation"
) -> ModelSummary:
    """The layers of ``model`` optsearch quantizes, with sizes and MACs (an error naming the file
    when nothing can be quantized)."""
    from optsearch.core.errors import OptsearchError
    from optsearch.model.graph import describe, find_quantizable_layers
    from optsearch.model.loading import load_model

    loaded = load_model(model, unsafe=unsafe_load)
    try:
        layers = find_quantizable_layers(loaded, activation_point)
    except OptsearchError as err:
        raise OptsearchError(f"{model}: {err}") from err
    rows = describe(layers)
    return ModelSummary(
        tuple(loaded.inputs[0].shape[1:]),
        rows,
        sum(int(r["weights"]) + int(r["biases"]) for r in rows),
        sum(int(r["macs"]) for r in rows),
    )
