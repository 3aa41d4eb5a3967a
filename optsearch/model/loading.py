"""Load a trained model (``.keras`` or legacy HDF5) for the tool, with one-line errors.

Keras 3 cannot read Keras 2.2-era Sequential HDF5 files as written; those are normalised in
a temporary copy first (the user's file is never modified).  Lambda layers store Python in
the file, so they are refused unless the caller opts in with ``unsafe=True``.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import keras

from optsearch.core.errors import ModelError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5")
_UNKNOWN_OBJECT = re.compile(r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '?([\w.>]+)")


def load_model(path: str | Path, *, unsafe: bool = False) -> keras.Model:
    """Load the model at ``path`` uncompiled; ``unsafe`` allows Python code (Lambda layers) in it."""
    path = Path(path)
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
    """Load a legacy HDF5 model, normalising a Keras 2.2-era Sequential config in a temp copy."""
    config = _read_hdf5_config(path)
    _refuse_lambda(path, config, unsafe)
    normalised = _normalise_sequential_config(config)
    if normalised is None and path.suffix in HDF5_SUFFIXES:
        return _keras_load(path, path, unsafe)
    with tempfile.TemporaryDirectory(prefix="optsearch-") as tmp:
        copy = Path(tmp) / "model.h5"
        shutil.copyfile(path, copy)
        if normalised is not None:
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


def _normalise_sequential_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """A Keras 3 loadable copy of a Keras 2.2-era Sequential config, or None if it loads as is.

    Keras 2.2 wrote ``config`` as a bare list of layers, and put the input shape on the first
    layer as ``batch_input_shape``; Keras 3 wants the dict form with an explicit InputLayer.
    """
    inner = config.get("config")
    if config.get("class_name") != "Sequential" or not isinstance(inner, (list, dict)):
        return None
    layers = inner if isinstance(inner, list) else inner.get("layers")
    if not isinstance(layers, list):
        return None
    first = layers[0] if layers and isinstance(layers[0], dict) else {}
    first_config = first.get("config")
    needs_input = (
        first.get("class_name") != "InputLayer"
        and isinstance(first_config, dict)
        and "batch_input_shape" in first_config
    )
    if isinstance(inner, dict) and not needs_input:
        return None
    # A deep copy: the config read from the file is never changed in place.
    inner = json.loads(
        json.dumps({"name": "sequential", "layers": inner} if isinstance(inner, list) else inner)
    )
    if needs_input:
        inner["layers"].insert(0, _input_layer_from(inner["layers"][0]["config"], inner["layers"]))
    return {**config, "config": inner}


def _input_layer_from(first_config: dict[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Move ``batch_input_shape`` / ``dtype`` off the first layer into a new InputLayer config."""
    shape = first_config.pop("batch_input_shape")
    dtype = first_config.pop("dtype", None) or "float32"
    used = {layer.get("config", {}).get("name") for layer in layers}
    name = next(f"input_{i}" for i in range(1, len(used) + 2) if f"input_{i}" not in used)
    return {"class_name": "InputLayer", "config": {"batch_shape": shape, "dtype": dtype, "name": name}}


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
