"""Compare hls4ml's C simulation of an exported result with optsearch's references.

Needs the optional extra (``pip install -e ".[hls4ml]"``: hls4ml 1.3 with its Keras 3 extra) and
g++. Two ways into hls4ml:

**Keras (default).** It exports the hls4ml configuration of RESULT_DIR, converts the float model
with it (through the exported ``hls4ml_config.py``: preprocessing left out, weights quantized),
compiles hls4ml's C simulation (softmax skipped, so it outputs the logits), and compares its logits
on the first --samples images with:

- the integer reference with the input quantized to the exported input type, as hls4ml does
  (expected: identical logits);
- the Keras quantized model (quantized.keras), whose input is not quantized (expected: identical
  argmax; logits within a few LSBs where the input rounding moves an activation).

**QONNX (--qonnx; also needs onnx and qonnx, ``pip install -e ".[qonnx]"``).** It exports RESULT_DIR
to QONNX as ``optsearch export --to qonnx`` does, cuts the graph to what the Keras path converts
(from the output of the leading Rescaling, whose value hls4ml receives typed as the exported input
type, to the logits: the final Softmax is left out), cleans it and converts it to channels last with
qonnx, converts it with ``hls4ml.converters.convert_from_onnx_model`` (io_parallel), and compares
the C simulation with the integer reference, input quantized as above. Every type the Quant nodes do
not set is hls4ml's ``auto`` (exact accumulators and BatchNorm results), but a BatchNorm's scale and
bias (32 bits, as the hls4ml export types them) and a pruned bias (--default-precision); what
hls4ml 1.3's QONNX reader cannot take is refused in one line (docs/qonnx.md).

    python scripts/check_hls4ml.py /tmp/r10 --samples 1000 --out /tmp/hls4ml_check
    python scripts/check_hls4ml.py /tmp/r10 --qonnx --samples 1000 --opt-level O1 --out /tmp/qonnx_check

Writes OUT/check_hls4ml.json and prints a Markdown table (docs/deployment.md and docs/qonnx.md
quote it).

hls4ml's ``io_parallel`` convolutions come with generated im2col code (28 MB of C++ for the
sequential zoo model); g++ at hls4ml's ``-O3`` did not finish it in 16 CPU-minutes here.
``--opt-level O1`` rewrites the project's ``build_lib.sh`` before compiling: the C simulation
computes the same ``ap_fixed`` arithmetic at any optimisation level, only its speed changes.
``--prebuilt PROJECT`` loads the library of a project compiled before (by this script, or by hand
with its ``build_lib.sh``) instead of compiling again: the project this run writes must be the same,
file for file (the library stamp and the build script aside), so the library computes exactly this
configuration.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import Netlist
from optsearch.data import Preprocess, fit_channel_axis, load_data
from optsearch.deploy import integer_ref
from optsearch.deploy.export_hls4ml import REAL_BITS, ap_fixed, export, input_node, real_format, write_files
from optsearch.deploy.exporters import exporter
from optsearch.model.loading import load_model
from optsearch.model.netlist import predict_batches, probe
from optsearch.results.folder import FOLDED_MODEL_FILE
from optsearch.run.deployed import ResultDir, load_result

if TYPE_CHECKING:
    import onnx

#: The precision of every hls4ml type in the QONNX path that no Quant node sets, hls4ml does not infer
#: and ``batchnorm_precisions`` does not set: the zero bias of a conv whose bias is pruned.
QONNX_DEFAULT_PRECISION = "fixed<32,16>"
#: ONNX's default BatchNormalization epsilon.
ONNX_BN_EPSILON = 1e-5
#: ONNX operations hls4ml 1.3's reader drops (``parse_onnx_model``'s ``skip_layers``).
HLS4ML_SKIPPED_OPS = ("Dropout", "Identity")
#: Starts a node's doc string that keeps, through qonnx's conversion (which renames every node), its
#: name in the export and the pads of a MaxPool whose uneven pads are set aside meanwhile.
NOTE = "check_hls4ml: "
#: Samples per integer-reference batch.
BATCH = 250

Row = tuple[str, str]
"""A report key and its label in the Markdown table."""
Checked = tuple[dict[str, Any], list[Row]]
"""A path's part of the report, and the rows of its table."""


def _load_helper(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("hls4ml_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prebuilt_library(project: Path, prebuilt: Path, stamp: str) -> Path:
    """The compiled library of ``prebuilt``, once every source file of ``project`` (just written for
    this configuration) is found there unchanged, apart from the library stamp."""
    libraries = sorted((prebuilt / "firmware").glob("myproject-*.so"))
    if len(libraries) != 1:
        raise SystemExit(f"{prebuilt}/firmware: expected one compiled myproject-*.so, found {len(libraries)}")
    old_stamp = libraries[0].stem.removeprefix("myproject-")
    differ = []
    compiled = [project / "myproject_bridge.cpp", *sorted((project / "firmware").rglob("*"))]
    for path in compiled:  # what the library is built from, and the weights it reads at run time
        if not path.is_file() or path.suffix == ".so":
            continue
        relative = path.relative_to(project)
        other = prebuilt / relative
        restamped = (
            other.read_bytes().replace(old_stamp.encode(), stamp.encode()) if other.is_file() else None
        )
        if restamped != path.read_bytes():
            differ.append(str(relative))
    if differ:
        raise SystemExit(
            f"--prebuilt {prebuilt}: not the project of this configuration ({len(differ)} files differ, "
            f"e.g. {', '.join(differ[:3])}); compile it instead (leave out --prebuilt)"
        )
    return libraries[0]


def build(hls_model: Any, project: Path, opt_level: str = "O3", prebuilt: Path | None = None) -> float:
    """Write ``hls_model``'s project into ``project`` and load its C simulation: compiled with g++ at
    ``opt_level`` (hls4ml's build script rewritten), or ``prebuilt``'s library when given. Returns
    the seconds it took."""
    t0 = time.perf_counter()
    hls_model.write()
    if prebuilt is not None:
        library = _prebuilt_library(project, prebuilt, hls_model.config.get_config_value("Stamp"))
        hls_model._top_function_lib = ctypes.cdll.LoadLibrary(str(library))
    else:
        script_path = project / "build_lib.sh"
        script = script_path.read_text()
        if '"-O3 -fPIC"' not in script:
            raise SystemExit(
                f"{script_path}: no '-O3 -fPIC' to replace; this hls4ml writes another build script"
            )
        script_path.write_text(script.replace('"-O3 -fPIC"', f'"-{opt_level} -fPIC"'))
        hls_model._compile()  # compile() would write the project again, and the build script with it
    return time.perf_counter() - t0


def predict(hls_model: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The C simulation's outputs on ``x`` (one row per sample, float64) and the seconds it took."""
    t0 = time.perf_counter()
    y = np.asarray(hls_model.predict(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(x), -1)
    return y, time.perf_counter() - t0


def reference_scores(
    netlist: Netlist, x: np.ndarray, quantize_at: Mapping[str, Format] | None = None
) -> np.ndarray:
    """The integer reference's logits (the scores node, before any softmax), in batches."""
    scores = integer_ref.scores_node(netlist)
    batches = [
        integer_ref.run(netlist, x[i : i + BATCH], quantize_at=quantize_at)[scores].real()
        for i in range(0, len(x), BATCH)
    ]
    return np.concatenate(batches).reshape(len(x), -1)


def compare(a: np.ndarray, b: np.ndarray, lsb: float) -> dict[str, Any]:
    """Same argmax, identical logits (per sample), and the largest difference in LSBs of the logits."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "samples": len(a),
        "argmax_equal": int(np.sum(np.argmax(a, 1) == np.argmax(b, 1))),
        "logits_identical": int(np.sum(np.all(diff == 0, axis=1))),
        "max_logit_diff_lsb": float(diff.max() / lsb),
    }


def _inputs(result: ResultDir, data: str | None, samples: int) -> np.ndarray:
    """The first ``samples`` images of the run's data (or ``data``), preprocessed as the run did."""
    dataset = load_data(data or result.recorded.data["spec"])
    info = result.recorded.data
    preprocess = fit_channel_axis(
        Preprocess(scale=info.get("scale"), resize=tuple(info["resize"]) if info.get("resize") else None),
        tuple(dataset.x.shape[1:]),
        tuple(result.model.inputs[0].shape[1:]),
    )
    x: np.ndarray = preprocess(dataset.x[:samples])
    return x


def _write_report(report: dict[str, Any], rows: list[Row], out: Path) -> None:
    """OUT/check_hls4ml.json, and the JSON and a Markdown table of ``rows`` on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "check_hls4ml.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print("| comparison | samples | same argmax | identical logits | max logit difference |")
    print("|---|---:|---:|---:|---:|")
    for key, label in rows:
        r = report[key]
        print(
            f"| {label} | {r['samples']} | {r['argmax_equal']} | {r['logits_identical']} | "
            f"{r['max_logit_diff_lsb']:g} LSB |"
        )


# --- Keras -> hls4ml ------------------------------------------------------------------------------


def _check_keras(args: argparse.Namespace, result: ResultDir, x: np.ndarray) -> Checked:
    """The Keras path: the float model converted with the exported hls4ml configuration."""
    import hls4ml

    netlist = result.netlist
    exported = export(netlist)
    folded = result.recorded.folded
    files = write_files(exported, args.out / "export", result.name, str(args.result_dir), folded)
    helper = _load_helper(args.out / "export" / files[2])

    model_path = args.model or (
        args.result_dir / FOLDED_MODEL_FILE if folded else Path(str(result.recorded.model_path))
    )
    float_model = load_model(model_path)
    prepared = helper.prepare_model(float_model)
    scores = integer_ref.scores_node(netlist)
    config = json.loads(json.dumps(helper.CONFIG))
    for node in netlist.nodes:  # hls4ml skips the softmax and outputs the logits: compare those
        if node.op == "softmax":
            config["LayerName"][node.name] = {"Skip": True}

    front = keras.Model(float_model.inputs[0], float_model.get_layer(helper.INPUT_LAYER).output)
    x_hls = np.asarray(front.predict(x, verbose=0), dtype=np.float32)

    project = args.out / "hls4ml_prj"
    hls_model = hls4ml.converters.convert_from_keras_model(
        prepared, hls_config=config, output_dir=str(project), backend=args.backend, io_type=args.io_type
    )
    compile_seconds = build(hls_model, project, args.opt_level, args.prebuilt)
    y_hls, predict_seconds = predict(hls_model, x_hls)

    fmt = netlist.node(scores).attrs["format"]
    lsb = fmt.lsb
    ref_q = reference_scores(netlist, x, {helper.INPUT_LAYER: exported.input_format})
    ref = reference_scores(netlist, x)
    keras_logits = np.concatenate(
        [outs[0] for _, outs in predict_batches(probe(result.model, netlist, [scores]), x, BATCH)]
    ).reshape(len(x), -1)
    report = {
        "path": "keras",
        "model": str(model_path),
        "keras": keras.__version__,
        "input_type": ap_fixed(exported.input_format),
        "logits_format": str(fmt),
        "hls4ml_vs_reference_input_quantized": compare(y_hls, ref_q, lsb),
        "hls4ml_vs_keras_quantized": compare(y_hls, keras_logits, lsb),
        "reference_vs_keras_quantized": compare(ref, keras_logits, lsb),
        "compile_seconds": round(compile_seconds, 1),
        "csim_predict_seconds": round(predict_seconds, 1),
    }
    rows = [
        (
            "hls4ml_vs_reference_input_quantized",
            "hls4ml C-sim vs integer reference (input quantized as hls4ml)",
        ),
        ("hls4ml_vs_keras_quantized", "hls4ml C-sim vs Keras quantized model"),
        ("reference_vs_keras_quantized", "integer reference vs Keras quantized model"),
    ]
    return report, rows


# --- QONNX -> hls4ml ------------------------------------------------------------------------------


def export_qonnx(result: ResultDir, folder: Path) -> Path:
    """``model.onnx`` of ``result``, written by the exporter ``optsearch export --to qonnx`` uses."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = exporter("qonnx").write(result.netlist, folder, result.name, str(result.path), result.recorded)
    return folder / written.files[0]


def _attribute(node: Any, name: str) -> Any:
    import onnx

    found = [a for a in node.attribute if a.name == name]
    return onnx.helper.get_attribute_value(found[0]) if found else None


def refuse_for_hls4ml(model: onnx.ModelProto) -> None:
    """Exit in one line naming the first node hls4ml 1.3's QONNX reader cannot take, and why.

    Checked on the export's own names, before qonnx's clean-up renames every node: an operation
    without an ONNX handler in hls4ml (e.g. ``Clip``, the export's ReLU6), and an unsigned narrow
    ``Quant`` (a pruned activation, range ``{0}``), which hls4ml's ``quant_opt`` refuses ("Narrow
    mode is only supported for singed numbers", sic).
    """
    import hls4ml

    supported = {*hls4ml.converters.get_supported_onnx_layers(), *HLS4ML_SKIPPED_OPS}
    for node in model.graph.node:
        if node.op_type not in supported:
            raise SystemExit(
                f"node '{node.name}' ({node.op_type}): hls4ml {hls4ml.__version__}'s ONNX reader has no "
                "handler for this operation"
            )
        if node.op_type == "Quant" and _attribute(node, "narrow") and not _attribute(node, "signed"):
            raise SystemExit(
                f"node '{node.name}' (Quant, unsigned, narrow: a pruned activation, range {{0}}): hls4ml "
                f"{hls4ml.__version__}'s QONNX reader supports narrow only on signed Quant nodes"
            )


def cut_graph(model: onnx.ModelProto, start: str, end: str) -> onnx.ModelProto:
    """The part of ``model`` that computes tensor ``end`` from tensor ``start`` (the new input) and
    the initializers: what comes before ``start`` and after ``end`` is left out."""
    import onnx

    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    needed: set[int] = set()
    pending = [end]
    while pending:
        tensor = pending.pop()
        i = producer.get(tensor)
        if tensor == start or i is None or i in needed:
            continue
        needed.add(i)
        pending.extend(graph.node[i].input)
    nodes = [node for i, node in enumerate(graph.node) if i in needed]
    read = {name for node in nodes for name in node.input}
    known = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
    missing = read - {start} - {t.name for t in graph.initializer} - {o for n in nodes for o in n.output}
    if missing:
        raise SystemExit(f"the graph from '{start}' to '{end}' also reads {sorted(missing)}: cannot cut it")
    cut = onnx.helper.make_graph(
        nodes,
        graph.name,
        [known[start]],
        [known[end]],
        [t for t in graph.initializer if t.name in read],
        value_info=[v for v in graph.value_info if v.name in read and v.name not in (start, end)],
    )
    cut.doc_string = graph.doc_string
    out: onnx.ModelProto = onnx.helper.make_model(
        cut, opset_imports=model.opset_import, producer_name=model.producer_name
    )
    out.ir_version = model.ir_version
    return out


def _shape(model: onnx.ModelProto, tensor: str) -> tuple[int, ...]:
    """The shape the graph records for ``tensor``."""
    graph = model.graph
    info = next(v for v in (*graph.input, *graph.value_info, *graph.output) if v.name == tensor)
    return tuple(d.dim_value for d in info.type.tensor_type.shape.dim)


def _note(node: Any) -> dict[str, Any]:
    """What ``_set_note`` keeps in a node's doc string."""
    text: str = node.doc_string
    note: dict[str, Any] = json.loads(text.removeprefix(NOTE)) if text.startswith(NOTE) else {}
    return note


def _set_note(node: Any, **items: Any) -> None:
    node.doc_string = NOTE + json.dumps({**_note(node), **items})


def _label(node: Any) -> str:
    """A node for messages: its name in the export (qonnx renames nodes) and its operation."""
    return f"'{_note(node).get('name', node.name)}' ({node.op_type})"


def _set_ints(node: Any, name: str, values: list[int]) -> None:
    attribute = next(a for a in node.attribute if a.name == name)
    del attribute.ints[:]
    attribute.ints.extend(values)


def set_aside_uneven_pads(model: onnx.ModelProto) -> None:
    """Make every ``MaxPool`` acceptable to qonnx's channels-last conversion, noting its own pads.

    qonnx's channels-last MaxPool infers its output size from the begin pads alone and asserts that
    they equal the end pads ("Uneven padding not supported"), while TensorFlow's ``same`` pooling of
    an odd size pads at the end only (13 -> 7: pads 0 and 1). Such a node gets, for the conversion,
    the larger pad on both sides, which gives the same output size when the stride exceeds 1, and
    its own pads in its doc string; ``restore_pads`` puts them back for hls4ml, which reads all four.
    A node for which no even padding gives its size (stride 1) is refused in one line.
    """
    for node in model.graph.node:
        pads = list(_attribute(node, "pads") or []) if node.op_type == "MaxPool" else []
        rank = len(pads) // 2
        begins, ends = pads[:rank], pads[rank:]
        if begins == ends:
            continue
        even = [max(b, e) for b, e in zip(begins, ends, strict=True)]
        sizes = _shape(model, node.input[0])[2:]  # channels first, as the export writes it
        kernel, strides = _attribute(node, "kernel_shape"), _attribute(node, "strides")
        geometry = zip(sizes, kernel, strides, begins, ends, even, strict=True)
        if any((n + b + e - k) // s != (n + 2 * p - k) // s for n, k, s, b, e, p in geometry):
            raise SystemExit(
                f"node '{node.name}' (MaxPool, pads {pads}, strides {strides}): qonnx's channels-last "
                "MaxPool supports even padding only, and no even padding gives this output size"
            )
        _set_note(node, pads=pads)
        _set_ints(node, "pads", even + even)


def global_max_as_max_pool(model: onnx.ModelProto) -> None:
    """Write each ``GlobalMaxPool`` as the ``MaxPool`` whose window is its whole input (the same values).

    qonnx's channels-last conversion leaves a ``GlobalMaxPool`` channels first, behind a
    ``Transpose``, and hls4ml's ``GlobalPooling2D`` reads its input as channels last: measured, its
    results were wrong. A ``MaxPool`` qonnx converts to channels last, and hls4ml reads it right.
    """
    import onnx

    for node in model.graph.node:
        if node.op_type != "GlobalMaxPool":
            continue
        sizes = list(_shape(model, node.input[0])[2:])  # channels first, as the export writes it
        node.op_type = "MaxPool"
        node.attribute.extend(
            [
                onnx.helper.make_attribute("kernel_shape", sizes),
                onnx.helper.make_attribute("strides", sizes),
                onnx.helper.make_attribute("pads", [0] * (2 * len(sizes))),
            ]
        )


def _moves_data(model: onnx.ModelProto, transpose: Any) -> bool:
    """Whether a ``Transpose`` reorders the elements (not only axes of size 1)."""
    shape = _shape(model, transpose.input[0])
    moved = [axis for axis in _attribute(transpose, "perm") if shape[axis] != 1]
    return moved != sorted(moved)


def drop_layout_only_transposes(model: onnx.ModelProto) -> None:
    """Leave out every ``Transpose`` that moves only axes of size 1 (its consumers read its input).

    The channels-last conversion leaves one after a pooling to ``1 x 1`` (the zoo model's global max
    pool) when a Dropout (``Identity``) stands between its ``Flatten`` and ``MatMul``. hls4ml would fold
    it into the Dense weights (``RemoveTransposeBeforeFlatten``) and then fail on the Dense's bias
    ("'WeightVariable' object has no attribute 'data_unquantized'", in ``bn_fuse``).
    """
    outputs = {o.name for o in model.graph.output}
    for node in list(model.graph.node):
        if node.op_type != "Transpose" or _moves_data(model, node) or node.output[0] in outputs:
            continue
        for consumer in model.graph.node:
            for i, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[i] = node.input[0]
        model.graph.node.remove(node)


def refuse_channels_first(model: onnx.ModelProto) -> None:
    """Exit in one line when the converted graph still moves data with a ``Transpose``: what follows it
    is channels first, and hls4ml's ONNX layers read every tensor as channels last."""
    for node in model.graph.node:
        if node.op_type == "Transpose" and _moves_data(model, node):
            after = [n for n in model.graph.node if node.output[0] in n.input]
            names = ", ".join(_label(n) for n in after)
            raise SystemExit(
                f"node {names} stays channels first after qonnx's channels-last conversion (a Transpose "
                "before it); hls4ml's ONNX layers read their input as channels last"
            )


def restore_pads(model: onnx.ModelProto) -> None:
    """Put back the pads ``set_aside_uneven_pads`` noted (after qonnx's last shape inference)."""
    for node in model.graph.node:
        pads = _note(node).get("pads")
        if pads is not None:
            _set_ints(node, "pads", pads)


def _refuse_unless_channels_last(model: onnx.ModelProto, tensor: str, keras_shape: tuple[int, ...]) -> None:
    """Refuse a cut tensor that is not ``(1, *keras_shape)``: the hls4ml model's input and output are
    compared in Keras' (channels-last) order."""
    shape = _shape(model, tensor)
    if shape != (1, *keras_shape):
        raise SystemExit(
            f"tensor '{tensor}' has the shape {shape} in the QONNX graph, not the channels-last "
            f"{(1, *keras_shape)}: the hls4ml model cannot start or end there"
        )


def qonnx_for_hls4ml(model: onnx.ModelProto, netlist: Netlist) -> Any:
    """``model`` (the export of ``netlist``) as hls4ml's QONNX reader needs it (docs/qonnx.md), a qonnx
    ``ModelWrapper``: cut from the output of the leading Rescaling (hls4ml's input) to the logits (no
    Softmax), checked (``refuse_for_hls4ml``), global max pools as max pools, uneven MaxPool pads set
    aside, then ``cleanup_model``, ``ConvertToChannelsLastAndClean``, ``cleanup_model``, the pads put
    back, Transposes of axes of size 1 left out, and what is still channels first refused. Each
    step is exact: the graph computes the same values."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    first = input_node(netlist)
    scores = netlist.node(integer_ref.scores_node(netlist))
    for node in (first, scores):  # the export names each netlist node's tensor after it
        _refuse_unless_channels_last(model, node.name, node.output_shape)
    cut = cut_graph(model, first.name, scores.name)
    refuse_for_hls4ml(cut)
    for node in cut.graph.node:
        _set_note(node, name=node.name)
    global_max_as_max_pool(cut)
    set_aside_uneven_pads(cut)
    wrapper = cleanup_model(ModelWrapper(cut))
    converted = cleanup_model(wrapper.transform(ConvertToChannelsLastAndClean()))
    restore_pads(converted.model)
    drop_layout_only_transposes(converted.model)
    refuse_channels_first(converted.model)
    return converted


def batchnorm_precisions(model: Any, config: dict[str, Any], bits: int = REAL_BITS) -> None:
    """Type each BatchNormalization's scale and bias as the hls4ml export does: the finest ``bits``-bit
    ``ap_fixed`` that holds them (hls4ml computes ``gamma / sqrt(variance + epsilon)`` and
    ``beta - mean * scale`` from the node's inputs). Its result stays ``auto``: exact.

    The one place where hls4ml does not compute what the formats say: the model's BatchNorm is float,
    and the integer reference computes it in double precision. 32 bits keep every type of the zoo
    model within 64 bits; wider (the default precision ``fixed<64,32>`` tried first) made g++ run out
    of memory on it.
    """
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        gamma, beta, mean, variance = (
            np.asarray(model.get_initializer(name), dtype=np.float64) for name in node.input[1:5]
        )
        epsilon = _attribute(node, "epsilon")
        scale = gamma / np.sqrt(variance + (ONNX_BN_EPSILON if epsilon is None else epsilon))
        bias = beta - mean * scale
        precision = config["LayerName"][node.name].setdefault("Precision", {})
        precision["scale"] = ap_fixed(real_format(float(np.max(np.abs(scale))), bits))
        precision["bias"] = ap_fixed(real_format(float(np.max(np.abs(bias))), bits))


def qonnx_config(model: Any, input_type: str, default_precision: str, backend: str) -> dict[str, Any]:
    """hls4ml's per-name configuration of the cleaned QONNX ``model``: ``auto`` where hls4ml infers a
    type (the Quant nodes' types, exact accumulators), 32-bit BatchNorm scales and biases
    (``batchnorm_precisions``), ``default_precision`` for what is left, and the input typed
    ``input_type``."""
    import hls4ml

    config: dict[str, Any] = hls4ml.utils.config_from_onnx_model(
        model, granularity="name", backend=backend, default_precision=default_precision
    )
    config["LayerName"][model.graph.input[0].name]["Precision"]["result"] = input_type
    batchnorm_precisions(model, config)
    return config


def convert_qonnx(
    model: Any,
    input_type: str,
    project: Path,
    backend: str = "Vivado",
    default_precision: str = QONNX_DEFAULT_PRECISION,
) -> Any:
    """hls4ml's io_parallel model of the cleaned QONNX ``model``; a conversion error in one line."""
    import hls4ml

    try:
        config = qonnx_config(model, input_type, default_precision, backend)
        return hls4ml.converters.convert_from_onnx_model(
            model, output_dir=str(project), backend=backend, io_type="io_parallel", hls_config=config
        )
    except Exception as err:  # hls4ml raises many types; the refusal is one line
        raise SystemExit(
            f"hls4ml {hls4ml.__version__} could not convert the QONNX model: {type(err).__name__}: {err}"
        ) from err


def hls_input(netlist: Netlist, x: np.ndarray) -> np.ndarray:
    """The hls4ml model's input (the value of ``input_node``, float64): the integer reference's own,
    so that hls4ml's input type and ``quantize_at`` round the same numbers."""
    first = input_node(netlist).name
    batches = [
        integer_ref.run(netlist, x[i : i + BATCH], keep=[first])[first].real()
        for i in range(0, len(x), BATCH)
    ]
    return np.ascontiguousarray(np.concatenate(batches))


def _check_qonnx(args: argparse.Namespace, result: ResultDir, x: np.ndarray) -> Checked:
    """The QONNX path: model.onnx cleaned, converted with hls4ml, against the integer reference."""
    import onnx

    if args.io_type != "io_parallel":
        raise SystemExit("--qonnx converts with io_parallel only (docs/qonnx.md)")
    netlist = result.netlist
    input_format = export(netlist).input_format
    onnx_file = export_qonnx(result, args.out / "export_qonnx")
    model = qonnx_for_hls4ml(onnx.load(onnx_file), netlist)
    model.save(str(args.out / "model_hls4ml.onnx"))
    project = args.out / "hls4ml_prj"
    hls_model = convert_qonnx(model, ap_fixed(input_format), project, args.backend, args.default_precision)
    compile_seconds = build(hls_model, project, args.opt_level, args.prebuilt)
    y_hls, predict_seconds = predict(hls_model, hls_input(netlist, x))
    fmt = netlist.node(integer_ref.scores_node(netlist)).attrs["format"]
    ref_q = reference_scores(netlist, x, {input_node(netlist).name: input_format})
    report = {
        "path": "qonnx",
        "qonnx_file": str(onnx_file),
        "onnx": onnx.__version__,
        "qonnx": importlib.metadata.version("qonnx"),
        "backend": args.backend,
        "default_precision": args.default_precision,
        "input_type": ap_fixed(input_format),
        "logits_format": str(fmt),
        "hls4ml_vs_reference_input_quantized": compare(y_hls, ref_q, fmt.lsb),
        "compile_seconds": round(compile_seconds, 1),
        "csim_predict_seconds": round(predict_seconds, 1),
    }
    rows = [
        (
            "hls4ml_vs_reference_input_quantized",
            "hls4ml C-sim of the QONNX export vs integer reference (input quantized as hls4ml)",
        )
    ]
    return report, rows


# --- the command ----------------------------------------------------------------------------------


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("result_dir", type=Path)
    parser.add_argument(
        "--qonnx",
        action="store_true",
        help="convert the result's QONNX export (optsearch export --to qonnx) instead of the Keras model",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="the float model (default: formats.json's, or the result's folded_model.keras after --fold-bn)",
    )
    parser.add_argument("--data", default=None, help="data (default: the run's data spec)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument(
        "--io-type",
        default=None,
        choices=("io_stream", "io_parallel"),
        help="default: io_stream (Keras), io_parallel (--qonnx, the only one it converts)",
    )
    parser.add_argument("--backend", default="Vivado", choices=("Vivado", "Vitis"))
    parser.add_argument(
        "--default-precision",
        default=QONNX_DEFAULT_PRECISION,
        help="--qonnx: hls4ml's precision where neither a Quant node, nor its inference, nor the "
        f"BatchNorm typing sets one (the zero bias of a pruned bias; default {QONNX_DEFAULT_PRECISION})",
    )
    parser.add_argument("--out", type=Path, default=Path("hls4ml_check"))
    parser.add_argument(
        "--opt-level",
        default="O3",
        choices=("O0", "O1", "O2", "O3"),
        help="g++ optimisation of the C simulation (hls4ml's default O3 is slow to compile on big models)",
    )
    parser.add_argument(
        "--prebuilt",
        type=Path,
        default=None,
        help="an hls4ml project compiled before from the same configuration: load its library",
    )
    args = parser.parse_args()
    if args.io_type is None:
        args.io_type = "io_parallel" if args.qonnx else "io_stream"
    return args


def main() -> int:
    args = _parse_args()
    import hls4ml

    started = time.perf_counter()
    result = load_result(args.result_dir)
    x = _inputs(result, args.data, args.samples)
    check = _check_qonnx if args.qonnx else _check_keras
    details, rows = check(args, result, x)
    report = {
        "result_dir": str(args.result_dir),
        "hls4ml": hls4ml.__version__,
        "io_type": args.io_type,
        "gcc_opt_level": args.opt_level if args.prebuilt is None else "prebuilt",
        "prebuilt": None if args.prebuilt is None else str(args.prebuilt),
        "samples": len(x),
        **details,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    _write_report(report, rows, args.out)
    ok = report[rows[0][0]]["argmax_equal"] == len(x)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
