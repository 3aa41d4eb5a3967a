"""Evaluation data for the search: loading, label checks, preprocessing, the search/held-out split.

Spec §4: decisions are made on a *search* set and reported on a *held-out* set; the paper's own
setting (search and report on the whole test set) is the no-split case. Samples stay in their stored
dtype (often uint8) and become float32 one batch at a time, so a large set never exists as floats.
Keras (through ``optsearch.model.keras_io``) is imported only inside the functions that need it, so
``import optsearch.data`` stays light.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optsearch.core.errors import DataError

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "svhn")
SPLITS = ("train", "test")

#: Environment variable naming a folder with ``<name>.npz`` (and the SVHN ``.mat`` files).
DATA_DIR_ENV = "OPTSEARCH_DATA"

#: Where the SVHN cropped-digit files come from (they are not in keras.datasets).
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

#: Rows per chunk when scanning samples for NaN/inf (bounds the temporary boolean array).
_FINITE_CHECK_ROWS = 4096


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples and integer labels, with a human description of where they came from.

    ``x`` is kept as stored (often uint8 NHWC) to save memory; ``Preprocess`` makes float32 batches.
    ``y`` holds int64 class indices of shape ``(N,)``.
    """

    x: np.ndarray
    y: np.ndarray
    source: str

    def __len__(self) -> int:
        """The number of labelled samples."""
        return len(self.y)

    def subset(self, indices: np.ndarray, source_suffix: str) -> Dataset:
        """The samples at ``indices`` (in that order); ``source_suffix`` is appended to the description."""
        return Dataset(x=self.x[indices], y=self.y[indices], source=self.source + source_suffix)


# --------------------------------------------------------------------------------------------------
# Labels


def to_class_indices(y: np.ndarray, source: str) -> np.ndarray:
    """Integer labels, an ``(N, 1)`` column or one-hot ``(N, C)`` rows as int64 class indices ``(N,)``.

    Spec §4: labels may be integers or one-hot. Anything ambiguous (soft labels, fractions,
    negative classes) is refused rather than guessed.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: labels have dtype {y.dtype}; expected integer class indices or one-hot rows"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        return _one_hot_to_indices(y, source)
    if y.ndim != 1:
        raise DataError(
            f"{source}: labels have shape {y.shape}; expected (N,) class indices, an (N, 1) column "
            "or one-hot rows (N, C)"
        )
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source}: {int(bad.sum())} labels are not whole numbers (first: {y[first]!r} at index "
                f"{first}); give integer class indices or one-hot rows"
            )
    if y.size and y.min() < 0:
        first = int(np.flatnonzero(y < 0)[0])
        raise DataError(
            f"{source}: {int((y < 0).sum())} labels are negative (first: {y[first]!r} at index {first}); "
            "class indices start at 0"
        )
    return y.astype(np.int64)


def _one_hot_to_indices(y: np.ndarray, source: str) -> np.ndarray:
    """The position of the single 1 in each one-hot row; every other entry must be 0."""
    is_binary = (y == 0) | (y == 1)
    good = is_binary.all(axis=1) & ((y == 1).sum(axis=1) == 1)
    if not good.all():
        first = int(np.flatnonzero(~good)[0])
        raise DataError(
            f"{source}: {int((~good).sum())} of {len(y)} one-hot label rows do not hold exactly one 1 and "
            f"zeros elsewhere (first: row {first}); give hard one-hot labels or integer class indices"
        )
    indices: np.ndarray = np.argmax(y, axis=1).astype(np.int64)
    return indices


# --------------------------------------------------------------------------------------------------
# Loading


def load_npz(path: str | Path) -> Dataset:
    """Samples and labels from an ``.npz`` archive with keys ``x``/``y`` or ``x_test``/``y_test``.

    ``x``/``y`` win when both pairs exist. Never unpickles: an archive needing pickle is refused.
    """
    path = Path(path)
    arrays = _read_npz_pair(path, [("x", "y"), ("x_test", "y_test")])
    return _make_dataset(*arrays, source=str(path))


def load_named(name: str, split: str = "test", data_dir: str | Path | None = None) -> Dataset:
    """One split of a well-known dataset: ``<data_dir>/<name>.npz`` if present, else keras.datasets.

    ``data_dir`` defaults to ``$OPTSEARCH_DATA``. SVHN is not in keras.datasets and is read from the
    official ``<split>_32x32.mat`` files in ``data_dir`` (or ``data_dir/svhn``) instead.
    """
    name = _dataset_name(name)
    split = _split_name(split, name)
    folder = _data_dir(data_dir)
    if folder is not None and (folder / f"{name}.npz").is_file():
        path = folder / f"{name}.npz"
        x, y = _read_npz_pair(path, [(f"x_{split}", f"y_{split}")])
        return _make_dataset(_add_channel_axis(x), y, source=f"{name} {split} ({path})")
    if name == "svhn":
        return _load_svhn(split, folder)
    return _load_from_keras(name, split, folder)


def load_data(spec: str, data_dir: str | Path | None = None) -> Dataset:
    """A dataset from a spec: a path to an ``.npz`` file, or a name with an optional split (``mnist:train``).

    A spec ending in ``.npz`` or holding a path separator is a file; anything else is a dataset name.
    """
    spec = spec.strip()
    if not spec:
        raise DataError(f"empty data spec; give a .npz path or a dataset name ({', '.join(DATASET_NAMES)})")
    if _looks_like_path(spec):
        return load_npz(spec)
    name, sep, split = spec.partition(":")
    if sep and not split:
        raise DataError(f"data spec {spec!r} has an empty split; use {name}:test or {name}:train")
    return load_named(name, split or "test", data_dir=data_dir)


def _looks_like_path(spec: str) -> bool:
    """True when the data spec names a file rather than a dataset."""
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return spec.lower().endswith(".npz") or any(s in spec for s in separators)


def _dataset_name(name: str) -> str:
    """The canonical dataset name (case and ``-``/``_`` forgiven), or a DataError listing the valid ones."""
    canonical = name.strip().lower().replace("-", "_")
    if canonical not in DATASET_NAMES:
        raise DataError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
            "(or give a path to a .npz file with x/y arrays)"
        )
    return canonical


def _split_name(split: str, name: str) -> str:
    """The split name, or a DataError listing the valid ones."""
    canonical = split.strip().lower()
    if canonical not in SPLITS:
        raise DataError(f"unknown split {split!r} for dataset {name}; valid splits: {', '.join(SPLITS)}")
    return canonical


def _data_dir(data_dir: str | Path | None) -> Path | None:
    """The explicit data folder, else ``$OPTSEARCH_DATA``, else None (an empty variable counts as unset)."""
    if data_dir is not None:
        return Path(data_dir)
    from_env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(from_env) if from_env else None


def _read_npz_pair(path: Path, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """The first ``(x_key, y_key)`` pair of ``pairs`` found in the archive, read without pickle."""
    if not path.exists():
        raise DataError(f"data file not found: {path}; check the path (or the folder set by {DATA_DIR_ENV})")
    if not path.is_file():
        raise DataError(f"data path {path} is not a file; give the path of a .npz archive")
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path} is not an .npz archive; save the data with numpy.savez(path, x=images, y=labels)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = list(archive.files)
            for x_key, y_key in pairs:
                if x_key in found and y_key in found:
                    x, y = archive[x_key], archive[y_key]
                    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                        raise ValueError(f"members {x_key}/{y_key} are not .npy arrays")
                    return x, y
    except ValueError as exc:  # object arrays (need pickle) or members that are not .npy arrays
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in reason.lower():
            raise DataError(
                f"{path} holds object arrays that need pickle, which optsearch never loads (unsafe); "
                "save plain numeric arrays, e.g. numpy.savez(path, x=images.astype('uint8'), y=labels)"
            ) from exc
        raise DataError(
            f"{path} could not be read as an .npz archive ({reason}); re-save it with numpy.savez"
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{path} could not be read as an .npz archive ({exc}); re-save it with numpy.savez"
        ) from exc
    expected = " or ".join(f"{x_key}/{y_key}" for x_key, y_key in pairs)
    raise DataError(f"{path} has arrays {found or 'none'} but needs {expected}; re-save it with those names")


def _make_dataset(x: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    """A Dataset after checking that samples are numeric arrays with a sample axis; labels become int64."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise DataError(f"{source}: samples are a scalar; expected an array with one row per sample")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: samples have dtype {x.dtype}; expected numbers (e.g. uint8 pixels)")
    return Dataset(x=x, y=to_class_indices(y, source), source=source)


def _add_channel_axis(x: np.ndarray) -> np.ndarray:
    """Grayscale images ``(N, H, W)`` as ``(N, H, W, 1)``, the layout the known datasets' models take."""
    return x[..., np.newaxis] if x.ndim == 3 else x


def _keras_loader(name: str) -> Any:
    """The ``load_data`` function of ``keras.datasets.<name>``, looked up at call time."""
    from optsearch.model.keras_io import dataset_loader

    return dataset_loader(name)


def _load_from_keras(name: str, split: str, folder: Path | None) -> Dataset:
    """A split from the keras.datasets download (cached in ``~/.keras``); a failed download is a DataError."""
    try:
        (x_train, y_train), (x_test, y_test) = _keras_loader(name)()
    except Exception as exc:  # any download or cache failure reaches the user the same way
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        searched = f"no {name}.npz in {folder}; " if folder is not None else ""
        raise DataError(
            f"dataset {name} could not be downloaded by keras.datasets ({type(exc).__name__}: {reason}); "
            f"{searched}set {DATA_DIR_ENV} to a folder holding {name}.npz with x_{split}/y_{split} arrays"
        ) from exc
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return _make_dataset(_add_channel_axis(np.asarray(x)), y, source=f"{name} {split} (keras.datasets)")


def _load_svhn(split: str, folder: Path | None) -> Dataset:
    """SVHN cropped digits from the official ``<split>_32x32.mat`` file in ``folder`` or ``folder/svhn``."""
    filename = f"{split}_32x32.mat"
    candidates = [] if folder is None else [folder / filename, folder / "svhn" / filename]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        where = (
            f"looked in {folder} and {folder / 'svhn'}"
            if folder is not None
            else f"{DATA_DIR_ENV} is not set"
        )
        raise DataError(
            f"SVHN is not in keras.datasets and {filename} was not found ({where}); download it from "
            f"{SVHN_URL} and put it in the folder named by {DATA_DIR_ENV} (or its svhn/ subfolder)"
        )
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise DataError(f"reading {path} needs scipy; install it with: pip install scipy") from exc
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several types for unreadable files
        raise DataError(
            f"{path} could not be read as a MATLAB v5 file ({type(exc).__name__}: {exc}); "
            f"use the original {filename} from {SVHN_URL}"
        ) from exc
    x, y = _svhn_arrays(mat, path)
    return _make_dataset(x, y, source=f"svhn {split} ({path})")


def _svhn_arrays(mat: Mapping[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN ``X (32, 32, 3, N)`` as NHWC and labels ``y (N, 1)`` with the digit 0 stored as 10 mapped to 0."""
    if "X" not in mat or "y" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path} has variables {keys} but needs X and y (the SVHN cropped-digit layout)")
    x_hwcn, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x_hwcn.ndim != 4 or x_hwcn.shape[3] != len(y):
        raise DataError(
            f"{path}: X has shape {x_hwcn.shape} and y has {len(y)} labels; expected X (32, 32, 3, N) "
            "and y (N, 1) as in the official SVHN files"
        )
    x = np.ascontiguousarray(np.transpose(x_hwcn, (3, 0, 1, 2)))
    return x, np.where(y == 10, 0, y)


# --------------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class Preprocess:
    """What is done to each batch before the model sees it; the result is float32.

    ``scale`` multiplies pixels (e.g. 1/255) for models without a Rescaling layer; ``resize`` is a
    bilinear resize to ``(H, W)`` for models without a Resizing layer. A 3-D batch ``(N, H, W)`` is
    grayscale images: resizing works per image, and a trailing channel axis is added only when
    ``add_channel_axis`` is set (see ``fit_channel_axis``, which sets it when the model needs one).
    """

    scale: float | None = None
    resize: tuple[int, int] | None = None
    add_channel_axis: bool = False

    def __post_init__(self) -> None:
        if self.scale is not None and not math.isfinite(self.scale):
            raise ValueError(f"scale must be a finite number, got {self.scale!r}")
        if self.resize is not None:
            if len(self.resize) != 2 or any(int(s) != s or s < 1 for s in self.resize):
                raise ValueError(f"resize must be two positive integers (H, W), got {self.resize!r}")
            object.__setattr__(self, "resize", (int(self.resize[0]), int(self.resize[1])))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The batch as float32, scaled, resized and with a channel axis as configured."""
        out = np.asarray(batch, dtype=np.float32)
        self.output_shape(out.shape[1:])  # refuses what cannot be resized, before any work
        grayscale = out.ndim == 3
        if grayscale and self.add_channel_axis:
            out, grayscale = out[..., np.newaxis], False
        if self.scale is not None:
            out = out * np.float32(self.scale)
        if self.resize is not None:
            out = _resize_bilinear(out[..., np.newaxis] if grayscale else out, self.resize)
            out = out[..., 0] if grayscale else out
        return out

    def output_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one sample after preprocessing (without the batch axis)."""
        shape = tuple(int(d) for d in sample_shape)
        if self.add_channel_axis and len(shape) == 2:
            shape = (*shape, 1)
        if self.resize is not None:
            if len(shape) not in (2, 3):
                raise DataError(
                    f"cannot resize samples of shape {shape}: resizing needs images (H, W) or (H, W, C)"
                )
            shape = (*self.resize, *shape[2:])
        return shape


def _resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an NHWC float32 batch to ``size``, as the model's own Resizing layer does."""
    from optsearch.model.keras_io import resize_bilinear  # imported here: Keras is heavy

    return resize_bilinear(images, size)


def fit_channel_axis(
    preprocess: Preprocess, sample_shape: tuple[int, ...], input_shape: tuple[int | None, ...]
) -> Preprocess:
    """``preprocess`` with ``add_channel_axis`` set when ``(H, W)`` samples must become ``(H, W, 1)``.

    Only the model's input decides: the same ``(N, H, W)`` data feed a ``(H, W)`` model unchanged.
    """
    if preprocess.add_channel_axis or len(sample_shape) != 2 or len(input_shape) != 3 or input_shape[-1] != 1:
        return preprocess
    candidate = Preprocess(scale=preprocess.scale, resize=preprocess.resize, add_channel_axis=True)
    return candidate if _shape_matches(candidate.output_shape(sample_shape), input_shape) else preprocess


# --------------------------------------------------------------------------------------------------
# Validation


def validate(
    ds: Dataset, *, input_shape: tuple[int | None, ...], num_classes: int, preprocess: Preprocess
) -> None:
    """Check that ``ds`` can be fed to a model with this input shape and class count; DataError if not.

    ``input_shape`` excludes the batch axis; ``None`` marks a free dimension. Cheap checks run first;
    the NaN/inf scan goes chunk by chunk so no float64 copy of the samples is made.
    """
    if len(ds.x) == 0 or len(ds.y) == 0:
        raise DataError(f"{ds.source}: the dataset has no samples; give a file or split with data in it")
    if len(ds.x) != len(ds.y):
        raise DataError(
            f"{ds.source}: {len(ds.x)} samples but {len(ds.y)} labels; give exactly one label per sample"
        )
    _check_labels(ds, num_classes)
    _check_shape(ds, input_shape, preprocess)
    _check_finite(ds)
    _check_scaled_range(ds, preprocess)


def _check_labels(ds: Dataset, num_classes: int) -> None:
    """Every label must be a class of the model, ``0 <= y < num_classes``."""
    smallest, largest = int(ds.y.min()), int(ds.y.max())
    if smallest < 0:
        raise DataError(f"{ds.source}: labels include {smallest}; class indices start at 0")
    if largest >= num_classes:
        n_bad = int((ds.y >= num_classes).sum())
        raise DataError(
            f"{ds.source}: the largest label is {largest} but the model has {num_classes} classes "
            f"(labels 0..{num_classes - 1}; {n_bad} samples outside); use data made for this model"
        )


def _check_shape(ds: Dataset, input_shape: tuple[int | None, ...], preprocess: Preprocess) -> None:
    """The preprocessed sample shape must equal the model input shape (``None`` matches any size)."""
    sample_shape = tuple(int(d) for d in ds.x.shape[1:])
    got = preprocess.output_shape(sample_shape)
    if _shape_matches(got, input_shape):
        return
    expected = tuple(input_shape)
    hints = []
    if len(got) == len(expected) and got[:-1] != expected[:-1]:
        hints.append("resize the images with --resize H W or add a Resizing layer to the model")
    if len(got) == len(expected) == 3 and expected[-1] is not None and got[-1] != expected[-1]:
        hints.append(
            f"the channel counts differ ({got[-1]} vs {expected[-1]}): grayscale vs RGB data for this model?"
        )
    if len(got) + 1 == len(expected) and expected[-1] == 1:
        hints.append("the samples have no channel axis; store grayscale images as (N, H, W, 1)")
    if not hints:
        hints.append("give data of the shape the model was trained on, or resize with --resize H W")
    raise DataError(
        f"{ds.source}: samples have shape {got} after preprocessing but the model expects {expected} "
        f"(None = any size); {'; '.join(hints)}"
    )


def _shape_matches(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """True when the shapes have equal rank and every fixed dimension agrees."""
    if len(shape) != len(expected):
        return False
    return all(e is None or e == s for s, e in zip(shape, expected, strict=True))


def _check_finite(ds: Dataset) -> None:
    """No NaN or inf in the samples; scanned in row chunks to bound memory."""
    if ds.x.dtype.kind != "f":
        return
    n_bad_values, n_bad_samples = 0, 0
    for start in range(0, len(ds.x), _FINITE_CHECK_ROWS):
        bad = ~np.isfinite(ds.x[start : start + _FINITE_CHECK_ROWS])
        n_bad_values += int(bad.sum())
        n_bad_samples += int(bad.reshape(len(bad), -1).any(axis=1).sum())
    if n_bad_values:
        raise DataError(
            f"{ds.source}: {n_bad_values} NaN or inf values in {n_bad_samples} of {len(ds.x)} samples; "
            "remove or repair those samples"
        )


def _check_scaled_range(ds: Dataset, preprocess: Preprocess) -> None:
    """With ``--scale``, the scaled samples must stay finite in float32 (the model sees float32)."""
    if preprocess.scale is None or ds.x.size == 0:
        return
    largest = 0.0
    for start in range(0, len(ds.x), _FINITE_CHECK_ROWS):
        chunk = ds.x[start : start + _FINITE_CHECK_ROWS]  # no float copy: max and min in its dtype
        largest = max(largest, abs(float(chunk.max())), abs(float(chunk.min())))
    with np.errstate(over="ignore"):
        scaled = np.float32(largest) * np.float32(preprocess.scale)
    if not np.isfinite(scaled):
        raise DataError(
            f"{ds.source}: --scale {preprocess.scale:g} makes the samples overflow float32 (largest "
            f"magnitude {largest:g} times the scale is not finite); give the scale the model was trained "
            "with, e.g. 0.00392156862745098 for 1/255"
        )


# --------------------------------------------------------------------------------------------------
# Search / held-out split


def split(ds: Dataset, search_fraction: float = 0.5, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """Deterministic stratified split into ``(search, held_out)``; ``search_fraction == 1`` means no split.

    Spec §4: all decisions use the search set, the held-out set is only reported. For each class a
    ``default_rng(seed)`` permutation puts ``round(search_fraction * n_class)`` samples into the search set;
    a single-sample class goes to the search set. If rounding would leave a part empty, one sample moves
    over so both parts are non-empty. Both parts keep ascending original order.
    """
    if not 0.0 < search_fraction <= 1.0:
        raise ValueError(f"search_fraction must be in (0, 1], got {search_fraction!r}")
    if search_fraction == 1.0:
        return ds, None
    if len(ds) < 2:
        raise DataError(
            f"{ds.source}: {len(ds)} sample(s) are too few to split into search and held-out sets; "
            "give more data or use search fraction 1 (no split)"
        )
    search_idx, held_idx = _stratified_indices(ds.y, search_fraction, seed)
    how = f"of {len(ds)} samples, search fraction {search_fraction:g}, seed {seed}"
    return (
        ds.subset(search_idx, f" [search part: {len(search_idx)} {how}]"),
        ds.subset(held_idx, f" [held-out part: {len(held_idx)} {how}]"),
    )


def _stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted search and held-out indices: per class, the first ``round(fraction * n)`` of a permutation."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    perms = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    takes = [len(p) if len(p) == 1 else round(fraction * len(p)) for p in perms]
    if sum(takes) == 0:  # every class rounded to 0: the largest class gives one sample to the search set
        takes[int(np.argmax([len(p) for p in perms]))] = 1
    if sum(takes) == len(y):  # every class rounded up to all: the largest class keeps one sample back
        takes[int(np.argmax([len(p) for p in perms]))] -= 1
    search = np.sort(np.concatenate([p[:k] for p, k in zip(perms, takes, strict=True)]))
    held = np.sort(np.concatenate([p[k:] for p, k in zip(perms, takes, strict=True)]))
    return search.astype(np.int64), held.astype(np.int64)


def batches(ds: Dataset, batch_size: int, preprocess: Preprocess) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(float32 x, y)`` batches in order; only one batch is converted to float at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return _batch_iter(ds, batch_size, preprocess)


def _batch_iter(
    ds: Dataset, batch_size: int, preprocess: Preprocess
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The generator behind ``batches`` (kept apart so argument errors are raised at the call)."""
    for start in range(0, len(ds), batch_size):
        stop = start + batch_size
        yield preprocess(ds.x[start:stop]), ds.y[start:stop]
