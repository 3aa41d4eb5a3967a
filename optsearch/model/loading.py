"""Load a trained model (``.keras`` or legacy HDF5) for the tool, with one-line errors.

Keras 3 cannot read most HDF5 files Keras 2 wrote (Keras 2.2.4 to tf-keras 2.21) as they are:
their config is rewritten for Keras 3 (``normalise_keras2_config``) in a temporary copy first
(the user's file is never modified), or refused in one line naming the layer where Keras 3 has
no equivalent. Lambda layers store Python in the file, so they are refused unless the caller
opts in with ``unsafe=True``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard

import h5py
import keras

from optsearch.core.errors import ModelError
from optsearch.model.flatten import flatten_nested

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5")
_UNKNOWN_OBJECT = re.compile(r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '?([\w.>]+)")


def load_model(path: str | Path, *, unsafe: bool = False) -> keras.Model:
    """Load the model at ``path`` uncompiled, models used as layers inlined (``model.flatten``);
    ``unsafe`` allows Python code (Lambda layers) in it."""
    path = Path(path)
    model = _load(path, unsafe)
    try:
        return flatten_nested(model)
    except ModelError as err:
        raise ModelError(f"{path}: {err}") from err


def _load(path: Path, unsafe: bool) -> keras.Model:
    _check_regular_file(path)
    head = _read_head(path)
    if head.startswith(HDF5_SIGNATURE):
        return _load_hdf5(path, unsafe)
    if zipfile.is_zipfile(path):
        return _load_keras_zip(path, unsafe)
    raise ModelError(
        f"{path} is not a Keras model (neither a .keras archive nor an HDF5 file); "
        'save the full model with model.save("model.keras")'
    )


def _check_regular_file(path: Path) -> None:
    """Refuse a missing path, a directory (e.g. a TF SavedModel) or a non-regular file."""
    if path.is_dir():
        raise ModelError(
            f"{path} is a directory (e.g. a TensorFlow SavedModel), which is not supported; "
            'load it in Python and save it with model.save("model.keras")'
        )
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"{path} is not a regular file; pass a .keras or .h5 model file")


def _read_head(path: Path) -> bytes:
    """The first bytes of the file, enough to recognise the HDF5 signature."""
    try:
        with path.open("rb") as f:
            return f.read(len(HDF5_SIGNATURE))
    except OSError as e:
        raise ModelError(f"could not read model file {path}: {e.strerror or e}") from e


def _load_keras_zip(path: Path, unsafe: bool) -> keras.Model:
    """Load a Keras 3 ``.keras`` archive, after checking it is one and scanning it for Lambda layers."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelError(
            f"{path} is a zip archive but not a Keras model (no valid config.json); "
            'save the full model with model.save("model.keras")'
        ) from e
    _refuse_lambda(path, config, unsafe)
    if path.suffix == ".keras":
        return _keras_load(path, path, unsafe)
    with tempfile.TemporaryDirectory(prefix="optsearch-") as tmp:
        copy = Path(tmp) / "model.keras"
        shutil.copyfile(path, copy)
        return _keras_load(copy, path, unsafe)


def _load_hdf5(path: Path, unsafe: bool) -> keras.Model:
    """Load a legacy HDF5 model, its Keras 2 config rewritten for Keras 3 in a temporary copy."""
    config = _read_hdf5_config(path)
    _refuse_lambda(path, config, unsafe)
    try:
        normalised = config if _written_by_keras3(path) else normalise_keras2_config(config)
    except Keras2ConfigError as e:
        raise ModelError(f"{path}: {e}") from e
    if normalised == config and path.suffix in HDF5_SUFFIXES:
        return _keras_load(path, path, unsafe)
    with tempfile.TemporaryDirectory(prefix="optsearch-") as tmp:
        copy = Path(tmp) / "model.h5"
        shutil.copyfile(path, copy)
        if normalised != config:
            with h5py.File(copy, "r+") as f:
                f.attrs["model_config"] = json.dumps(normalised).encode("utf-8")
        return _keras_load(copy, path, unsafe)


def _read_hdf5_config(path: Path) -> dict[str, Any]:
    """The JSON ``model_config`` root attribute; a file without one holds weights only."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise ModelError(f"could not open HDF5 model file {path}: {_first_line(e)}") from e
    if raw is None:
        raise ModelError(
            f"{path} is an HDF5 file without a model config (weights only?); optsearch needs a full "
            'model, not weights only: save it with model.save("model.keras")'
        )
    try:
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except ValueError as e:
        raise ModelError(f"{path} has an unreadable model_config attribute (not JSON): {e}") from e
    if not isinstance(config, dict):
        raise ModelError(f"{path} has a model_config that is not a Keras model config")
    return config


# --- Keras 2 -> Keras 3 -------------------------------------------------------------------------
#
# Each difference between the configs Keras 2 wrote (2.2.4 to tf-keras 2.21) and what Keras 3
# reads is one entry of a table: a rewrite of one layer class (_CLASS_REWRITES), of every layer
# (_COMMON_REWRITES), a class Keras 3 does not have (_REMOVED_CLASSES, a one-line refusal), or of
# a model's structure (_normalise_model). A rewrite keeps what the Keras 2 layer computed;
# settings that only matter for training and that Keras 3 cannot represent are dropped.

Entry = dict[str, Any]
"""One serialised layer: ``{"class_name": ..., "config": {...}}`` (plus ``name`` and
``inbound_nodes`` inside a functional model)."""
Rewrite = Callable[[Entry], None]
"""Rewrites one layer entry in place; it only ever sees the normaliser's own copy."""

MODEL_CLASSES = ("Sequential", "Functional", "Model")
_WRAPPED_LAYER_KEYS = ("layer", "forward_layer", "backward_layer")


class Keras2ConfigError(ValueError):
    """A Keras 2 layer that Keras 3 cannot build with the same computation (one line, names the layer)."""


@keras.saving.register_keras_serializable(package="optsearch", name="keras2_hard_sigmoid")
def keras2_hard_sigmoid(x: Any) -> Any:
    """Keras 2's ``hard_sigmoid``, ``clip(0.2 x + 0.5, 0, 1)``; Keras 3's is ``relu6(x + 3) / 6``."""
    return keras.ops.clip(x * 0.2 + 0.5, 0.0, 1.0)


#: Activation names whose Keras 3 function differs from Keras 2's: the name -> its Keras 2 function.
_KERAS2_ACTIVATIONS: dict[str, Any] = {
    "hard_sigmoid": keras.activations.serialize(keras2_hard_sigmoid),
}


def normalise_keras2_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of an HDF5 ``model_config`` written by Keras 2, rewritten so that Keras 3 loads it.

    ``config`` itself is not changed; an already loadable config comes back equal to it.
    Raises Keras2ConfigError when a layer has no Keras 3 equivalent.
    """
    return _normalise_layer(json.loads(json.dumps(config)))


def _normalise_layer(entry: Entry) -> Entry:
    """Apply the table's rewrites to one layer (a whole model for a nested model), in place."""
    class_name = entry.get("class_name")
    config = entry.get("config")
    if class_name in MODEL_CLASSES:
        return _normalise_model(entry)
    if not isinstance(class_name, str) or not isinstance(config, dict):
        return entry
    if class_name in _REMOVED_CLASSES and class_name not in _CLASS_REWRITES:
        raise Keras2ConfigError(
            f"layer '{_layer_name(entry)}' ({_class_label(entry)}) was written by Keras 2 and has no "
            f"Keras 3 equivalent: {_REMOVED_CLASSES[class_name]}"
        )
    for rewrite in (*_CLASS_REWRITES.get(class_name, ()), *_COMMON_REWRITES):
        rewrite(entry)
    for key in _WRAPPED_LAYER_KEYS:
        if isinstance(config.get(key), dict):
            config[key] = _normalise_layer(config[key])
    return entry


def _normalise_model(entry: Entry) -> Entry:
    """A Sequential or functional model at any depth: its structure, then each of its layers."""
    if entry["class_name"] == "Sequential":
        entry["config"] = _sequential_config(entry.get("config"))
    config = entry.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        return entry
    config["layers"] = [_normalise_layer(layer) for layer in config["layers"]]
    if entry["class_name"] != "Sequential":
        _functional_structure(config)
    return entry


def _sequential_config(inner: Any) -> Any:
    """Keras 2.2 wrote a Sequential's config as a bare list of layers, the input shape on the first.

    Keras 3 wants ``{"name", "layers"}`` with an explicit InputLayer.
    """
    if isinstance(inner, list):
        inner = {"name": "sequential", "layers": inner}
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not layers or not all(isinstance(layer, dict) for layer in layers):
        return inner
    first_config = layers[0].get("config")
    if (
        layers[0].get("class_name") != "InputLayer"
        and isinstance(first_config, dict)
        and "batch_input_shape" in first_config
    ):
        layers.insert(0, _input_layer_from(first_config, layers))
    return inner


def _input_layer_from(first_config: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """An InputLayer entry for the ``batch_input_shape`` (and a plain ``dtype``) of a Sequential's first."""
    shape = first_config.pop("batch_input_shape")
    dtype = first_config.get("dtype")
    if not isinstance(dtype, str) or dtype.startswith("mixed_") or dtype == "_infer":
        dtype = "float32"
    used = {layer.get("config", {}).get("name") for layer in layers}
    name = next(f"input_{i}" for i in range(1, len(used) + 2) if f"input_{i}" not in used)
    return {"class_name": "InputLayer", "config": {"batch_shape": shape, "dtype": dtype, "name": name}}


def _functional_structure(config: dict[str, Any]) -> None:
    """Node references to nested models, and single inputs and outputs, the way Keras 3 counts them.

    A Keras 2 model used as a layer owned node 0 itself (it linked its inputs to its outputs), so
    its calls were nodes 1, 2, ...; in Keras 3 they are 0, 1, ... . Keras 3 itself takes that one
    off for a nested Functional named in ``output_layers``, not for a nested Sequential. Keras 2
    listed a single input or output as a list of one, which Keras 3 then calls with a mismatched
    structure; Keras 3 writes the reference alone.
    """
    layers = config["layers"]
    nested = {_layer_name(layer) for layer in layers if layer.get("class_name") in MODEL_CLASSES}
    sequential = {_layer_name(layer) for layer in layers if layer.get("class_name") == "Sequential"}
    for layer in layers:
        nodes = layer.get("inbound_nodes")
        if isinstance(nodes, list):
            layer["inbound_nodes"] = [
                [_earlier_node(ref, nested) for ref in node] if isinstance(node, list) else node
                for node in nodes
            ]
    outputs = config.get("output_layers")
    if isinstance(outputs, list):
        config["output_layers"] = [_earlier_node(ref, sequential) for ref in outputs]
    for key in ("input_layers", "output_layers"):
        refs = config.get(key)
        if isinstance(refs, list) and len(refs) == 1 and _is_tensor_ref(refs[0]):
            config[key] = refs[0]


def _is_tensor_ref(ref: Any) -> TypeGuard[list[Any]]:
    """``[layer_name, node_index, tensor_index]`` (an inbound node adds the call's kwargs)."""
    return (
        isinstance(ref, list) and len(ref) in (3, 4) and isinstance(ref[0], str) and isinstance(ref[1], int)
    )


def _earlier_node(ref: Any, layer_names: set[str]) -> Any:
    """``ref`` with its node index one lower when it names one of ``layer_names`` (see above)."""
    if _is_tensor_ref(ref) and ref[0] in layer_names and ref[1] >= 1:
        return [ref[0], ref[1] - 1, *ref[2:]]
    return ref


def _layer_name(entry: Entry) -> str:
    config = entry.get("config")
    name = entry.get("name") or (config.get("name") if isinstance(config, dict) else None)
    return str(name or "?")


def _class_label(entry: Entry) -> str:
    """The class name, with the TensorFlow function of a Keras 2 TFOpLambda layer."""
    function = entry["config"].get("function")
    return f"{entry['class_name']} {function}" if isinstance(function, str) else str(entry["class_name"])


# The rewrites. Each takes one layer entry; most change only its config.


def _drop(*keys: str) -> Rewrite:
    """Drop settings Keras 2 wrote but ignored for this class (or that only steer training)."""

    def rewrite(entry: Entry) -> None:
        for key in keys:
            entry["config"].pop(key, None)

    return rewrite


def _rename(old: str, new: str) -> Rewrite:
    """A setting Keras 3 calls by another name, same meaning."""

    def rewrite(entry: Entry) -> None:
        config = entry["config"]
        if old in config:
            value = config.pop(old)
            config.setdefault(new, value)

    return rewrite


def _becomes(class_name: str) -> Rewrite:
    """A class Keras 3 folded into another one that computes the same with these settings."""

    def rewrite(entry: Entry) -> None:
        entry["class_name"] = class_name

    return rewrite


def _single_axis(entry: Entry) -> None:
    """Keras 2 wrote a built BatchNormalization's axis as a list; Keras 3 takes one int."""
    config = entry["config"]
    axis = config.get("axis")
    if isinstance(axis, list) and len(axis) == 1 and isinstance(axis[0], int):
        config["axis"] = axis[0]
    elif isinstance(axis, list):
        raise Keras2ConfigError(
            f"layer '{_layer_name(entry)}' ({entry['class_name']}) normalises over the axes {axis}; "
            "Keras 3 normalises over one axis only: rebuild the model with one axis and retrain it"
        )


def _dtype_policy(entry: Entry) -> None:
    """Keras 2 wrote a mixed-precision policy as ``{"class_name": "Policy", ...}``; Keras 3 takes its name."""
    config = entry["config"]
    dtype = config.get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") in ("Policy", "PolicyV1"):
        inner = dtype.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        if name == "_infer" or not isinstance(name, str):  # TF 2.0-2.3: the inputs' dtype
            config.pop("dtype")
        else:
            config["dtype"] = name


def _keras2_activations(entry: Entry) -> None:
    """Activation names whose function Keras 3 changed get their Keras 2 function back."""
    config = entry["config"]
    for key, value in config.items():
        if key == "activation" or key.endswith("_activation"):
            name = value.get("config") if isinstance(value, dict) else value
            if isinstance(name, str) and name in _KERAS2_ACTIVATIONS:
                config[key] = _KERAS2_ACTIVATIONS[name]


#: Config keys of training-only objects, by suffix, and the Keras 3 getter that reads each.
_TRAINING_OBJECTS: dict[str, Callable[[Any], Any]] = {
    "_initializer": keras.initializers.get,
    "_regularizer": keras.regularizers.get,
    "_constraint": keras.constraints.get,
}


def _training_objects(entry: Entry) -> None:
    """Initializers, regularizers and constraints: Keras 2 forms rewritten, unknown ones dropped.

    They never change what a trained model computes. TF 1.x-era initializers carried a ``dtype``
    Keras 3 refuses; an object Keras 3 does not have (``RadialConstraint``) falls back to the
    layer's default, so that the model still loads.
    """
    config = entry["config"]
    for key in list(config):
        get = next((g for suffix, g in _TRAINING_OBJECTS.items() if key.endswith(suffix)), None)
        value = config[key]
        if get is None or value is None:
            continue
        if isinstance(value, dict) and isinstance(value.get("config"), dict):
            value["config"].pop("dtype", None)
        try:
            get(value)
        except (ValueError, TypeError, AttributeError):
            del config[key]


def _stray_input_shape(entry: Entry) -> None:
    """Only an InputLayer carries the input shape in Keras 3 (tf-keras also wrote it beside one)."""
    if entry["class_name"] != "InputLayer":
        entry["config"].pop("batch_input_shape", None)


#: TensorFlow functions Keras 2 recorded as TFOpLambda layers when applied to a tensor and a
#: number (tf-keras' own MobileNetV3 writes ``x + 3.0`` and ``x * (1 / 6)``): the function ->
#: the Keras 3 layer computing the same, from the number ``y`` (None: no number taken).
_TF_OPS: dict[str, Callable[[float | None], tuple[str, dict[str, Any]]]] = {
    "__operators__.add": lambda y: ("Rescaling", {"scale": 1.0, "offset": y}),
    "math.add": lambda y: ("Rescaling", {"scale": 1.0, "offset": y}),
    "math.multiply": lambda y: ("Rescaling", {"scale": y, "offset": 0.0}),
    "nn.relu": lambda y: ("ReLU", {}),
    "nn.relu6": lambda y: ("ReLU", {"max_value": 6.0}),
    "math.sigmoid": lambda y: ("Activation", {"activation": "sigmoid"}),
    "nn.sigmoid": lambda y: ("Activation", {"activation": "sigmoid"}),
    "math.tanh": lambda y: ("Activation", {"activation": "tanh"}),
    "nn.silu": lambda y: ("Activation", {"activation": "silu"}),
    "nn.swish": lambda y: ("Activation", {"activation": "silu"}),
}
_TAKES_NUMBER = ("__operators__.add", "math.add", "math.multiply")


def _tf_op_as_layer(entry: Entry) -> None:
    """A TFOpLambda of ``_TF_OPS`` applied to one tensor (and a number) becomes that Keras layer.

    Keras 2 stored such a call as the node ``[producer, node, tensor, {"y": number, "name": ...}]``
    (not nested in a list as other layers' nodes are). ``x * 1.0 + y`` and ``x * y + 0.0`` are
    exactly ``x + y`` and ``x * y`` in float32, so Rescaling reproduces them bit for bit.
    """
    config = entry["config"]
    function = config.get("function")
    nodes = entry.get("inbound_nodes")
    ref = nodes[0] if isinstance(nodes, list) and len(nodes) == 1 else None
    if _is_tensor_ref(ref) and len(ref) == 4 and isinstance(ref[3], dict):
        kwargs = {key: value for key, value in ref[3].items() if key != "name"}
        y = kwargs.pop("y", None)
        number = isinstance(y, (int, float)) and not isinstance(y, bool)
        if function in _TF_OPS and not kwargs and number == (function in _TAKES_NUMBER):
            class_name, settings = _TF_OPS[function](float(y) if number else None)
            keep = {key: config[key] for key in ("name", "trainable", "dtype") if key in config}
            entry.update(class_name=class_name, config={**keep, **settings}, inbound_nodes=[[[*ref[:3], {}]]])
            return
    raise Keras2ConfigError(
        f"layer '{_layer_name(entry)}' ({_class_label(entry)}) was written by Keras 2 and has no "
        f"Keras 3 equivalent: {_REMOVED_CLASSES['TFOpLambda']}"
    )


#: ``groups``, inherited from Conv: Keras 2's depthwise, separable and transposed ops ignored it.
_GROUPS_IGNORED = _drop("groups")
#: SeparableConv also wrote the base Conv's unused kernel_* settings (it has depthwise_* and pointwise_*).
_UNUSED_KERNEL = _drop("kernel_initializer", "kernel_regularizer", "kernel_constraint")
#: How training computed the batch statistics; inference is the same without them.
_BATCH_STATISTICS = _drop("virtual_batch_size", "fused")
#: Keras 3's spatial dropouts take neither (the noise shape is what makes them spatial).
_SPATIAL_DROPOUT = _drop("trainable", "noise_shape")

_CLASS_REWRITES: dict[str, tuple[Rewrite, ...]] = {
    "InputLayer": (_rename("batch_input_shape", "batch_shape"),),
    "DepthwiseConv1D": (_GROUPS_IGNORED,),
    "DepthwiseConv2D": (_GROUPS_IGNORED,),
    "SeparableConv1D": (_GROUPS_IGNORED, _UNUSED_KERNEL),
    "SeparableConv2D": (_GROUPS_IGNORED, _UNUSED_KERNEL),
    "Conv1DTranspose": (_GROUPS_IGNORED,),
    "Conv2DTranspose": (_GROUPS_IGNORED,),
    "Conv3DTranspose": (_GROUPS_IGNORED,),
    "BatchNormalization": (_single_axis, _BATCH_STATISTICS),
    "SyncBatchNormalization": (_becomes("BatchNormalization"), _single_axis, _BATCH_STATISTICS),
    "LeakyReLU": (_rename("alpha", "negative_slope"),),
    # Keras 2: x if x > theta else 0 (theta >= 0); Keras 3's ReLU computes exactly that.
    "ThresholdedReLU": (_becomes("ReLU"), _rename("theta", "threshold")),
    "SpatialDropout1D": (_SPATIAL_DROPOUT,),
    "SpatialDropout2D": (_SPATIAL_DROPOUT,),
    "SpatialDropout3D": (_SPATIAL_DROPOUT,),
    "TFOpLambda": (_tf_op_as_layer,),
}
_COMMON_REWRITES: tuple[Rewrite, ...] = (
    _dtype_policy,
    _keras2_activations,
    _training_objects,
    _stray_input_shape,
)

#: Keras 2 classes with no Keras 3 counterpart, and what to do instead.
_REMOVED_CLASSES = {
    "TFOpLambda": "a TensorFlow function applied to a Keras 2 tensor, other than a number added or "
    "multiplied or tf.nn.relu, relu6, sigmoid, tanh, silu; rebuild it with Keras layers (Add, Multiply, "
    "Rescaling, ReLU, Activation) and save the model again",
    "SlicingOpLambda": "a slice x[...] of a Keras 2 tensor; rebuild it with Keras layers (Cropping, Reshape) "
    "and save the model again",
    "LocallyConnected1D": "Keras 3 has no locally connected layers",
    "LocallyConnected2D": "Keras 3 has no locally connected layers",
    "DenseFeatures": "Keras 3 has no feature columns; feed the features as one array",
}


def _written_by_keras3(path: Path) -> bool:
    """Whether the file's ``keras_version`` is 3.x (Keras 2.2.4 to tf-keras 2.21 wrote 2.x)."""
    with h5py.File(path, "r") as f:
        version = f.attrs.get("keras_version", b"")
    text = version.decode("utf-8", "replace") if isinstance(version, bytes) else str(version)
    return text.startswith("3.")


def _refuse_lambda(path: Path, config: Any, unsafe: bool) -> None:
    """Refuse a model with a Lambda layer unless ``unsafe``: loading it runs code from the file.

    Keras >= 3.11.3 enforces this itself, but older Keras 3 ignored ``safe_mode`` for HDF5
    (CVE-2025-9905), so the config is checked here for every format.
    """
    names = sorted(set(_lambda_layer_names(config)))
    if names and not unsafe:
        what = "a Lambda layer" if len(names) == 1 else "Lambda layers"
        raise ModelError(_unsafe_message(path, f"{what} ({', '.join(names)})"))


def _lambda_layer_names(node: Any) -> Iterator[str]:
    """Names of every Lambda layer anywhere in a (possibly nested) model config."""
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            inner = node.get("config")
            yield str(inner.get("name", "?")) if isinstance(inner, dict) else "?"
        for value in node.values():
            yield from _lambda_layer_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _lambda_layer_names(value)


def _unsafe_message(path: Path, what: str) -> str:
    """The one-line refusal for a model that stores Python code."""
    return (
        f"{path} contains {what}, i.e. Python code stored in the file; loading it would execute "
        "code from the file. If you trust the file, pass --unsafe-load"
    )


def _keras_load(load_path: Path, shown_path: Path, unsafe: bool) -> keras.Model:
    """``keras.saving.load_model``, its exceptions turned into one-line ModelErrors about ``shown_path``."""
    try:
        return keras.saving.load_model(load_path, compile=False, safe_mode=not unsafe)
    except Exception as e:  # Keras raises many types; each becomes one actionable line
        raise _explain(shown_path, e) from e


def _explain(path: Path, error: Exception) -> ModelError:
    """Translate a Keras loading error into what the user should do."""
    text = str(error)
    unknown = _UNKNOWN_OBJECT.search(text)
    if unknown:
        name = unknown.group(1) or unknown.group(2)
        return ModelError(
            f"{path} uses the custom layer or object '{name}', which Keras does not know; custom layers "
            "must be registered with @keras.saving.register_keras_serializable and importable"
        )
    if isinstance(error, ValueError) and ("safe_mode" in text or "unsafe" in text):
        return ModelError(_unsafe_message(path, "a Lambda layer or other Python lambda"))
    return ModelError(f"could not load model {path}: {_first_line(error)}")


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an error message, or its type name when it has none."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
