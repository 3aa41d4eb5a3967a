"""C export of a result: a header with the integer weights and formats, and a reference inference.

Pure. ``header`` writes every weighted layer's integer weight and bias codes (in the smallest C
integer type that holds BW bits, Keras' order), its ``F`` (the shift: value = code * 2^-F) and the
activation formats, plus BatchNorm's float scale and shift. ``reference`` writes a C99 inference of
a sequential model on top of ``optsearch/c/optsearch_ref.h``: the same arithmetic as the numpy
integer reference (``integer_ref``), with 64-bit integer accumulators where the input is on a grid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from optsearch.core.fixedpoint import Format
from optsearch.core.netlist import (
    OPS,
    DeployError,
    FixedArray,
    Grid,
    Netlist,
    Node,
    accumulator,
    grids,
    smallest_c_int,
)
from optsearch.deploy.integer_ref import scores_node

#: Operations the C reference implements (a sequential chain of them): the netlist's, less these.
C_OPS = tuple(op for op in OPS if op not in ("resize", "depthwise", "separable", "concat", "add"))
#: Integer accumulators must fit int64 with a bit to spare for the bias.
MAX_ACCUMULATOR_BITS = 62
COMPILE_COMMAND = "cc -std=c99 -O2 -ffp-contract=off -o {prefix}_ref {prefix}_ref.c -lm"


@dataclass
class CExport:
    """The C files of one model: name -> text."""

    prefix: str
    files: dict[str, str]
    notes: list[str]

    def write(self, out_dir: Path) -> list[str]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (out / name).write_text(text)
        return list(self.files)


def c_identifier(name: str) -> str:
    """A C identifier for a layer name (anything else becomes ``_``)."""
    ident = re.sub(r"\W", "_", name)
    return ident if ident and not ident[0].isdigit() else f"l_{ident}"


def _array(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    flat = [str(int(v)) for v in np.asarray(values).ravel()]
    rows = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(rows)
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    {body}\n}};\n"


def _doubles(name: str, values: np.ndarray) -> str:
    items = [repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]
    body = ",\n    ".join(", ".join(items[i : i + 4]) for i in range(0, len(items), 4))
    return f"static const double {name}[{len(items)}] = {{\n    {body}\n}};\n"


def _format_defines(ident: str, kind: str, fmt: Format) -> str:
    macro = f"{ident.upper()}_{kind}"
    note = (
        "pruned: all zeros"
        if fmt.pruned
        else f"value = code * 2^-{fmt.f}"
        if fmt.f >= 0
        else (f"value = code * 2^{-fmt.f}")
    )
    return f"#define {macro}_BW {fmt.bw}\n#define {macro}_F {fmt.f}  /* {note} */\n"


def _codes_ctype(fixed: FixedArray) -> str:
    return smallest_c_int(fixed.fmt.bw)


def _kernel(node: Node) -> FixedArray:
    return node.weights[0]


def header(netlist: Netlist, prefix: str, source: str) -> str:
    """The C header: integer weights and biases, their F, activation formats, BatchNorm parameters."""
    guard = f"OPTSEARCH_{prefix.upper()}_MODEL_H"
    parts = [
        f"/*\n * {netlist.name}: quantized weights and formats, exported by optsearch from {source}.\n"
        " *\n"
        " * A format (BW, F) means value = code * 2^-F with |code| <= 2^(BW-1) - 1 (F is the shift);\n"
        " * BW = 1 is pruned (all zeros). Kernels are in Keras' order (height, width, in, out; Dense:\n"
        " * in, out), stored in the smallest C integer type that holds BW bits. Activation formats\n"
        " * (*_A_BW, *_A_F) are what the layer's output is quantized to: round half to even, clip to\n"
        " * +-(2^(BW-1) - 1). BatchNorm layers stay in float: value * scale[c] + shift[c].\n */\n",
        f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n",
    ]
    for node in netlist.nodes:
        ident = c_identifier(node.name)
        if node.op in ("conv", "depthwise", "separable", "dense"):
            shapes = " and ".join(str(tuple(w.codes.shape)) for w in node.weights)
            parts.append(f"/* {node.name}: {node.source} {shapes}, activation {node.activation} */\n")
            parts.append(_format_defines(ident, "W", node.weights[0].fmt))
            for i, w in enumerate(node.weights):
                suffix = "_w" if len(node.weights) == 1 else ("_dw" if i == 0 else "_pw")
                parts.append(_array(_codes_ctype(w), f"{ident}{suffix}", w.codes))
            if node.bias is not None:
                parts.append(_format_defines(ident, "B", node.bias.fmt))
                parts.append(_array(_codes_ctype(node.bias), f"{ident}_b", node.bias.codes))
            parts.append("\n")
        elif node.op == "quantize":
            owner = c_identifier(str(node.attrs["owner"]))
            parts.append(f"/* {node.name}: activations of {node.attrs['owner']} */\n")
            parts.append(_format_defines(owner, "A", node.attrs["format"]) + "\n")
        elif node.op == "batchnorm":
            a = node.arrays
            scale = a["gamma"] / np.sqrt(a["variance"] + float(node.attrs["epsilon"]))
            shift = a["beta"] - a["mean"] * scale
            parts.append(f"/* {node.name}: BatchNormalization in float, per channel */\n")
            parts.append(_doubles(f"{ident}_scale", scale))
            parts.append(_doubles(f"{ident}_shift", shift) + "\n")
        elif node.op == "rescale":
            parts.append(
                f"/* {node.name}: Rescaling, in float32 */\n"
                f"#define {ident.upper()}_SCALE {float(np.float32(node.attrs['scale'])).hex()}f\n"
                f"#define {ident.upper()}_OFFSET {float(np.float32(node.attrs['offset'])).hex()}f\n\n"
            )
    parts.append(f"#endif /* {guard} */\n")
    return "".join(parts)


def _same_padding(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "valid":
        return 0
    out = -(-size // stride)
    return max((out - 1) * stride + kernel - size, 0) // 2


def _hw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 1:
        return 1, 1, shape[0]
    raise DeployError(f"the C reference handles images (H, W, C) and vectors, not shape {shape}")


def reference(netlist: Netlist, prefix: str, model_header: str) -> str:
    """The C reference inference of a sequential netlist (with a command-line ``main``)."""
    if not netlist.is_sequential():
        raise DeployError(
            f"model '{netlist.name}' is not sequential (it branches or merges); the C reference handles "
            "sequential models only (the header is still written)"
        )
    for node in netlist.nodes:
        if node.op not in C_OPS:
            raise DeployError(
                f"layer '{node.name}' ({node.source}): the C reference has no implementation of it "
                f"(it handles {', '.join(C_OPS)})"
            )
        if node.op == "conv" and (
            node.attrs.get("rank", 2) != 2
            or node.attrs.get("groups", 1) != 1
            or node.attrs["dilation"] != (1, 1)
        ):
            raise DeployError(
                f"layer '{node.name}' ({node.source}): the C reference handles 2-D convolutions only"
            )
    static = grids(netlist)
    scores = scores_node(netlist)
    shapes = [_hw(n.output_shape) for n in netlist.nodes]
    biggest = max(h * w * c for h, w, c in shapes)
    ih, iw, ic = _hw(netlist.input.output_shape)
    classes = int(np.prod(netlist.node(scores).output_shape))
    decl: list[str] = []
    setup: list[str] = []
    body: list[str] = []
    for node, (oh, ow, oc) in zip(netlist.nodes, shapes, strict=True):
        ident = c_identifier(node.name)
        src = netlist.node(node.inputs[0]) if node.inputs else None
        if node.op == "input":
            body.append("    os_input(&t[cur], x);\n")
            continue
        call = _call(node, ident, static, src, (oh, ow, oc), decl, setup)
        if call:
            body.append(f"    /* {node.name} ({node.source}) */\n    {call} cur = 1 - cur;\n")
        if node.name == scores:
            break
    lines = [
        f"/* Reference inference of {netlist.name} (exported by optsearch): see optsearch_ref.h. */\n",
        "#include <stdint.h>\n#include <stdlib.h>\n\n",
        '#include "optsearch_ref.h"\n',
        f'#include "{model_header}"\n\n',
        f"#define OS_BUFFER {biggest}\n",
        "static int64_t os_code[2][OS_BUFFER];\nstatic double os_real[2][OS_BUFFER];\n",
        *decl,
        "\n",
        f"/* One sample (float32, {ih}x{iw}x{ic}) -> the {classes} scores; returns the argmax. */\n",
        f"int {prefix}_infer(const float *x, double *scores) {{\n",
        "    static int ready = 0;\n",
        "    if (!ready) {\n",
        *setup,
        "        ready = 1;\n    }\n",
        f"    os_tensor t[2] = {{{{{ih}, {iw}, {ic}, 0, 0, os_code[0], os_real[0]}}, "
        "{0, 0, 0, 0, 0, os_code[1], os_real[1]}};\n",
        "    int cur = 0;\n",
        *body,
        "    int best = 0;\n",
        f"    for (int k = 0; k < {classes}; k++) {{\n",
        "        scores[k] = os_value(&t[cur], (size_t)k);\n",
        "        if (scores[k] > scores[best]) best = k;\n",
        "    }\n    return best;\n}\n\n",
    ]
    main = resources.files("optsearch.deploy").joinpath("c/reference_main.c").read_text()
    main = main.replace("@PREFIX@", prefix).replace("@INPUT_SIZE@", str(ih * iw * ic))
    return "".join(lines) + main.replace("@CLASSES@", str(classes))


def _call(
    node: Node,
    ident: str,
    static: dict[str, Grid | None],
    src: Node | None,
    out_shape: tuple[int, int, int],
    decl: list[str],
    setup: list[str],
) -> str:
    op = node.op
    io = "&t[cur], &t[1 - cur]"
    oh, ow, _ = out_shape
    if op in ("identity", "softmax"):
        return ""
    if op == "rescale":
        return f"os_rescale({io}, {ident.upper()}_SCALE, {ident.upper()}_OFFSET);"
    if op == "quantize":
        fmt: Format = node.attrs["format"]
        return f"os_quantize({io}, {fmt.bw}, {fmt.f});"
    if op == "relu":
        relu_grid = static[node.name]
        return f"os_relu({io}, {_relu_max(node)}, {relu_grid.f if relu_grid is not None else 0});"
    if op == "flatten":
        return f"os_flatten({io});"
    if op == "reshape":
        return f"os_reshape({io}, {oh}, {ow}, {out_shape[2]});"
    if op == "pad":
        (top, bottom), (left, right) = ((0, 0), *node.pads) if len(node.pads) == 1 else node.pads
        return f"os_pad({io}, {top}, {bottom}, {left}, {right});"
    if op == "batchnorm":
        return f"os_batchnorm({io}, {ident}_scale, {ident}_shift);"
    if op in ("global_max", "global_avg"):
        return f"os_global_pool({io}, {1 if op == 'global_avg' else 0});"
    assert src is not None
    ih, iw, _ = _hw(src.output_shape)
    if op in ("maxpool", "avgpool"):
        (ph, pw), (sh, sw) = node.attrs["pool_size"], node.attrs["strides"]
        pad = str(node.attrs["padding"])
        decl.append(
            f"static const os_pool {ident}_pool = {{{ph}, {pw}, {sh}, {sw}, "
            f"{_same_padding(ih, ph, sh, pad)}, {_same_padding(iw, pw, sw, pad)}, {oh}, {ow}}};\n"
        )
        return f"os_pool2d({io}, &{ident}_pool, {1 if op == 'avgpool' else 0});"
    # conv or dense
    kernel = node.weights[0]
    shape = kernel.codes.shape
    if op == "dense":
        kh = kw = 1
        cin, cout = int(shape[0]), int(shape[1])
        sh = sw = 1
        pt = pl = 0
    else:
        kh, kw, cin, cout = (int(d) for d in shape)
        sh, sw = node.attrs["strides"]
        pad = str(node.attrs["padding"])
        pt, pl = _same_padding(ih, kh, sh, pad), _same_padding(iw, kw, sw, pad)
    grid = static[node.name]
    in_grid = static[node.inputs[0]]
    if grid is not None and in_grid is not None:  # the sums themselves, shifted to the output's F
        acc = accumulator(node, in_grid)
        grid = Grid(grid.f, max(grid.max_code, acc.max_code << (grid.f - acc.f)))
    if grid is not None and grid.bits > MAX_ACCUMULATOR_BITS:
        raise DeployError(
            f"layer '{node.name}' ({node.source}): its exact accumulator needs {grid.bits} bits, more than "
            f"the C reference's int64 ({MAX_ACCUMULATOR_BITS} bits with headroom)"
        )
    size = int(np.prod(shape))
    widen = {"int8_t": "os_widen8", "int16_t": "os_widen16", "int32_t": "os_widen32"}
    wtype = _codes_ctype(kernel)
    if wtype not in widen:
        raise DeployError(f"layer '{node.name}': weights of {kernel.fmt.bw} bits do not fit the C reference")
    decl.append(f"static int32_t {ident}_w32[{size}];\n")
    setup.append(f"        {widen[wtype]}({ident}_w, {ident}_w32, {size});\n")
    bias = node.bias if node.bias is not None and not node.bias.fmt.pruned else None
    if bias is not None:
        decl.append(f"static int32_t {ident}_b32[{cout}];\n")
        setup.append(f"        {widen[_codes_ctype(bias)]}({ident}_b, {ident}_b32, {cout});\n")
    b_ref, bf = (f"{ident}_b32", bias.fmt.f) if bias is not None else ("NULL", 0)
    acc_f = grid.f if grid is not None else 0
    decl.append(
        f"static const os_conv {ident}_layer = {{{kh}, {kw}, {cin}, {cout}, {sh}, {sw}, {pt}, {pl}, "
        f"{oh}, {ow}, {ident}_w32, {kernel.fmt.f}, {b_ref}, {bf}, {int(node.activation == 'relu')}, "
        f"{acc_f}, {_relu_max(node)}}};\n"
    )
    return f"os_conv2d({io}, &{ident}_layer);"


def _relu_max(node: Node) -> str:
    """ReLU6's upper clip as an exact C double literal (``-1.0``: none)."""
    m = node.max_value if node.op == "relu" or node.activation == "relu" else None
    return "-1.0" if m is None else float(m).hex()


def export(netlist: Netlist, source: str) -> CExport:
    """The header ``PREFIX_model.h``, ``optsearch_ref.h`` and (sequential models) ``PREFIX_ref.c``."""
    prefix = c_identifier(netlist.name)
    model_header = f"{prefix}_model.h"
    files = {model_header: header(netlist, prefix, source)}
    notes: list[str] = []
    try:
        files[f"{prefix}_ref.c"] = reference(netlist, prefix, model_header)
        files["optsearch_ref.h"] = (
            resources.files("optsearch.deploy").joinpath("c/optsearch_ref.h").read_text()
        )
        notes.append(f"compile the reference: {COMPILE_COMMAND.format(prefix=prefix)}")
    except DeployError as err:
        notes.append(f"no C reference inference: {err}")
    real = [n.name for n in netlist.weighted() if grids(netlist)[n.inputs[0]] is None]
    if real:
        notes.append(
            f"{len(real)} of {sum(1 for _ in netlist.weighted())} weighted layers take a real-valued input "
            f"(after a float BatchNorm or Rescaling): they multiply integer weight codes by doubles "
            f"({', '.join(real[:4])}{', ...' if len(real) > 4 else ''})"
        )
    return CExport(prefix, files, notes)
