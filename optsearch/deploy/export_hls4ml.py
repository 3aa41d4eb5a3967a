"""The hls4ml configuration of a result: every precision set so that hls4ml computes our network.

Pure: a ``Netlist`` in, the per-layer-name dictionary of ``hls4ml.utils.config_from_keras_model(
model, granularity="name")`` out, with (docs/deployment.md):

- weights, biases and activations at ``ap_fixed<BW, BW-F, AP_RND_CONV, AP_SAT_SYM>``, exactly ``Q``;
- every accumulator and pre-activation result exact: sized from the formats and the fan-in;
- real-valued tensors (the input, BatchNorm results, averages) at ``REAL_BITS``-bit types covering
  their range, since the model computes them in float.

hls4ml itself is not needed to write it; ``scripts/check_hls4ml.py`` compares its C simulation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optsearch.core.fixedpoint import Format, initial_offset
from optsearch.core.netlist import DeployError, Grid, Netlist, Node, accumulator, propagate

HLS4ML_VERSION = "1.3"
#: Bits of the types given to real-valued tensors (BatchNorm scale, bias and result; averages).
REAL_BITS = 32
#: Default bits of the input type.
INPUT_BITS = 16
#: Layers before the first weighted layer that hls4ml 1.3 cannot convert; left out of the hls4ml model.
PREPROCESSING_OPS = ("rescale", "resize")
#: hls4ml's precision of everything this export leaves unset (its own default).
DEFAULT_PRECISION = "ap_fixed<16,6>"


def ap_fixed(fmt: Format) -> str:
    """``ap_fixed<BW, BW-F, AP_RND_CONV, AP_SAT_SYM>``; a pruned format is written with ``W = 1``.

    hls4ml cannot hold "always zero" in a type (a 1-bit ``AP_SAT_SYM`` type still holds ``-LSB``):
    the weights of a pruned tensor must be zeroed before conversion (``prepare_model`` does).
    """
    if fmt.pruned:
        return f"ap_fixed<1,{1 - fmt.f},AP_RND_CONV,AP_SAT_SYM>"
    return fmt.ap_fixed()


def real_format(bound: float, bits: int = REAL_BITS) -> Format:
    """A ``bits``-bit format that holds ``[-bound, bound]`` without clipping (the finest such)."""
    return Format(bits, initial_offset(bound, bits, "noclip") if bound > 0 else bits - 1)


def _grid_of(fmt: Format) -> Grid:
    return Grid(fmt.f, fmt.max_code)


def _bound(grid: Grid) -> float:
    return math.ldexp(float(grid.max_code), -grid.f)


@dataclass
class Hls4mlExport:
    """The configuration and what a user must know to apply it."""

    config: dict[str, Any]
    input_layer: str
    """Name of the hls4ml model's input (after the preprocessing layers it leaves out)."""
    input_format: Format
    preprocessing: list[str]
    """Layers left out of the hls4ml model (apply them to the input yourself)."""
    weight_formats: dict[str, dict[str, tuple[int, int]]]
    notes: list[str] = field(default_factory=list)


class _Names:
    """hls4ml 1.3's unique names (``UniqueName`` in keras_v3_to_hls.py), quirk included.

    It starts from ``set('input')``, the set of the letters i, n, p, u, t, so a layer named
    ``p`` becomes ``p_0`` in hls4ml.
    """

    def __init__(self) -> None:
        self.used: set[str] = set("input")

    def __call__(self, name: str) -> str:
        if name in self.used:
            i = 0
            while f"{name}_{i}" in self.used:
                i += 1
            name = f"{name}_{i}"
        self.used.add(name)
        return name


def leading_preprocessing(netlist: Netlist) -> list[Node]:
    """The chain of Rescaling/Resizing layers right after the input (hls4ml has no handler for them)."""
    chain: list[Node] = []
    current = netlist.input
    while True:
        consumers = netlist.consumers(current.name)
        if len(consumers) != 1 or consumers[0].op not in PREPROCESSING_OPS:
            return chain
        current = consumers[0]
        chain.append(current)


def default_input_range(netlist: Netlist) -> float | None:
    """The largest input magnitude hls4ml sees, when the model starts with a Rescaling of 0..255 pixels."""
    chain = leading_preprocessing(netlist)
    rescale = next((n for n in chain if n.op == "rescale"), None)
    if rescale is None:
        return None
    return 255.0 * abs(float(rescale.attrs["scale"])) + abs(float(rescale.attrs["offset"]))


def input_node(netlist: Netlist) -> Node:
    """The node whose output is the hls4ml model's input."""
    chain = leading_preprocessing(netlist)
    return chain[-1] if chain else netlist.input


def export(
    netlist: Netlist,
    *,
    input_format: Format | None = None,
    input_range: float | None = None,
    input_bits: int = INPUT_BITS,
    real_bits: int = REAL_BITS,
) -> Hls4mlExport:
    """The hls4ml configuration of ``netlist`` (see the module docstring).

    The input type is ``input_format``, or the finest ``input_bits``-bit format that holds
    ``input_range`` (default: 0..255 pixels through the model's leading Rescaling).
    """
    chain = leading_preprocessing(netlist)
    first = input_node(netlist)
    if input_format is None:
        z = input_range if input_range is not None else default_input_range(netlist)
        if z is None:
            raise DeployError(
                f"model '{netlist.name}' does not start with a Rescaling layer, so the input range is "
                "unknown: give the input type with --input-format BW F (or --input-range)"
            )
        input_format = real_format(z, input_bits)
    notes: list[str] = []
    if chain:
        left_out = ", ".join(f"{n.source} {n.name!r}" for n in chain)
        notes.append(
            f"hls4ml {HLS4ML_VERSION} has no handler for {left_out}, left out: "
            f"the hls4ml model's input is the output of '{first.name}', typed "
            f"{ap_fixed(input_format)} (prepare_model() in hls4ml_config.py builds that model)"
        )
    names = _Names()
    layers: dict[str, dict[str, Any]] = {}
    grids: dict[str, Grid | None] = {}
    weight_formats: dict[str, dict[str, tuple[int, int]]] = {}
    skipped = {netlist.input.name, *(n.name for n in chain)}
    grids[first.name] = _grid_of(input_format)
    result_of: dict[str, str] = {}  # netlist node -> the hls4ml layer that produces its value
    result_of[first.name] = names(first.name)
    layers[result_of[first.name]] = {"Precision": {"result": ap_fixed(input_format)}}
    for node in netlist.nodes:
        if node.name in skipped:
            continue
        if node.max_value is not None and (node.op == "relu" or node.activation == "relu"):
            raise DeployError(
                f"layer '{node.name}' ({node.source}): ReLU(max_value={node.max_value:g}) (ReLU6) is a clip "
                f"whose bound hls4ml {HLS4ML_VERSION}'s configuration cannot set or check; "
                "use the C or QONNX export"
            )
        inputs = [grids[i] for i in node.inputs]
        if any(g is None for g in inputs) and node.op != "quantize":
            raise DeployError(f"layer '{node.name}' ({node.source}): its input has no fixed-point type")
        ins: list[Grid] = [g for g in inputs if g is not None]
        in_shape = netlist.node(node.inputs[0]).output_shape
        grid, entries = _layer(node, ins, real_bits, notes, in_shape)
        grids[node.name] = grid
        if node.op == "quantize":
            fmt: Format = node.attrs["format"]
            producer = result_of[node.inputs[0]]
            layers[producer]["Precision"]["result"] = ap_fixed(fmt)
            result_of[node.name] = producer
            continue
        hls_names = [names(entry_name) for entry_name, _ in entries]
        for hls_name, (_, entry) in zip(hls_names, entries, strict=True):
            layers[hls_name] = entry
        result_of[node.name] = hls_names[-1]
        if node.op in ("conv", "depthwise", "dense"):
            weight_formats[node.name] = {"W": (node.weights[0].fmt.bw, node.weights[0].fmt.f)}
            if node.bias is not None:
                weight_formats[node.name]["B"] = (node.bias.fmt.bw, node.bias.fmt.f)
    split = [n for n in netlist.weighted() if n.activation != "linear"]
    if split:
        notes.append(
            f"{len(split)} layers with a built-in activation become two hls4ml layers each, e.g. "
            f"'{split[0].name}' (result: the exact accumulator) and '{split[0].name}_{split[0].activation}' "
            "(result: the activation format); both have precisions in the configuration"
        )
    if any(n.op == "softmax" for n in netlist.nodes):
        notes.append(
            "softmax: not part of the formats (the logits before it are quantized); hls4ml computes it "
            "with lookup tables at its own default precisions, so compare logits, or argmax"
        )
    config = {
        "Model": {
            "Precision": {"default": DEFAULT_PRECISION},
            "ReuseFactor": 1,
            "Strategy": "Latency",
            "BramFactor": 1_000_000_000,
            "TraceOutput": False,
        },
        "LayerName": layers,
    }
    return Hls4mlExport(config, first.name, input_format, [n.name for n in chain], weight_formats, notes)


def _layer(
    node: Node, ins: list[Grid], real_bits: int, notes: list[str], in_shape: tuple[int, ...]
) -> tuple[Grid | None, list[tuple[str, dict[str, Any]]]]:
    """The grid of ``node``'s output and its hls4ml layer entries (name, config), in hls4ml's order."""
    op = node.op
    if op == "quantize":
        return propagate(node, []), []
    if op == "separable":
        raise DeployError(
            f"layer '{node.name}' ({node.source}): hls4ml computes a separable convolution as a depthwise "
            "and a pointwise convolution with a rounded intermediate type, where the model keeps the "
            "intermediate exact; the export cannot match it. Replace it by DepthwiseConv2D + Conv2D(1x1)"
        )
    if op in PREPROCESSING_OPS:
        raise DeployError(
            f"layer '{node.name}' ({node.source}): hls4ml {HLS4ML_VERSION} has no handler for it; only "
            "leading preprocessing layers (right after the input) can be left out of the hls4ml model"
        )
    if op in ("conv", "depthwise", "dense"):
        acc = accumulator(node, ins[0])
        exact = acc.ap_fixed()
        precision = {
            "weight": ap_fixed(node.weights[0].fmt),
            "accum": exact,
            "result": exact,
        }
        if node.bias is not None:
            precision["bias"] = ap_fixed(node.bias.fmt)
        entries: list[tuple[str, dict[str, Any]]] = [(node.name, {"Precision": precision})]
        grid = Grid(acc.f, acc.max_code, node.activation == "relu")
        if node.activation != "linear":
            entries.append((f"{node.name}_{node.activation}", {"Precision": {"result": exact}}))
        return grid, entries
    if op == "batchnorm":
        a = node.arrays
        inv = a["gamma"] / np.sqrt(a["variance"] + float(node.attrs["epsilon"]))
        shift = a["beta"] - a["mean"] * inv
        scale_fmt = real_format(float(np.max(np.abs(inv))), real_bits)
        bias_fmt = real_format(float(np.max(np.abs(shift))), real_bits)
        bound = float(np.max(np.abs(inv) * _bound(ins[0]) + np.abs(shift)))
        result = real_format(bound, real_bits)
        precision = {
            "scale": ap_fixed(scale_fmt),
            "bias": ap_fixed(bias_fmt),
            "result": ap_fixed(result),
        }
        return _grid_of(result), [(node.name, {"Precision": precision})]
    if op in ("avgpool", "global_avg"):
        result = real_format(_bound(ins[0]), real_bits)
        window = int(np.prod(node.attrs["pool_size"] if op == "avgpool" else in_shape[:-1]))
        acc = Grid(ins[0].f, ins[0].max_code * window)
        notes.append(
            f"'{node.name}' ({node.source}): hls4ml divides the exact sum ({acc.ap_fixed()}) by the window "
            f"size into {ap_fixed(result)} (rounded; the model averages in float)"
        )
        precision = {"accum": acc.ap_fixed(), "result": ap_fixed(result)}
        return _grid_of(result), [(node.name, {"Precision": precision})]
    if op == "softmax":
        return None, [(node.name, {})]
    # identity, flatten, reshape, pad (ZeroPadding: hls4ml gives it its input's type, which holds the zeros),
    # max pooling, relu, concat, add: exact on the input's grid
    out = propagate(node, list(ins))
    if out is None:
        raise DeployError(f"layer '{node.name}' ({node.source}): no fixed-point type for its output")
    precision = {"result": out.ap_fixed()}
    if op in ("maxpool", "global_max"):
        precision["accum"] = out.ap_fixed()
    return out, [(node.name, {"Precision": precision})]


def write_files(
    result: Hls4mlExport, out_dir: Path, model_name: str, source: str, folded: Sequence[str] = ()
) -> list[str]:
    """Write hls4ml_config.json, hls4ml_config.yml and hls4ml_config.py into ``out_dir``.

    ``folded``: the BatchNorms a ``--fold-bn`` run folded; the helper then refuses a model that still
    has them (the formats belong to the folded model, saved as ``folded_model.keras``).
    """
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"hls4ml configuration of {model_name}, written by optsearch from {source}.\n"
        "Pass it as hls_config to hls4ml.converters.convert_from_keras_model(prepare_model(model), ...):\n"
        "see hls4ml_config.py and docs/deployment.md.\n"
    )
    (out / "hls4ml_config.json").write_text(json.dumps(result.config, indent=2) + "\n")
    yml = "".join(f"# {line}\n" for line in header.splitlines())
    yml += "".join(f"# note: {note}\n" for note in result.notes)
    yml += yaml.safe_dump(result.config, sort_keys=False)
    (out / "hls4ml_config.yml").write_text(yml)
    (out / "hls4ml_config.py").write_text(_helper(result, model_name, header, folded))
    return ["hls4ml_config.json", "hls4ml_config.yml", "hls4ml_config.py"]


def _helper(result: Hls4mlExport, model_name: str, header: str, folded: Sequence[str]) -> str:
    config = json.dumps(result.config, indent=4).replace("false", "False").replace("true", "True")
    formats = json.dumps({k: {t: list(v) for t, v in d.items()} for k, d in result.weight_formats.items()})
    notes = "".join(f"#  - {note}\n" for note in result.notes)
    return _HELPER.format(
        header=header.strip(),
        notes=notes or "#  (none)\n",
        config=config,
        input_layer=json.dumps(result.input_layer),
        preprocessing=json.dumps(result.preprocessing),
        input_format=json.dumps([result.input_format.bw, result.input_format.f]),
        weight_formats=formats,
        folded=json.dumps(list(folded)),
        model_name=model_name,
    )


_HELPER = '''"""{header}"""

# Notes:
{notes}
from __future__ import annotations

import math

import numpy as np

#: The hls4ml configuration (granularity "name"): pass it as hls_config.
CONFIG = {config}
#: The hls4ml model's input: the output of this layer of the Keras model.
INPUT_LAYER = {input_layer}
#: Keras layers left out of the hls4ml model (hls4ml has no handler): apply them to the input first.
PREPROCESSING = {preprocessing}
#: The input type, (BW, F): ap_fixed<BW, BW-F, AP_RND_CONV, AP_SAT_SYM>.
INPUT_FORMAT = {input_format}
#: The weights and biases formats (BW, F) per layer; BW = 1 is pruned (all zeros).
WEIGHT_FORMATS = {weight_formats}
#: BatchNorms folded into their neighbours before the search (optsearch run --fold-bn): the formats
#: belong to the folded model, which the run saved as folded_model.keras.
FOLDED_BATCHNORMS = {folded}


def quantize(x, bw, f):
    """Q(x) = clip(round_half_even(x * 2**f), -t, t) / 2**f with t = 2**(bw-1) - 1 (0 when bw = 1)."""
    t = 0 if bw <= 1 else 2 ** (bw - 1) - 1
    scale = math.ldexp(1.0, f)
    return (np.clip(np.rint(np.asarray(x, dtype=np.float64) * scale), -t, t) / scale).astype(np.float32)


def prepare_model(model):
    """A copy of the float Keras model {model_name} ready for hls4ml.

    The preprocessing layers are left out (the new input is named INPUT_LAYER), and every weights and
    biases tensor is set to its quantized values: hls4ml prints weights with F decimals and a
    pruned tensor has no ap_fixed type, so quantizing first makes the conversion exact.
    """
    import keras

    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    unfolded = [layer.name for layer in model.layers if layer.name in FOLDED_BATCHNORMS]
    if unfolded:
        raise ValueError(
            f"the model still has {{', '.join(unfolded)}}, which the search folded (--fold-bn): "
            "pass the folded model, folded_model.keras in the result folder"
        )
    node_of = {{}}
    for depth in sorted(model._nodes_by_depth):
        for node in model._nodes_by_depth[depth]:
            node_of[node.operation.name] = node
    start = model.get_layer(INPUT_LAYER)
    new_input = keras.Input(tuple(node_of[INPUT_LAYER].output_tensors[0].shape[1:]), name=INPUT_LAYER)
    tensors = {{INPUT_LAYER: new_input}}
    skip = set(PREPROCESSING) | {{model.inputs[0]._keras_history.operation.name, start.name}}
    for layer in model.operations:
        if layer.name in skip:
            continue
        args = [tensors[t._keras_history.operation.name] for t in node_of[layer.name].input_tensors]
        clone = type(layer).from_config(layer.get_config())
        tensors[layer.name] = clone(args if len(args) > 1 else args[0])
        weights = layer.get_weights()
        if layer.name in WEIGHT_FORMATS:
            formats = WEIGHT_FORMATS[layer.name]
            names = [w.name for w in layer.weights]
            weights = [
                quantize(w, *formats["B" if name == "bias" else "W"]) for w, name in zip(weights, names)
            ]
        clone.set_weights(weights)
    output = tensors[model.outputs[0]._keras_history.operation.name]
    return keras.Model(new_input, output, name=model.name)


def convert(model, output_dir, backend="Vivado", io_type="io_parallel", **kwargs):
    """Convert the float Keras model with this configuration (hls4ml must be installed)."""
    import hls4ml

    return hls4ml.converters.convert_from_keras_model(
        prepare_model(model), hls_config=CONFIG, output_dir=str(output_dir), backend=backend,
        io_type=io_type, **kwargs
    )
'''


def describe_precisions(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(hls4ml layer, precision key, type) rows, for documentation and the CLI."""
    rows: list[tuple[str, str, str]] = []
    for name, entry in config["LayerName"].items():
        for key, value in entry.get("Precision", {}).items():
            rows.append((name, key, str(value)))
    return rows
