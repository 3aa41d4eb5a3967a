"""A result folder made ready for deployment: its netlist and Keras model, and ``verify`` over data.

``load_result`` reads ``formats.json`` (through ``ResultFolder``) and ``quantized.keras`` and checks
that they belong together; ``verify_result`` runs the integer reference against the Keras quantized
model on the run's data (or other data) and returns the agreement as data for the CLI to print.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import optsearch.model.quantizer_layer  # noqa: F401  (registers FixedPointQuantizer for loading)
from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import DeployError, Netlist, real_inputs
from optsearch.core.tensors import TensorId
from optsearch.data import (
    Dataset,
    ImageOptions,
    Preprocess,
    Unlabelled,
    fit_channel_axis,
    load_samples,
    split,
)
from optsearch.deploy import integer_ref
from optsearch.deploy.integer_ref import Agreement
from optsearch.model.netlist import predict_batches, probe, read_netlist
from optsearch.results.folder import MODEL_FILE, Recorded, ResultFolder

PARTS = ("all", "search", "held-out")


@dataclass
class ResultDir:
    """A result folder of ``optsearch run``: its formats, its netlist, and what the run recorded."""

    path: Path
    formats: dict[TensorId, Format]
    netlist: Netlist
    recorded: Recorded
    """What formats.json records that deployment needs (model name, data, folded BatchNorms)."""
    model: keras.Model
    """The quantized Keras model (``quantized.keras``)."""

    @property
    def name(self) -> str:
        return self.recorded.model_name or self.netlist.name


def load_result(result_dir: str | Path) -> ResultDir:
    """Read ``formats.json`` and ``quantized.keras`` of a result folder and check they belong together."""
    path = Path(result_dir)
    if not path.is_dir():
        raise DeployError(f"result folder not found: {path} (pass the --out folder of `optsearch run`)")
    recorded = ResultFolder.at(path).read_recorded()
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise DeployError(f"{path}: no {MODEL_FILE}; pass a folder written by `optsearch run`")
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a damaged file
        raise DeployError(f"{model_path} could not be loaded ({type(err).__name__}: {err})") from err
    netlist = read_netlist(model, recorded.formats, recorded.model_name or model.name)
    return ResultDir(path, recorded.formats, netlist, recorded, model)


@dataclass(frozen=True)
class Verification:
    """What ``optsearch verify`` measured: the agreement, on which samples, and which weighted layers
    read a float input (so are not integer-only)."""

    agreement: Agreement
    samples: int
    spec: str
    part: str
    weighted_layers: int
    float_causes: dict[str, int]
    """The kind of layer that makes a weighted layer's input real-valued, and how many it feeds."""


def verify_result(
    result: ResultDir,
    data_spec: str | None = None,
    part: str = "all",
    samples: int | None = None,
    batch_size: int = 250,
) -> Verification:
    """Verify ``result`` on its run's data (``part`` of its split) or on ``data_spec``."""
    info = result.recorded.data
    spec = data_spec or info.get("spec")
    if not spec:
        raise DeployError(f"{result.path}/formats.json names no data; pass --data")
    resize = tuple(info["resize"]) if info.get("resize") and data_spec is None else None
    scale = info.get("scale") if data_spec is None else None
    input_shape = tuple(result.model.inputs[0].shape[1:])
    try:
        loaded = load_samples(spec, images=ImageOptions.for_input_shape(input_shape, resize))
    except FileNotFoundError as err:
        raise DeployError(f"data {spec!r} of the run not found ({err}); pass --data") from err
    preprocess = fit_channel_axis(
        Preprocess(scale=scale, resize=resize),
        tuple(loaded.x.shape[1:]),
        input_shape,
    )
    if isinstance(loaded, Unlabelled):  # label-free: compare the two networks, no accuracy
        if part != "all":
            raise DeployError(
                f"{spec} has no labels (the run labelled it with the float model's predictions), so its "
                f"{part} part cannot be redone here; leave out --part to verify on all of it"
            )
        x = preprocess(loaded.x[:samples] if samples else loaded.x)
        agreement = verify(result, x, batch_size)
    else:
        dataset = data_part(loaded, part, info, result.path)
        x = preprocess(dataset.x[:samples] if samples else dataset.x)
        agreement = verify(result, x, batch_size, labels=dataset.y[: len(x)])
    causes = Counter(node.source for node in real_inputs(result.netlist).values())
    return Verification(
        agreement, len(x), spec, part, len(list(result.netlist.weighted())), dict(causes.most_common())
    )


def data_part(dataset: Dataset, part: str, info: dict[str, object], result_dir: Path) -> Dataset:
    """The ``part`` of the run's data: the split is redone from the fraction and seed in formats.json
    (spec §4: deterministic), so these are the samples the run searched on or held out."""
    if part == "all":
        return dataset
    fraction = float(info.get("search_fraction", 1.0))  # type: ignore[arg-type]
    if fraction >= 1.0:
        raise DeployError(
            f"{result_dir}: the run searched on all of its data (search fraction 1), so it has no "
            f"{part} part; leave out --part"
        )
    search, held_out = split(dataset, fraction, int(info.get("seed", 0)))  # type: ignore[call-overload]
    expected = info.get(f"{part.replace('-', '_')}_samples")
    chosen = search if part == "search" else held_out
    assert chosen is not None
    if expected is not None and len(chosen) != expected:
        raise DeployError(
            f"{result_dir}: the {part} part has {len(chosen)} samples here but {expected} in the run: "
            "the data file changed since the run; pass the run's data"
        )
    return chosen


def lsb(fmt: Format) -> float:
    return math.ldexp(1.0, -fmt.f)


def verify(
    result: ResultDir, x: np.ndarray, batch_size: int = 250, labels: np.ndarray | None = None
) -> Agreement:
    """Run the integer reference and the Keras quantized model on ``x`` and compare them.

    Layer by layer, every activation quantizer is computed by the reference from the Keras model's
    own quantized activations; end to end, the reference runs alone from the input. With
    ``labels``, both end-to-end accuracies are counted: what the hardware would score.
    """
    netlist = result.netlist
    scores = integer_ref.scores_node(netlist)
    quantizers = [n for n in netlist.nodes if n.op == "quantize"]
    names = [q.name for q in quantizers]
    probe_names = names if scores in names else [*names, scores]
    scores_node = netlist.node(scores)
    logit_lsb = lsb(scores_node.attrs["format"]) if scores_node.op == "quantize" else None
    probe_model = probe(result.model, netlist, probe_names)
    total: Agreement | None = None
    for part, outputs in predict_batches(probe_model, x, batch_size):
        model_values = dict(zip(probe_names, outputs, strict=True))
        forced = integer_ref.run(
            netlist,
            x[part],
            teacher={name: model_values[name] for name in names},
            keep=[q.inputs[0] for q in quantizers],
        )
        layers = tuple(
            integer_ref.layer_agreement(
                q.name, forced[q.name], model_values[q.name], forced[q.inputs[0]], q.attrs["format"]
            )
            for q in quantizers
        )
        alone = integer_ref.run(netlist, x[part])
        batch = Agreement(
            layers=layers,
            layer_logits=integer_ref.compare_logits(forced[scores].real(), model_values[scores]),
            end_to_end=integer_ref.compare_logits(
                alone[scores].real(), model_values[scores], None if labels is None else labels[part]
            ),
            logit_lsb=logit_lsb,
        )
        total = batch if total is None else total.merge(batch)
    if total is None:
        raise DeployError("no samples to verify on")
    return total
