"""The TFLite peer (issue 22): a Keras model as TFLite full-integer PTQ, run and measured.

What a user would pick instead of optsearch: the converter's defaults (per-channel int8 weights,
``Optimize.DEFAULT``, a representative dataset, int8 input and output), or 16-bit activations
(``int16x8``) where the converter supports the model. Keras 3 models go through ``model.export()``
to a SavedModel and ``TFLiteConverter.from_saved_model`` (``from_concrete_functions`` converts, but
the file reads its weights from resource variables the interpreter cannot find).

Memory is counted as ``core.memory`` counts optsearch's: weights memory is the constant weight and
bias operands of the conv and fully-connected ops (int8 weights, int32 biases; int64 biases in
``int16x8``), and peak activation memory the largest set of non-constant tensors alive at once when
the ops run in the file's order, per sample, through ``core.memory.peak_activation_memory``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optsearch.core.errors import OptsearchError
from optsearch.core.memory import Buffer, Schedule, Step, peak_activation_memory
from optsearch.model.loading import load_model

__all__ = [
    "MODES",
    "WEIGHT_OPS",
    "ConversionError",
    "Mode",
    "TfliteMemory",
    "TfliteRun",
    "convert",
    "measure_memory",
    "predict",
    "run_tflite",
    "tensor_schedule",
]

Mode = Literal["float32", "int8", "int16x8"]
MODES: tuple[Mode, ...] = ("float32", "int8", "int16x8")

WEIGHT_OPS: tuple[str, ...] = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
"""Ops whose operands 1 and 2 are the weights and the bias (TFLite's operand order)."""

_ERROR_CHARS = 300


class ConversionError(OptsearchError, RuntimeError):
    """The model cannot run as TFLite in this mode (the converter refused it, or the interpreter has no
    kernel for one of its ops); the message is the error on one line."""


@dataclass(frozen=True)
class TfliteMemory:
    """Memory of one TFLite flatbuffer, per sample."""

    weights_bytes: int
    """Constant weight and bias operands of ``WEIGHT_OPS``."""
    other_constant_bytes: int
    """Every other constant (shapes, the scalars of a rescaling, ...)."""
    peak_activation_bytes: int
    peak_step: str
    """The op at which the peak occurs (``index:OP_NAME``)."""


@dataclass(frozen=True, eq=False)
class TfliteRun:
    """One converted model, its predicted classes on the given samples, and its memory."""

    mode: Mode
    predictions: np.ndarray
    memory: TfliteMemory
    flatbuffer_bytes: int
    convert_seconds: float
    run_seconds: float

    @property
    def weights_bytes(self) -> int:
        return self.memory.weights_bytes

    @property
    def peak_activation_bytes(self) -> int:
        return self.memory.peak_activation_bytes

    @property
    def seconds(self) -> float:
        """Conversion (calibration included) plus inference."""
        return self.convert_seconds + self.run_seconds


def convert(model: Any, representative: np.ndarray, mode: Mode) -> bytes:
    """The flatbuffer of ``model`` (a Keras model) in ``mode``, calibrated on ``representative``.

    ``representative`` are float32 samples as the model takes them (one calibration step each);
    ``float32`` ignores them. A converter error becomes a one-line ``ConversionError``.
    """
    import tensorflow as tf  # run/ may use TensorFlow; imported here because it is heavy

    if mode not in MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}; valid modes: {', '.join(MODES)}")
    samples = np.asarray(representative, dtype=np.float32)

    def dataset() -> Iterator[list[np.ndarray]]:
        for i in range(len(samples)):
            yield [samples[i : i + 1]]

    with tempfile.TemporaryDirectory(prefix="optsearch-tflite-") as folder:
        saved = str(Path(folder) / "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if mode != "float32":
            if len(samples) == 0:
                raise ValueError("full-integer conversion needs at least one representative sample")
            io_type = tf.int8 if mode == "int8" else tf.int16
            ops = (
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
                if mode == "int8"
                else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            )
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [ops]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
        try:
            flatbuffer: bytes = converter.convert()
        except Exception as exc:  # the converter raises many types; all mean "not convertible"
            raise ConversionError(f"TFLite {mode}: {_one_line(exc)}") from exc
    return flatbuffer


def _one_line(exc: BaseException) -> str:
    """The most telling line of a converter error (the first naming an error), shortened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    line = next((line for line in lines if "error" in line.lower()), lines[0])
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


def _interpreter(flatbuffer: bytes, delegates: bool = True) -> Any:
    import tensorflow as tf

    resolver = (
        tf.lite.experimental.OpResolverType.AUTO
        if delegates
        else tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice (LiteRT), on every call
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)


def predict(flatbuffer: bytes, samples: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted classes (argmax of the output) of the TFLite model on float32 ``samples``.

    Integer inputs are quantized with the input tensor's scale and zero point (round to nearest,
    saturate); the argmax of an integer output equals that of its dequantized values (scale > 0).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    interpreter = _interpreter(flatbuffer)
    (entry,) = interpreter.get_input_details()
    (exit_,) = interpreter.get_output_details()
    dtype = np.dtype(entry["dtype"])
    scale, zero_point = entry["quantization"]
    out: list[np.ndarray] = []
    size = -1
    for start in range(0, len(samples), batch_size):
        batch = np.asarray(samples[start : start + batch_size], dtype=np.float32)
        if len(batch) != size:
            size = len(batch)
            interpreter.resize_tensor_input(entry["index"], [size, *batch.shape[1:]])
            interpreter.allocate_tensors()
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            codes = np.clip(np.round(batch / scale) + zero_point, info.min, info.max)
            interpreter.set_tensor(entry["index"], codes.astype(dtype))
        else:
            interpreter.set_tensor(entry["index"], batch.astype(dtype))
        interpreter.invoke()
        out.append(np.argmax(interpreter.get_tensor(exit_["index"]), axis=-1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def tensor_schedule(
    ops: Sequence[Mapping[str, Any]], shapes: Mapping[int, Sequence[int]], input_index: int, output_index: int
) -> Schedule:
    """The ops as a ``core.memory.Schedule``: one buffer per non-constant tensor, one step per output.

    A constant is a tensor some op reads that no op writes and that is not the graph's input;
    ``shapes`` gives each tensor's shape at batch 1. Buffers are named by tensor index.
    """
    written = {int(t) for op in ops for t in op["outputs"]}
    buffers = [Buffer(str(input_index), int(np.prod(shapes[input_index])))]
    steps: list[Step] = []
    for op in ops:
        live_inputs = [int(t) for t in op["inputs"] if int(t) in written or int(t) == input_index]
        reads = tuple(dict.fromkeys(str(t) for t in live_inputs))
        for t in (int(t) for t in op["outputs"]):
            buffers.append(Buffer(str(t), int(np.prod(shapes[t]))))
            steps.append(Step(f"{op['index']}:{op['op_name']}", reads, str(t)))
    return Schedule(str(input_index), str(output_index), tuple(buffers), tuple(steps))


def measure_memory(flatbuffer: bytes) -> TfliteMemory:
    """Weights and peak activation memory of the flatbuffer (module docstring), at batch 1."""
    interpreter = _interpreter(flatbuffer, delegates=False)  # delegates would hide the ops
    interpreter.allocate_tensors()
    details = {int(d["index"]): d for d in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    (entry,) = interpreter.get_input_details()
    (exit_,) = interpreter.get_output_details()
    input_index = int(entry["index"])

    def size(t: int) -> int:
        return int(np.prod(details[t]["shape"])) * int(np.dtype(details[t]["dtype"]).itemsize)

    written = {int(t) for op in ops for t in op["outputs"]}
    constants = {int(t) for op in ops for t in op["inputs"] if t >= 0} - written - {input_index}
    weights = {
        int(op["inputs"][k])
        for op in ops
        if op["op_name"] in WEIGHT_OPS
        for k in (1, 2)
        if len(op["inputs"]) > k and int(op["inputs"][k]) in constants
    }
    shapes = {t: [int(s) for s in d["shape"]] for t, d in details.items()}
    schedule = tensor_schedule(ops, shapes, input_index, int(exit_["index"]))
    bits = {b.name: 8 * np.dtype(details[int(b.name)]["dtype"]).itemsize for b in schedule.buffers}
    peak = peak_activation_memory(schedule, bits, "packed")
    return TfliteMemory(
        weights_bytes=sum(size(t) for t in weights),
        other_constant_bytes=sum(size(t) for t in constants - weights),
        peak_activation_bytes=peak.bytes,
        peak_step=peak.step,
    )


def run_tflite(model: Any, representative: np.ndarray, samples: np.ndarray, mode: Mode) -> TfliteRun:
    """Convert ``model`` (a Keras model or a model file) in ``mode``, calibrated on ``representative``;
    predict ``samples``; measure its memory."""
    if isinstance(model, (str, Path)):
        model = load_model(model)
    started = time.perf_counter()
    flatbuffer = convert(model, representative, mode)
    converted = time.perf_counter()
    try:
        predictions = predict(flatbuffer, samples)
    except RuntimeError as exc:  # converted, but the interpreter has no kernel for an op in this mode
        raise ConversionError(f"TFLite {mode} converts but does not run: {_one_line(exc)}") from exc
    finished = time.perf_counter()
    return TfliteRun(
        mode=mode,
        predictions=predictions,
        memory=measure_memory(flatbuffer),
        flatbuffer_bytes=len(flatbuffer),
        convert_seconds=converted - started,
        run_seconds=finished - converted,
    )
