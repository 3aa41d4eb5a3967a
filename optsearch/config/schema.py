"""One schema for the settings of ``optsearch run``, shared by its command-line options and YAML job files.

Every setting is declared once here (name, type, range, default, help). The CLI builds its options
from ``RUN_SETTINGS``; YAML files are read with line numbers and checked against the same entries
before anything runs, so an error names the file, the line, the field, the bad value and the valid
values. In a batch file, list values expand as a grid. No Keras here.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from optsearch.config.yamlfile import ConfigError, Document, Path_, Problem, parse_yaml, read_yaml, show
from optsearch.core.allocation import (
    PAPER_ALLOCATION,
    SCHEMES,
    Allocation,
    constant_allocation,
    uniform_allocation,
)
from optsearch.core.confidence import CRITERIA, DEFAULT_CONFIDENCE, DEFAULT_CRITERION
from optsearch.core.fixedpoint import OFFSET_RULES
from optsearch.core.tensors import ACTIVATION_POINTS, FOLD_MODES, TENSOR_KINDS, TensorKind
from optsearch.methods.knapsack import OBJECTIVES
from optsearch.methods.opt_search import (
    DEPENDENT_BW0,
    INDEPENDENT_BW0,
    LAYER_ORDERS,
    METHODS,
    SENSITIVITIES,
    WARM_START_MARGIN,
    WARM_STARTS,
    SearchSettings,
)
from optsearch.settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_MB,
    DEFAULT_PREDICT_SAMPLES,
    DataSettings,
    RunSettings,
)

ValueKind = Literal["int", "float", "bool", "str", "path", "choice", "order"]
#: Most jobs one batch file may expand to (a guard against a grid typed by mistake).
MAX_JOBS = 10_000


class _Invalid(Exception):
    """A value that does not fit its setting (turned into a ``Problem`` by the caller)."""


# --------------------------------------------------------------------------------------------------
# The schema


@dataclass(frozen=True)
class Value:
    """The type and valid range of one scalar: the click type of a flag and the check of a YAML value."""

    kind: ValueKind
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """The valid values in words, e.g. ``a number in (0, 1)``."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "order":
            return "W, B and A, each once, in the order to search them"
        if self.kind in ("str", "path"):
            return "a file path" if self.kind == "path" else "text"
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun}{self._range()}"

    def _range(self) -> str:
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{low}, {high}{right}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {high}"
        return ""

    def check(self, value: object) -> Any:
        """``value`` in its canonical Python type, or ``_Invalid``; types are strict (no "0.5" for 0.5)."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise _Invalid
            return value
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Invalid
            if self.kind == "int":
                if not isinstance(value, int) or not self.in_range(value):
                    raise _Invalid
                return value
            try:
                number = float(value)
            except OverflowError:
                raise _Invalid from None
            if not math.isfinite(number) or not self.in_range(number):
                raise _Invalid
            return number
        if not isinstance(value, str) or not value.strip():
            raise _Invalid
        if self.kind == "choice" and value not in self.choices:
            raise _Invalid
        if self.kind == "order":
            try:
                parse_order(value)
            except ValueError:
                raise _Invalid from None
        return value

    def in_range(self, number: float) -> bool:
        """True when ``number`` lies in the declared range."""
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return not (
            self.high is not None and (number > self.high or (self.high_open and number == self.high))
        )


@dataclass(frozen=True)
class Setting:
    """One setting of a run: its YAML field name, CLI flag, type, default and help (the only declaration)."""

    name: str
    """The YAML field; the command-line flag is ``--name`` with ``_`` written ``-``."""
    value: Value | tuple[Value, ...]
    """One scalar, or a fixed-length list of scalars (``bw0``: W B A)."""
    default: Any
    help: str
    example: str
    """A valid value as written in YAML, shown in error messages."""
    dest: str = ""
    """The Python parameter name of the CLI option, when it is not ``name``."""
    multiple: bool = False
    """A list of ``value`` tuples (``budget``); on the command line a repeatable option."""
    required: bool = False
    argument: bool = False
    """A positional command-line argument (``MODEL``) rather than an option."""
    off_flag: str = ""
    """For a boolean: the flag that turns it off, so a command line can override a file's ``true``."""
    metavar: str | None = None
    show_default: bool = True
    cli_type: Literal["", "dir", "file_or_dir"] = ""
    """For paths: what the command line accepts (a folder only, or either)."""

    @property
    def param(self) -> str:
        """The Python parameter name of the CLI option or argument."""
        return self.dest or self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def nullable(self) -> bool:
        """An optional setting whose ``null`` means "not given" (``required`` ones have no default)."""
        return self.default is None and not self.required

    @property
    def values(self) -> tuple[Value, ...]:
        return self.value if isinstance(self.value, tuple) else (self.value,)

    @property
    def depth(self) -> int:
        """List nesting of one value: 0 scalar, 1 fixed-length list, 2 list of lists."""
        return (1 if isinstance(self.value, tuple) else 0) + (1 if self.multiple else 0)

    def describe(self) -> str:
        """The valid values in words, with an example."""
        if self.multiple:
            names = (self.metavar or "").split() or [f"#{i + 1}" for i in range(len(self.values))]
            parts = "; ".join(f"{n} {v.describe()}" for n, v in zip(names, self.values, strict=False))
            words = f"a list of [{', '.join(names)}] entries ({parts})"
        elif isinstance(self.value, tuple):
            kinds = {v.describe() for v in self.value}
            words = (
                f"a list of {len(self.value)} {next(iter(kinds)).replace('an integer', 'integers')}"
                if len(kinds) == 1
                else f"a list [{self.metavar}]"
            )
            if self.metavar:
                words += f" ({self.metavar})"
        else:
            words = self.values[0].describe()
        return f"{words}{' or null' if self.nullable else ''}, e.g. {self.example}"

    def check(self, raw: object) -> Any:
        """The canonical value of ``raw`` (tuples for lists), or ``_Invalid``."""
        if raw is None:
            if self.nullable:
                return None
            raise _Invalid
        if self.multiple:
            if not isinstance(raw, list):
                raise _Invalid
            return tuple(self._check_one(item) for item in raw)
        return self._check_one(raw)

    def _check_one(self, raw: object) -> Any:
        if not isinstance(self.value, tuple):
            return self.value.check(raw)
        if not isinstance(raw, list | tuple) or len(raw) != len(self.value):
            raise _Invalid
        return tuple(v.check(item) for v, item in zip(self.value, raw, strict=True))

    def canonical(self, value: object) -> Any:
        """A value from the command line (click's types) in the canonical form YAML values get."""
        if value is None:
            return None
        if self.multiple:
            return tuple(tuple(item) for item in value)  # type: ignore[attr-defined]
        if isinstance(self.value, tuple):
            return tuple(value)  # type: ignore[arg-type]
        if isinstance(value, Path):
            return str(value)
        return value


_FRACTION = Value("float", 0.0, 1.0, low_open=True)
_NON_NEGATIVE = Value("float", low=0.0)
_BW0 = Value("int", 2, 24)

#: Every setting of ``optsearch run``, in the order ``run --help`` lists them.
RUN_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "model",
        Value("path"),
        None,
        "The trained model: a .keras file or a legacy Keras .h5 file.",
        "models/sequential_mnist.keras",
        required=True,
        argument=True,
        cli_type="file_or_dir",
    ),
    Setting(
        "data",
        Value("str"),
        None,
        "Labelled evaluation data: a .npz file with x/y (or x_test/y_test), or a dataset name "
        "(mnist, fashion_mnist, cifar10, svhn; test split unless NAME:train). Names are read from "
        "$OPTSEARCH_DATA/<name>.npz when present, else downloaded by keras.datasets.",
        "mnist",
        dest="data_spec",
        required=True,
        metavar="NPZ|NAME[:SPLIT]",
    ),
    Setting(
        "scale",
        Value("float"),
        None,
        "Multiply the pixels by this (e.g. 0.00392156862745098 for 1/255) when the model "
        "has no Rescaling layer of its own.",
        "0.00392156862745098",
    ),
    Setting(
        "resize",
        (Value("int", low=1), Value("int", low=1)),
        None,
        "Resize the images (bilinear) when the model has no Resizing layer of its own.",
        "[32, 32]",
        metavar="H W",
    ),
    Setting(
        "search_fraction",
        _FRACTION,
        0.5,
        "Share of the data the search decides on (stratified per class); the rest is held "
        "out and only reported. 1.0 = no split: search and report on all data, as the paper did.",
        "0.5",
    ),
    Setting("seed", Value("int"), 0, "Seed of the search/held-out split.", "0"),
    Setting(
        "batch_size",
        Value("int", low=1),
        DEFAULT_BATCH_SIZE,
        "Samples per forward pass. Larger is faster until memory runs out.",
        "500",
    ),
    Setting(
        "unsafe_load",
        Value("bool"),
        False,
        "Allow models whose file stores Python code (Lambda layers). This EXECUTES code from "
        "the file: use it only for files you trust.",
        "false",
        off_flag="--safe-load",
    ),
    Setting(
        "fold_bn",
        Value("choice", choices=FOLD_MODES),
        "off",
        "Fold BatchNorm layers into quantizable layers before the search, so that no float work is "
        "left between them: exact folds only what computes the same function (a BN after a linear "
        "layer, or before a Dense or an unpadded conv); all also folds into zero-padded convs, whose "
        "border outputs then change. The report lists every BN and where it went, and the float "
        "accuracy before and after folding.",
        "exact",
    ),
    Setting(
        "activation_point",
        Value("choice", choices=ACTIVATION_POINTS),
        "activation",
        "Where a layer's activations are quantized: after its activation function (the paper), "
        "or at the end of the element-wise chain that follows it (e.g. after a BatchNorm).",
        "activation",
    ),
    Setting(
        "eps",
        Value("float", 0.0, 1.0, low_open=True, high_open=True),
        0.01,
        "Accuracy loss budget, relative: 0.01 lets top-1 accuracy drop by 1% of itself (paper eq. 6).",
        "0.01",
    ),
    Setting(
        "independent",
        Value("bool"),
        False,
        "Evaluate each tensor with every other tensor in float (the paper's first method; combining the "
        "results naively can lose far more than eps). Default: dependent, every decided format applied.",
        "false",
        off_flag="--dependent",
    ),
    Setting(
        "bw0",
        (_BW0, _BW0, _BW0),
        None,
        "Starting bitwidths for weights, biases, activations. Default 12 8 12 (dependent) or 8 8 8 "
        "(independent); a start that loses more than the budget is raised by 4, up to 24.",
        "[12, 8, 12]",
        metavar="W B A",
    ),
    Setting(
        "delta",
        _NON_NEGATIVE,
        0.0015,
        "The local search's result replaces the diagonal's only if its loss is lower by at least this; "
        "otherwise the one with fewer bits wins (Alg. 2, lines 25-34).",
        "0.0015",
    ),
    Setting(
        "offset_rule",
        Value("choice", choices=OFFSET_RULES),
        "paper",
        "How F0 follows from a tensor's largest magnitude Z (eq. 8): paper = BW-1-ceil(log2 Z), which "
        "may clip Z by one LSB; noclip = the largest F that represents Z.",
        "paper",
    ),
    Setting(
        "order",
        Value("order"),
        "WBA",
        "Order of the tensor types: any permutation of W, B, A.",
        "WBA",
        dest="type_order",
    ),
    Setting(
        "layer_order",
        Value("choice", choices=LAYER_ORDERS),
        "forward",
        "Layers first to last, or last to first.",
        "forward",
    ),
    Setting(
        "interleave",
        Value("bool"),
        False,
        "Search all tensors of layer 1, then of layer 2, ... (instead of all weights, then all biases).",
        "false",
        off_flag="--no-interleave",
    ),
    Setting(
        "allocation",
        Value("choice", choices=("paper", *SCHEMES)),
        None,
        "How eps is shared between layers (eq. 9). paper (the default for dependent search) = weights "
        "linear over (0, eps/2], biases constant eps/2, activations linear over (eps/2, eps]; a scheme name "
        "uses that growth with the same ranges. Independent search defaults to eps for every tensor.",
        "linear",
    ),
    Setting(
        "budget",
        (
            Value("choice", choices=TENSOR_KINDS),
            Value("choice", choices=SCHEMES),
            _NON_NEGATIVE,
            _NON_NEGATIVE,
        ),
        (),
        "Override one tensor type's budget: e.g. --budget A quadratic 0.5 1.0 gives activations a "
        "quadratic share from 0.5*eps to 1.0*eps. Repeatable.",
        "[[A, quadratic, 0.5, 1.0]]",
        dest="budgets",
        multiple=True,
        metavar="TYPE SCHEME START END",
        show_default=False,
    ),
    Setting(
        "criterion",
        Value("choice", choices=CRITERIA),
        DEFAULT_CRITERION,
        "How a candidate's loss is tested against its budget. guarded: the upper confidence bound "
        "(--confidence) of its true loss must fit, so that eps holds on data the search never saw "
        "(docs/algorithm.md; the search set must be large enough: see docs/budget.md). losses: the "
        "same bound without netting the samples quantization turns from wrong to right (stricter; "
        "docs/budget.md shows those gains do not recur on new data). paper: the observed loss on the "
        "search set must fit (Alg. 2, as the paper did; used by the paper reproduction).",
        "guarded",
    ),
    Setting(
        "confidence",
        Value("float", 0.5, 1.0, low_open=True, high_open=True),
        DEFAULT_CONFIDENCE,
        "Level of the guarded criterion's one-sided bound, and of every interval the reports print. "
        "Higher is safer and keeps more bits; with n search samples at accuracy a, the smallest "
        "loss it certifies is about -ln(1 - confidence) / (n a), e.g. 0.3% of loss for n = 1,000 at "
        "a = 99% and 0.95.",
        "0.95",
    ),
    Setting(
        "certify_fraction",
        Value("float", 0.0, 0.9),
        0.0,
        "Keep this share of the search data away from every decision, and test the final network on it "
        "with the same criterion: while it fails, the tensor whose decision added the most loss gets one "
        "bit back along the diagonal, (BW+1, F+1). The search's choices are biased toward lucky "
        "samples; these never took part in them. 0 = off.",
        "0.3",
    ),
    Setting(
        "method",
        Value("choice", choices=METHODS),
        "pareto",
        "How the formats are chosen. pareto (the default; docs/allocation.md says why): each tensor's "
        "loss measured along Alg. 2's candidates with the rest float, the formats that minimise "
        "--objective with the predicted loss within eps (an exact knapsack), then the whole network "
        "verified, repaired and refined (docs/algorithm.md); writes pareto.csv for every budget up to "
        "2 x eps. paper: the search of the paper (Alg. 2), the only method with a budget per position "
        "(--allocation, --budget), --bw0, --delta, --independent, --certify-fraction and --warm-start. "
        "analytic: no search; Sakr & Shanbhag's noise-gain-equalised precisions (docs/algorithm.md), "
        "the smallest whose predicted mismatch probability bound fits eps read as a "
        "mismatch-probability budget eps*a (a: the float accuracy); the network is evaluated once.",
        "pareto",
    ),
    Setting(
        "objective",
        Value("choice", choices=OBJECTIVES),
        "memory",
        "What --method pareto minimises: memory (eq. 7's sum over weights, biases and activations), "
        "weights (weights and biases: flash), activations (activation memory), or bops (bit operations, "
        "MACs x weight bits x input bits).",
        "weights",
    ),
    Setting(
        "sensitivity",
        Value("choice", choices=SENSITIVITIES),
        "measured",
        "Where --method pareto's curves come from. measured: each tensor's loss and output noise "
        "measured along Alg. 2's candidates (about 8 evaluations per tensor). analytic: predicted from "
        "Sakr & Shanbhag's noise gains (--method analytic's), no evaluation; only the whole network's "
        "verification is measured.",
        "analytic",
    ),
    Setting(
        "warm_start",
        Value("choice", choices=WARM_STARTS),
        "none",
        "Where each tensor's diagonal starts. none: at BW0 (Alg. 2). analytic: each tensor's diagonal "
        f"starts WARM_START_MARGIN = {WARM_START_MARGIN} bits above its noise-gain-predicted precision "
        "(--method analytic's, docs/algorithm.md) instead of at BW0, still raised when not acceptable; "
        "not Alg. 2: every output says so. Not with --method analytic or --independent.",
        "analytic",
    ),
    Setting(
        "predict_samples",
        Value("int", low=0),
        DEFAULT_PREDICT_SAMPLES,
        "Search samples (stratified) for Sakr & Shanbhag's noise gains behind the report's prediction: "
        "each tensor's predicted bits (--method analytic's choice at eps) beside its found bits, and "
        "the predicted mismatch bound of the found formats beside the measured mismatch. 0 skips it; "
        "it costs about 20 s per 500 samples on a zoo CNN. --method analytic and the analytic warm "
        "start and sensitivity reuse their own gains (2,000 samples).",
        "500",
    ),
    Setting(
        "input_bits",
        Value("int", 1, 32),
        8,
        "Bitwidth of the network input, for the bit-operations count (BOPs).",
        "8",
    ),
    Setting(
        "out",
        Value("path"),
        None,
        "Output folder (default: MODEL-NAME_optsearch next to the current directory). It must not exist "
        "unless --overwrite; it appears only when the run has finished.",
        "runs/mnist",
        dest="out_dir",
        cli_type="dir",
    ),
    Setting(
        "overwrite",
        Value("bool"),
        False,
        "Replace the output folder if it exists.",
        "false",
        off_flag="--no-overwrite",
    ),
    Setting(
        "resume",
        Value("bool"),
        False,
        "Continue an interrupted run of the same --out from its work folder (OUT.partial): the tensors "
        "decided before are kept, the rest is searched. The settings, model and data must be the ones it "
        "was started with. The result is the one an uninterrupted run gives.",
        "false",
        off_flag="--no-resume",
    ),
    Setting(
        "cache_mb",
        _NON_NEGATIVE,
        DEFAULT_CACHE_MB,
        "Memory for the activations upstream of the tensor being searched (computed once per tensor, "
        "so each candidate runs only the rest of the network). Beyond it they are recomputed.",
        "1024",
    ),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in RUN_SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in RUN_SETTINGS}

#: The settings that say how data and model are read (``evaluate`` and ``inspect`` use them too).
DATA_SETTINGS = ("data", "scale", "resize", "search_fraction", "seed", "batch_size")
MODEL_SETTINGS = ("unsafe_load", "activation_point")

#: The settings of the CI gate (``optsearch check`` and a ``check:`` section of a job file).
CHECK_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "baseline",
        Value("path"),
        None,
        "The baseline: a formats.json written by `optsearch run` (or the folder holding it). In a job "
        "file, {name} stands for the job's name.",
        "baselines/{name}.json",
        required=True,
    ),
    Setting(
        "max_loss",
        Value("float", 0.0, 1.0, low_open=True),
        None,
        "Largest acceptable held-out loss (relative, 0.01 = 1%). Default: the run's eps.",
        "0.02",
    ),
    Setting(
        "tolerance",
        _NON_NEGATIVE,
        0.01,
        "How far memory and multiply cost may rise above the baseline's, relative (0.01 = 1%).",
        "0.01",
    ),
    Setting(
        "exact",
        Value("bool"),
        False,
        "Also fail when any tensor's format differs from the baseline's.",
        "false",
        off_flag="--not-exact",
    ),
)
CHECKS: dict[str, Setting] = {s.name: s for s in CHECK_SETTINGS}

#: Field names people reach for, and the one the schema uses.
_HINTS = {
    "scheme": "allocation",
    "allocation_scheme": "allocation",
    "mode": "independent (true or false)",
    "dependent": "independent (true or false)",
    "split": "search_fraction",
    "type_order": "order",
    "types": "order",
    "budgets": "budget",
    "data_spec": "data",
    "dataset": "data",
    "out_dir": "out",
    "output": "out",
    "model_path": "model",
    "bw_0": "bw0",
    "start_bits": "bw0",
}


def schema_table(settings: Sequence[Setting] = RUN_SETTINGS) -> str:
    """The settings as a Markdown table (docs/batch.md holds it; a test keeps the two the same)."""
    lines = ["| field | option | valid values | default | what it does |", "|---|---|---|---|---|"]
    for s in settings:
        option = "`MODEL` (argument)" if s.argument else f"`{s.flag}`"
        if s.off_flag:
            option += f" / `{s.off_flag}`"
        if s.required:
            default = "required"
        elif s.default is None:
            default = "-"
        else:
            default = f"`{_yaml_text(s.default)}`"
        cells = [f"`{s.name}`", option, s.describe(), default, s.help]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _yaml_text(value: object) -> str:
    """A default as it is written in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    return str(value)


def parse_order(text: str) -> tuple[TensorKind, ...]:
    """The type order from ``WBA``, ``W,B,A`` or ``W>B>A``; ValueError unless W, B, A are there once each."""
    order = tuple(text.replace(",", "").replace(">", "").replace("-", "").replace(" ", "").upper())
    if sorted(order) != sorted(TENSOR_KINDS):
        raise ValueError("give each of W, B, A once, e.g. WBA (the paper) or AWB")
    return order  # type: ignore[return-value]


def run_settings(values: Mapping[str, Any]) -> RunSettings:
    """The typed ``RunSettings`` of a run's flat settings (CLI options, a YAML file, a batch job);
    ValueError if they do not fit together."""
    return RunSettings(
        model=Path(values["model"]),
        data=DataSettings(
            values["data"], values["scale"], values["resize"], values["search_fraction"], values["seed"]
        ),
        search=search_settings(values),
        unsafe_load=bool(values["unsafe_load"]),
        activation_point=values["activation_point"],
        fold_bn=values["fold_bn"],
        batch_size=values["batch_size"],
        input_bits=values["input_bits"],
        cache_mb=values["cache_mb"],
        predict_samples=values["predict_samples"],
    )


def search_settings(values: Mapping[str, Any]) -> SearchSettings:
    """Alg. 2's settings from a run's flat settings: the allocation name and budget overrides
    resolved into one rule per tensor type, BW0 defaulted by the evaluation mode."""
    independent = bool(values["independent"])
    allocation = values["allocation"]
    if allocation is None:
        rules = constant_allocation(1.0) if independent else dict(PAPER_ALLOCATION)
    else:
        rules = dict(PAPER_ALLOCATION) if allocation == "paper" else uniform_allocation(allocation)
    for kind, scheme, start, end in values["budget"]:
        rules[kind] = Allocation(scheme, start, end)
    bw0 = values["bw0"]
    bw0_map = (
        dict(zip(TENSOR_KINDS, bw0, strict=True))
        if bw0
        else dict(INDEPENDENT_BW0 if independent else DEPENDENT_BW0)
    )
    return SearchSettings(
        eps=values["eps"],
        independent=independent,
        bw0=bw0_map,
        delta=values["delta"],
        offset_rule=values["offset_rule"],
        type_order=parse_order(values["order"]),
        layer_order=values["layer_order"],
        interleave=bool(values["interleave"]),
        allocation=rules,
        criterion=values["criterion"],
        confidence=values["confidence"],
        certify_fraction=values["certify_fraction"],
        method=values["method"],
        warm_start=values["warm_start"],
        objective=values["objective"],
        sensitivity=values["sensitivity"],
    )


def command_line(values: Mapping[str, Any], **changes: Any) -> str:
    """The ``optsearch run`` command with these settings (those not at their defaults), e.g. to resume."""
    import shlex

    values = {**values, **changes}
    words = ["optsearch", "run"]
    for s in RUN_SETTINGS:
        value = values.get(s.name, s.default)
        if s.argument:
            words.append(str(value))
        elif value == s.default or value is None or value == ():
            continue
        elif s.values[0].kind == "bool":
            words.append(s.flag if value else s.off_flag)
        elif s.multiple:
            for item in value:
                words += [s.flag, *(_num(v) if isinstance(v, float) else str(v) for v in item)]
        elif isinstance(value, tuple | list):
            words += [s.flag, *(str(v) for v in value)]
        else:
            words += [s.flag, repr(value) if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _num(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else f"{x:g}")


def _field_name(path: Path_) -> str:
    """``jobs[2].eps`` for ``("jobs", 2, "eps")``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown(key: str, valid: Iterable[str], where: str, field: str) -> Problem:
    """An unknown field, with the one people probably meant."""
    names = list(valid)
    hint = _HINTS.get(key) or _HINTS.get(key.lower())
    if hint is None and key.replace("-", "_") in names:
        hint = key.replace("-", "_")
    if hint is None and key.lower() in names:
        hint = key.lower()
    if hint is None:
        close = difflib.get_close_matches(key, names, n=1)
        hint = close[0] if close else None
    message = f"unknown field {key!r}" + (f"; did you mean {hint}?" if hint else ".")
    return Problem(where, field, f"{message} Valid fields: {', '.join(names)}")


# --------------------------------------------------------------------------------------------------
# Checking values against the schema


class _Checker:
    """Checks raw values against settings and collects every problem (with file and line) at once."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def where(self, path: Path_) -> str:
        if path and path[0] == "--set":
            return "--set"
        return self.doc.where(path)

    def add(self, path: Path_, message: str) -> None:
        field = _field_name(path[1:] if path[:1] == ("--set",) else path)
        self.problems.append(Problem(self.where(path), field, message))

    def value(self, setting: Setting, raw: object, path: Path_) -> tuple[bool, Any]:
        """``(True, canonical value)``, or ``(False, None)`` after recording the problem."""
        try:
            return True, setting.check(raw)
        except _Invalid:
            self.add(path, f"got {show(raw)}; valid: {setting.describe()}")
            return False, None

    def mapping(self, raw: object, path: Path_, what: str) -> dict[str, Any] | None:
        """``raw`` if it is a mapping with text keys, else None after recording the problem."""
        if not isinstance(raw, dict):
            self.add(path, f"must be a mapping of {what} (field: value lines); got {show(raw)}")
            return None
        odd = [key for key in raw if not isinstance(key, str)]
        if odd:
            self.add(path, f"field names are text; got {show(odd[0])}")
            return None
        return raw

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def is_grid(setting: Setting, raw: object) -> bool:
    """True when ``raw`` is a list of values for ``setting`` (a grid axis) rather than one value."""
    if not isinstance(raw, list):
        return False
    if setting.depth == 0:
        return True
    if setting.depth == 1:
        return bool(raw) and all(isinstance(item, list) for item in raw)
    return bool(raw) and all(
        isinstance(item, list) and all(isinstance(entry, list) for entry in item) for item in raw
    )


def _check_section(checker: _Checker, raw: object, path: Path_) -> dict[str, Any] | None:
    """A ``check:`` section: gate settings, checked (``baseline`` is required once sections are merged)."""
    section = checker.mapping(raw, path, "check settings")
    if section is None:
        return None
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key not in CHECKS:
            checker.problems.append(
                _unknown(key, CHECKS, checker.where((*path, key)), _field_name((*path, key)))
            )
            continue
        ok, checked = checker.value(CHECKS[key], value, (*path, key))
        if ok:
            out[key] = checked
    return out


def load_check_section(path: str | Path) -> dict[str, Any]:
    """The top-level ``check:`` section of a run or batch file, checked; empty when it has none."""
    return check_section_document(read_yaml(path))


def check_section_document(doc: Document) -> dict[str, Any]:
    """The top-level ``check:`` section of a parsed run or batch file."""
    checker = _Checker(doc)
    data = checker.mapping(doc.data, (), "settings")
    checker.raise_if_any()
    assert data is not None
    section = None if data.get("check") is None else _check_section(checker, data["check"], ("check",))
    checker.raise_if_any()
    return dict(section or {})


def gate_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """A merged ``check:`` section with the defaults filled in."""
    return {s.name: section.get(s.name, s.default) for s in CHECK_SETTINGS}


# --------------------------------------------------------------------------------------------------
# optsearch run --config FILE


@dataclass(frozen=True)
class RunFile:
    """The settings a run's YAML file gives (only those it gives), and its ``check:`` section if any."""

    file: str
    values: dict[str, Any]
    check: dict[str, Any] | None = None


def load_run_file(path: str | Path) -> RunFile:
    """Read and check a ``run --config`` file; a ``ConfigError`` lists every problem with its line."""
    return check_run_document(read_yaml(path))


def check_run_document(doc: Document) -> RunFile:
    """The settings of one run from a parsed YAML document (or any data: ``Document(name, data)``)."""
    checker = _Checker(doc)
    data = checker.mapping(doc.data, (), "run settings")
    checker.raise_if_any()
    assert data is not None
    values: dict[str, Any] = {}
    check: dict[str, Any] | None = None
    for key, raw in data.items():
        path: Path_ = (key,)
        if key == "check":
            check = _check_section(checker, raw, path)
        elif key in ("jobs", "defaults"):
            checker.add(path, f"belongs to a batch file; run it with `optsearch batch {doc.file}`")
        elif key not in SETTINGS:
            checker.problems.append(_unknown(key, [*SETTINGS, "check"], checker.where(path), ""))
        elif is_grid(SETTINGS[key], raw):
            checker.add(
                path,
                f"a list of values ({show(raw)}) is a grid of several runs, which only `optsearch batch` "
                f"expands; give one value, e.g. {SETTINGS[key].example}",
            )
        else:
            ok, value = checker.value(SETTINGS[key], raw, path)
            if ok:
                values[key] = value
    if check is not None and "baseline" not in check:
        checker.add(("check",), "needs a baseline: field (a formats.json to compare with)")
    checker.raise_if_any()
    return RunFile(doc.file, values, check)


def merge_run(
    file_values: Mapping[str, Any], cli_values: Mapping[str, Any], explicit: Iterable[str]
) -> dict[str, Any]:
    """Defaults, then the file, then the flags given on the command line (``explicit``), per setting."""
    given = set(explicit)
    out = dict(DEFAULTS)
    out.update(file_values)
    for name in given:
        out[name] = SETTINGS[name].canonical(cli_values[name])
    return out


def missing_required(values: Mapping[str, Any]) -> list[Setting]:
    """Required settings that neither the file nor the command line gave."""
    return [s for s in RUN_SETTINGS if s.required and values.get(s.name) is None]


# --------------------------------------------------------------------------------------------------
# optsearch batch FILE


@dataclass(frozen=True)
class JobConfig:
    """One job of a batch file after defaults, ``--set`` overrides and grid expansion: checked settings."""

    entry: int
    """Index of the job in the file's ``jobs`` list (several jobs share one when it has a grid)."""
    where: str
    """``file:line`` of the job's entry."""
    values: dict[str, Any]
    """Every run setting (defaults filled in), canonical."""
    varied: dict[str, Any]
    """The grid fields of this job and their values here, in file order."""
    name: str | None
    """The job's ``name:`` (a template with ``{field}`` placeholders), if it gives one."""
    check: dict[str, Any] | None
    """The merged ``check:`` section (top level, then the job's), defaults filled in."""


@dataclass(frozen=True)
class BatchConfig:
    """A batch file: where its results go, where its jobs run, and every job, expanded and checked."""

    file: str
    out: str | None
    jobs: tuple[JobConfig, ...]
    executor: str = "local"
    scheduler: str | None = None


#: Where a batch's jobs run: a pool of local processes, or the workers of a Dask cluster.
EXECUTORS = ("local", "dask")
#: The top-level fields of a batch file that say where its jobs run, and options of ``optsearch batch``.
BATCH_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "executor",
        Value("choice", choices=EXECUTORS),
        "local",
        "Where the jobs run: local = here, --jobs N at a time in spawned processes; dask = on the "
        "workers of a Dask cluster (--scheduler; without it a local cluster of --jobs processes), "
        "which need optsearch installed and the files on a shared filesystem (pip install "
        "'optsearch[dask]').",
        "dask",
    ),
    Setting(
        "scheduler",
        Value("str"),
        None,
        "Address of the Dask scheduler to run the jobs on, e.g. tcp://head-node:8786 (with --executor "
        "dask). Default: a Dask LocalCluster on 127.0.0.1.",
        "tcp://head-node:8786",
        metavar="ADDRESS",
    ),
)
BATCH_RUNNERS: dict[str, Setting] = {s.name: s for s in BATCH_SETTINGS}

BATCH_KEYS = ("out", "executor", "scheduler", "defaults", "check", "jobs")
JOB_KEYS = ("name", "check")


def load_batch(path: str | Path, overrides: Mapping[str, object] | None = None) -> BatchConfig:
    """Read, check and expand a batch file; ``overrides`` (from ``--set``) replace its values in every job."""
    return check_batch_document(read_yaml(path), overrides)


def parse_overrides(pairs: Iterable[str]) -> dict[str, object]:
    """``--set FIELD=VALUE`` pairs; VALUE is read as YAML (``--set eps=[0.01,0.02]`` is a grid)."""
    out: dict[str, object] = {}
    problems = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem("--set", pair, "write FIELD=VALUE, e.g. --set eps=0.02"))
            continue
        try:
            out[key] = parse_yaml(text, f"--set {key}").data
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError(problems)
    return out


def check_batch_document(doc: Document, overrides: Mapping[str, object] | None = None) -> BatchConfig:
    """The jobs of a batch file from a parsed YAML document; every problem is found before anything runs."""
    checker = _Checker(doc)
    data = checker.mapping(doc.data, (), f"batch settings ({', '.join(BATCH_KEYS)})")
    checker.raise_if_any()
    assert data is not None
    if "jobs" not in data and any(key in SETTINGS for key in data):
        checker.add(
            (),
            f"has no jobs: list; a file of one run's settings runs with `optsearch run --config {doc.file}`",
        )
        checker.raise_if_any()
    for key in data:
        if key in BATCH_KEYS:
            continue
        if key in SETTINGS:
            checker.add((key,), "is a run setting; put it under defaults: (every job) or in a job")
        else:
            checker.problems.append(_unknown(key, BATCH_KEYS, checker.where((key,)), ""))
    out = data.get("out")
    if out is not None:
        out = checker.value(SETTINGS["out"], out, ("out",))[1]
    runners = {
        name: checker.value(setting, data.get(name, setting.default), (name,))[1]
        for name, setting in BATCH_RUNNERS.items()
    }
    if runners["scheduler"] is not None and runners["executor"] == "local":
        checker.add(("scheduler",), "is the address of a Dask scheduler; add executor: dask")
    defaults_raw = data.get("defaults")
    defaults = (
        {} if defaults_raw is None else checker.mapping(defaults_raw, ("defaults",), "run settings") or {}
    )
    top_check = _check_section(checker, data["check"], ("check",)) if data.get("check") is not None else None
    jobs_raw = data.get("jobs")
    if not isinstance(jobs_raw, list) or not jobs_raw:
        checker.add(
            ("jobs",),
            f"must be a non-empty list of jobs (- model: ...); got {show(jobs_raw)}",
        )
        checker.raise_if_any()
        assert isinstance(jobs_raw, list)
    sources: dict[str, tuple[object, Path_]] = {}
    for key, raw in defaults.items():
        if key in SETTINGS:
            sources[key] = (raw, ("defaults", key))
        else:
            checker.problems.append(
                _unknown(key, SETTINGS, checker.where(("defaults", key)), f"defaults.{key}")
            )
    for key, raw in (overrides or {}).items():
        if key in SETTINGS:
            sources[key] = (raw, ("--set", key))
        else:
            checker.problems.append(_unknown(key, SETTINGS, "--set", key))
    cache: dict[Path_, tuple[bool, Any]] = {}

    def checked(setting: Setting, raw: object, path: Path_) -> tuple[bool, Any]:
        if path not in cache:
            cache[path] = checker.value(setting, raw, path)
        return cache[path]

    jobs: list[JobConfig] = []
    for entry, job_raw in enumerate(jobs_raw):
        jobs.extend(_expand_job(checker, checked, doc, entry, job_raw, sources, top_check, overrides or {}))
        if len(jobs) > MAX_JOBS:
            checker.add(("jobs",), f"expand to more than {MAX_JOBS} jobs; make the grids smaller")
            break
    checker.raise_if_any()
    return BatchConfig(doc.file, out, tuple(jobs), runners["executor"], runners["scheduler"])


def _expand_job(
    checker: _Checker,
    checked: Any,
    doc: Document,
    entry: int,
    job_raw: object,
    defaults: Mapping[str, tuple[object, Path_]],
    top_check: dict[str, Any] | None,
    overrides: Mapping[str, object],
) -> list[JobConfig]:
    """One entry of ``jobs:`` as one job, or several when a value is a list (a grid, in file order)."""
    base: Path_ = ("jobs", entry)
    job = checker.mapping(job_raw, base, "run settings")
    if job is None:
        return []
    sources = dict(defaults)
    for key, raw in job.items():
        if key in SETTINGS:
            sources[key] = (raw, (*base, key))
        elif key not in JOB_KEYS:
            checker.problems.append(
                _unknown(key, [*SETTINGS, *JOB_KEYS], checker.where((*base, key)), _field_name((*base, key)))
            )
    for key in overrides:
        if key in SETTINGS:  # --set wins over the job's own value
            sources[key] = (overrides[key], ("--set", key))
    name = job.get("name")
    if name is not None and (
        not isinstance(name, str | int | float) or isinstance(name, bool) or not str(name)
    ):
        checker.add((*base, "name"), f"got {show(name)}; valid: text, e.g. sequential_mnist-eps{{eps}}")
        name = None
    check = top_check
    if "check" in job:
        section = job["check"]
        check = (
            None
            if section is None
            else {**(top_check or {}), **(_check_section(checker, section, (*base, "check")) or {})}
        )
    if check is not None and "baseline" not in check:
        checker.add((*base, "check") if "check" in job else ("check",), "needs a baseline: field")
    singles: dict[str, Any] = {}
    axes: list[tuple[str, list[Any]]] = []
    ok_all = True
    for key, (raw, path) in sources.items():
        setting = SETTINGS[key]
        if is_grid(setting, raw):
            assert isinstance(raw, list)
            axis = []
            for i, item in enumerate(raw):
                ok, value = checked(setting, item, (*path, i))
                ok_all &= ok
                axis.append(value)
            if not raw:
                checker.add(path, "an empty list expands to no jobs; give at least one value")
                ok_all = False
            axes.append((key, axis))
        else:
            ok, value = checked(setting, raw, path)
            ok_all &= ok
            singles[key] = value
    for setting in RUN_SETTINGS:
        if setting.required and setting.name not in sources:
            checker.add(
                base, f"no {setting.name}: give it in this job or under defaults:, e.g. {setting.example}"
            )
            ok_all = False
    if not ok_all:
        return []
    where = doc.where(base)
    jobs = []
    count = math.prod(len(axis) for _, axis in axes)
    if count > MAX_JOBS:
        checker.add(base, f"its grid expands to {count} jobs (more than {MAX_JOBS}); make it smaller")
        return []
    for combo in itertools.product(*(axis for _, axis in axes)):
        varied = {key: value for (key, _), value in zip(axes, combo, strict=True)}
        jobs.append(
            JobConfig(
                entry=entry,
                where=where,
                values={**DEFAULTS, **singles, **varied},
                varied=varied,
                name=None if name is None else str(name),
                check=None if check is None else gate_settings(check),
            )
        )
    return jobs


def format_value(value: object) -> str:
    """A setting's value in a folder name or a table: ``0.005``, ``12x8x12``, ``A-quadratic-0.5-1``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        if value and all(isinstance(item, tuple) for item in value):
            return "+".join(format_value(item) for item in value)
        return ("x" if all(isinstance(v, int) for v in value) else "-").join(
            format_value(v) for v in value
        ) or "none"
    return str(value)
