"""Compare hls4ml's C simulation of an exported configuration with optsearch's references.

Needs the optional extra (``pip install -e ".[hls4ml]"``: hls4ml 1.3 with its Keras 3 extra) and
g++. It exports the hls4ml configuration of RESULT_DIR, converts the float model with it (through
the exported ``hls4ml_config.py``: preprocessing left out, weights quantized), compiles hls4ml's C
simulation (softmax skipped, so it outputs the logits), and compares its logits on the first
--samples images with:

- the integer reference with the input quantized to the exported input type, as hls4ml does
  (expected: identical logits);
- the Keras quantized model (quantized.keras), whose input is not quantized (expected: identical
  argmax; logits within a few LSBs where the input rounding moves an activation).

    python scripts/check_hls4ml.py /tmp/r10 --samples 1000 --out /tmp/hls4ml_check

Writes OUT/check_hls4ml.json and prints a Markdown table (docs/deployment.md quotes it).

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
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from optsearch.data import Preprocess, fit_channel_axis, load_data
from optsearch.deploy import integer_ref
from optsearch.deploy.export_hls4ml import ap_fixed, export, write_files
from optsearch.model.loading import load_model
from optsearch.model.netlist import predict_batches, probe
from optsearch.results.folder import FOLDED_MODEL_FILE
from optsearch.run.deployed import load_result


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


def _compare(a: np.ndarray, b: np.ndarray, lsb: float) -> dict[str, Any]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "samples": len(a),
        "argmax_equal": int(np.sum(np.argmax(a, 1) == np.argmax(b, 1))),
        "logits_identical": int(np.sum(np.all(diff == 0, axis=1))),
        "max_logit_diff_lsb": float(diff.max() / lsb),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("result_dir", type=Path)
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="the float model (default: formats.json's, or the result's folded_model.keras after --fold-bn)",
    )
    parser.add_argument("--data", default=None, help="data (default: the run's data spec)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--io-type", default="io_stream", choices=("io_stream", "io_parallel"))
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

    import hls4ml

    started = time.perf_counter()
    result = load_result(args.result_dir)
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

    data_spec = args.data or result.recorded.data["spec"]
    dataset = load_data(data_spec)
    info = result.recorded.data
    preprocess = fit_channel_axis(
        Preprocess(scale=info.get("scale"), resize=tuple(info["resize"]) if info.get("resize") else None),
        tuple(dataset.x.shape[1:]),
        tuple(result.model.inputs[0].shape[1:]),
    )
    x = preprocess(dataset.x[: args.samples])
    front = keras.Model(float_model.inputs[0], float_model.get_layer(helper.INPUT_LAYER).output)
    x_hls = np.asarray(front.predict(x, verbose=0), dtype=np.float32)

    t0 = time.perf_counter()
    hls_model = hls4ml.converters.convert_from_keras_model(
        prepared,
        hls_config=config,
        output_dir=str(args.out / "hls4ml_prj"),
        backend="Vivado",
        io_type=args.io_type,
    )
    hls_model.write()
    project = args.out / "hls4ml_prj"
    if args.prebuilt is not None:
        library = _prebuilt_library(project, args.prebuilt, hls_model.config.get_config_value("Stamp"))
        hls_model._top_function_lib = ctypes.cdll.LoadLibrary(str(library))
    else:
        build = project / "build_lib.sh"
        script = build.read_text()
        if '"-O3 -fPIC"' not in script:
            raise SystemExit(f"{build}: no '-O3 -fPIC' to replace; this hls4ml writes another build script")
        build.write_text(script.replace('"-O3 -fPIC"', f'"-{args.opt_level} -fPIC"'))
        hls_model._compile()  # compile() would write the project again, and the build script with it
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    y_hls = np.asarray(hls_model.predict(np.ascontiguousarray(x_hls)), dtype=np.float64).reshape(len(x), -1)
    predict_seconds = time.perf_counter() - t0

    fmt = netlist.node(scores).attrs["format"]
    lsb = fmt.lsb
    quantize_at = {helper.INPUT_LAYER: exported.input_format}
    ref_q = np.concatenate(
        [
            integer_ref.run(netlist, x[i : i + 250], quantize_at=quantize_at)[scores].real()
            for i in range(0, len(x), 250)
        ]
    )
    ref = np.concatenate(
        [integer_ref.run(netlist, x[i : i + 250])[scores].real() for i in range(0, len(x), 250)]
    )
    keras_logits = np.concatenate(
        [outs[0] for _, outs in predict_batches(probe(result.model, netlist, [scores]), x, 250)]
    )
    report = {
        "result_dir": str(args.result_dir),
        "model": str(model_path),
        "hls4ml": hls4ml.__version__,
        "keras": keras.__version__,
        "io_type": args.io_type,
        "gcc_opt_level": args.opt_level if args.prebuilt is None else "prebuilt",
        "prebuilt": None if args.prebuilt is None else str(args.prebuilt),
        "samples": len(x),
        "input_type": ap_fixed(exported.input_format),
        "logits_format": str(fmt),
        "hls4ml_vs_reference_input_quantized": _compare(y_hls, ref_q, lsb),
        "hls4ml_vs_keras_quantized": _compare(y_hls, keras_logits, lsb),
        "reference_vs_keras_quantized": _compare(ref, keras_logits, lsb),
        "compile_seconds": round(compile_seconds, 1),
        "csim_predict_seconds": round(predict_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "check_hls4ml.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print("| comparison | samples | same argmax | identical logits | max logit difference |")
    print("|---|---:|---:|---:|---:|")
    for key, label in (
        (
            "hls4ml_vs_reference_input_quantized",
            "hls4ml C-sim vs integer reference (input quantized as hls4ml)",
        ),
        ("hls4ml_vs_keras_quantized", "hls4ml C-sim vs Keras quantized model"),
        ("reference_vs_keras_quantized", "integer reference vs Keras quantized model"),
    ):
        r = report[key]
        print(
            f"| {label} | {r['samples']} | {r['argmax_equal']} | {r['logits_identical']} | "
            f"{r['max_logit_diff_lsb']:g} LSB |"
        )
    ok = report["hls4ml_vs_reference_input_quantized"]["argmax_equal"] == len(x)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
