"""Evaluation data for the search: loading, label checks, preprocessing, the search/held-out split.

Spec §4: decisions are made on a *search* set and reported on a *held-out* set; the paper's own
setting (search and report on the whole test set) is the no-split case. Samples stay in their stored
dtype (often uint8) and become float32 one batch at a time, so a large set never exists as floats.
Keras (through ``optsearch.model.keras_io``) is imported only inside the functions that need it, so
``import optsearch.data`` stays light.

Data come as an ``.npz`` file, a dataset name, or an image folder in the layout of
``keras.utils.image_dataset_from_directory`` (one subfolder per class, sorted names = label order).
An ``.npz`` with only ``x`` or a folder of images without class subfolders is ``Unlabelled``: the
caller labels it with the float model's own top-1 predictions (``Unlabelled.labelled``).
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

#: The image files ``keras.utils.image_dataset_from_directory`` reads (Keras' ``ALLOWLIST_FORMATS``).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")

#: What a dataset's source says when its labels are the float model's own top-1 predictions.
MODEL_LABELS = "labels: the float model's own predictions"

#: Names listed in a message before it says how many there are in all.
_LISTED_NAMES = 5


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples and integer labels, with a human description of where they came from.

    ``x`` is kept as stored (often uint8 NHWC) to save memory; ``Preprocess`` makes float32 batches.
    ``y`` holds int64 class indices of shape ``(N,)``.
    """

    x: np.ndarray
    y: np.ndarray
    source: str
    class_names: tuple[str, ...] | None = None
    """The class folders of an image folder, in label order; None when the labels came as numbers."""

    def __len__(self) -> int:
        """The number of labelled samples."""
        return len(self.y)

    def subset(self, indices: np.ndarray, source_suffix: str) -> Dataset:
        """The samples at ``indices`` (in that order); ``source_suffix`` is appended to the description."""
        return Dataset(
            x=self.x[indices],
            y=self.y[indices],
            source=self.source + source_suffix,
            class_names=self.class_names,
        )


@dataclass(frozen=True, eq=False)
class Unlabelled:
    """Samples without labels: an ``.npz`` with only ``x``, or a folder of images without class folders.

    They serve as label-free calibration data: the float model's own top-1 predictions become the
    labels, so the loss is the disagreement with the float model (whose accuracy is 100% by definition).
    """

    x: np.ndarray
    source: str

    def __len__(self) -> int:
        """The number of samples."""
        return len(self.x)

    def labelled(self, y: np.ndarray) -> Dataset:
        """These samples labelled ``y``, the float model's own top-1 predictions; the source says so."""
        return Dataset(x=self.x, y=to_class_indices(y, self.source), source=f"{self.source} ({MODEL_LABELS})")


@dataclass(frozen=True)
class ImageOptions:
    """How an image folder is read for one model: the size, the colour mode and the sample layout.

    ``size`` is ``(H, W)``, the size every image is resized to (bilinear, as
    ``image_dataset_from_directory`` does); None keeps each image's own size, which must then be
    the same for all. ``channel_axis`` False gives ``(H, W)`` grayscale samples for an ``(H, W)``
    input. ``unsupported`` says why the model cannot take images at all (reported only when a
    folder is given).
    """

    size: tuple[int, int] | None = None
    color_mode: str = "rgb"
    channel_axis: bool = True
    unsupported: str | None = None

    @classmethod
    def for_input_shape(
        cls, input_shape: tuple[int | None, ...], resize: tuple[int, int] | None = None
    ) -> ImageOptions:
        """The options for a model with this input shape (no batch axis): its ``(H, W)`` when fixed,
        else ``resize``, else each image's own size (a model that resizes itself); grayscale for
        one channel, rgb for three, rgba for four."""
        shape = tuple(input_shape)
        if len(shape) not in (2, 3):
            return cls(unsupported=f"the model's input {shape} is not an image (H, W, C)")
        height, width = shape[0], shape[1]
        size = (height, width) if height is not None and width is not None else resize
        if len(shape) == 2:
            return cls(size=size, color_mode="grayscale", channel_axis=False)
        modes = {1: "grayscale", 3: "rgb", 4: "rgba"}
        if shape[2] not in modes:
            return cls(
                unsupported=f"the model's input {shape} has {shape[2]} channels; images give 1 (grayscale), "
                "3 (rgb) or 4 (rgba)"
            )
        return cls(size=size, color_mode=modes[shape[2]])


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
    An archive with only ``x`` is refused here (``load_npz_samples`` reads it).
    """
    return _require_labels(load_npz_samples(path))


def load_npz_samples(path: str | Path) -> Dataset | Unlabelled:
    """As ``load_npz``, but an archive holding only ``x`` gives ``Unlabelled`` samples."""
    path = Path(path)
    x, y = _read_npz_pair(path, [("x", "y"), ("x_test", "y_test")], x_alone="x")
    if y is None:
        return Unlabelled(x=_checked_samples(x, str(path)), source=str(path))
    return _make_dataset(x, y, source=str(path))


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
        assert y is not None  # no x_alone: a pair or a DataError
        return _make_dataset(_add_channel_axis(x), y, source=f"{name} {split} ({path})")
    if name == "svhn":
        return _load_svhn(split, folder)
    return _load_from_keras(name, split, folder)


def load_data(spec: str, data_dir: str | Path | None = None, images: ImageOptions | None = None) -> Dataset:
    """A dataset from a spec: a path to an ``.npz`` file or an image folder, or a name with an optional
    split (``mnist:train``). ``images`` says how a folder is read (default: rgb, each image's own size).

    A spec ending in ``.npz`` or holding a path separator is a path; an existing folder is a folder
    unless it is spelled as a dataset name; anything else is a dataset name. Data without labels are
    refused here (``load_samples`` returns them).
    """
    return _require_labels(load_samples(spec, data_dir, images))


def load_samples(
    spec: str, data_dir: str | Path | None = None, images: ImageOptions | None = None
) -> Dataset | Unlabelled:
    """As ``load_data``, but an ``.npz`` with only ``x`` or a folder of images without class
    subfolders gives ``Unlabelled`` samples, for the caller to label with the float model."""
    spec = spec.strip()
    if not spec:
        raise DataError(
            "empty data spec; give a .npz path, an image folder or a dataset name "
            f"({', '.join(DATASET_NAMES)})"
        )
    if _is_folder(spec):
        return load_image_folder(spec, images or ImageOptions())
    if _looks_like_path(spec):
        return load_npz_samples(spec)
    name, sep, split = spec.partition(":")
    if sep and not split:
        raise DataError(f"data spec {spec!r} has an empty split; use {name}:test or {name}:train")
    return load_named(name, split or "test", data_dir=data_dir)


def _require_labels(loaded: Dataset | Unlabelled) -> Dataset:
    """``loaded`` when it has labels; Unlabelled samples are refused, saying who can label them."""
    if isinstance(loaded, Dataset):
        return loaded
    raise DataError(
        f"{loaded.source} has no labels (only x, or images without class subfolders); optsearch run, check "
        "and evaluate label such data with the float model's own predictions, here give labels"
    )


def _looks_like_path(spec: str) -> bool:
    """True when the data spec names a file rather than a dataset."""
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return spec.lower().endswith(".npz") or any(s in spec for s in separators)


def _is_folder(spec: str) -> bool:
    """True when the data spec is an existing folder (a bare dataset name stays a name)."""
    if not Path(spec).is_dir():
        return False
    bare_name = spec.partition(":")[0].strip().lower().replace("-", "_")
    return _looks_like_path(spec) or bare_name not in DATASET_NAMES


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


def _read_npz_pair(
    path: Path, pairs: list[tuple[str, str]], x_alone: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``(x_key, y_key)`` pair of ``pairs`` found in the archive, read without pickle.

    With ``x_alone``, an archive holding that one array and nothing else gives ``(x, None)``.
    """
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
            if x_alone is not None and found == [x_alone]:
                x = archive[x_alone]
                if not isinstance(x, np.ndarray):
                    raise ValueError(f"member {x_alone} is not an .npy array")
                return x, None
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
    alone = f" (or {x_alone} alone, labelled by the float model)" if x_alone is not None else ""
    raise DataError(
        f"{path} has arrays {found or 'none'} but needs {expected}{alone}; re-save it with those names"
    )


def _make_dataset(x: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    """A Dataset after checking that samples are numeric arrays with a sample axis; labels become int64."""
    return Dataset(x=_checked_samples(x, source), y=to_class_indices(y, source), source=source)


def _checked_samples(x: np.ndarray, source: str) -> np.ndarray:
    """The samples, checked to be a numeric array with a sample axis."""
    x = np.asarray(x)
    if x.ndim < 1:
        raise DataError(f"{source}: samples are a scalar; expected an array with one row per sample")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: samples have dtype {x.dtype}; expected numbers (e.g. uint8 pixels)")
    return x


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
# Image folders


def load_image_folder(folder: str | Path, images: ImageOptions | None = None) -> Dataset | Unlabelled:
    """The images of ``folder`` in the layout of ``keras.utils.image_dataset_from_directory``.

    One subfolder per class: the sorted subfolder names are the classes, in Keras' label order, and
    each class's images are read from its subfolder and below, in Keras' order. A folder of images
    without subfolders gives ``Unlabelled`` samples. Images are decoded and resized by Keras itself
    (``images`` gives the size and colour mode); they stay uint8 unless a resize made fractions.
    Refused, naming the file or folder: an empty folder, a file that is not an image, a class
    folder without images, class subfolders beside loose files, an image that cannot be decoded.
    """
    folder = Path(folder)
    images = images or ImageOptions()
    class_names, files = _folder_layout(folder)
    if images.unsupported is not None:
        raise DataError(f"{folder}: {images.unsupported}; give its data as an .npz file instead of images")
    size = images.size or _common_size(folder, files)
    from optsearch.model.keras_io import read_image_folder  # imported here: Keras is heavy

    read = read_image_folder(
        folder, labelled=class_names is not None, color_mode=images.color_mode, size=size
    )
    if [os.path.normpath(p) for p in read.paths] != [os.path.normpath(p) for p in files] or (
        class_names is not None and tuple(read.class_names or ()) != class_names
    ):
        raise DataError(f"{folder}: the folder changed while it was read; read it again when it is complete")
    x = read.x if images.channel_axis else read.x[..., 0]
    described = f"image folder: {len(files)} images at {size[0]}x{size[1]} {images.color_mode}"
    if class_names is None or read.y is None:
        return Unlabelled(x=x, source=f"{folder} ({described}, no class subfolders)")
    return Dataset(
        x=x,
        y=read.y.astype(np.int64),
        source=f"{folder} ({described}, {len(class_names)} classes)",
        class_names=class_names,
    )


def _folder_layout(folder: Path) -> tuple[tuple[str, ...] | None, list[str]]:
    """The class names (None without class subfolders) and the image files, in Keras' order.

    Keras' rules (``keras.utils.image_dataset_from_directory``, ``shuffle=False``): classes are the
    sorted subfolders not starting with ``.``; a class's images are the files with an image
    extension anywhere below its folder, walked in sorted order; without classes, the whole folder.
    Hidden files (``.DS_Store``) are ignored; any other file that is not an image is refused.
    """
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}; check the path")
    visible = [name for name in _listdir(folder) if not name.startswith(".")]
    if not visible:
        raise DataError(
            f"{folder}: the folder is empty; put one subfolder of images per class in it (the layout of "
            f"keras.utils.image_dataset_from_directory), or only images for label-free calibration"
        )
    subfolders = [name for name in visible if (folder / name).is_dir()]
    loose = [name for name in visible if not (folder / name).is_dir()]
    if subfolders and loose:
        raise DataError(
            f"{folder}: holds class subfolders ({_listing(subfolders)}) and loose files ({_listing(loose)}) "
            "side by side; put every image in its class's subfolder, or only images (no subfolders) "
            "for label-free calibration"
        )
    if not subfolders:
        return None, _images_under(folder)
    files: list[str] = []
    for name in subfolders:
        found = _images_under(folder / name)
        if not found:
            raise DataError(
                f"{folder / name}: class folder {name!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "every class needs at least one (the sorted folder names are the label order)"
            )
        files += found
    return tuple(subfolders), files


def _listdir(folder: Path) -> list[str]:
    """The sorted names in ``folder``; an unreadable folder is a DataError naming it."""
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"{folder}: the folder cannot be read ({exc.strerror or exc})") from exc


def _images_under(folder: Path) -> list[str]:
    """The image files under ``folder`` in Keras' order (walk sorted by folder, files sorted); a visible
    file that is not an image, outside hidden folders, is a DataError naming it."""

    def refuse(exc: OSError) -> None:
        raise DataError(f"{exc.filename}: the folder cannot be read ({exc.strerror or exc})") from exc

    found: list[str] = []
    for root, _, names in sorted(os.walk(folder, onerror=refuse), key=lambda walked: walked[0]):
        hidden_root = any(part.startswith(".") for part in Path(root).relative_to(folder).parts)
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
            elif not name.startswith(".") and not hidden_root:
                raise DataError(
                    f"{os.path.join(root, name)}: not an image file (Keras reads "
                    f"{', '.join(IMAGE_EXTENSIONS)}); remove it or move it out of the data folder"
                )
    return found


def _common_size(folder: Path, files: list[str]) -> tuple[int, int]:
    """The one ``(H, W)`` of all the images, for a model that takes any size; DataError if they differ."""
    sizes: dict[tuple[int, int], str] = {}
    for path in files:
        sizes.setdefault(_image_size(path), path)
        if len(sizes) > 1:
            (first, a), (second, b) = sizes.items()
            raise DataError(
                f"{folder}: images of different sizes ({a} is {first[0]}x{first[1]}, {b} is "
                f"{second[0]}x{second[1]}) and the model takes any size; give --resize H W"
            )
    return next(iter(sizes))


def _image_size(path: str) -> tuple[int, int]:
    """``(H, W)`` of an image file, from its header; an unreadable file is a DataError naming it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError(
            f"reading the size of {path} needs Pillow; install it with: pip install pillow"
        ) from exc
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); remove or replace it") from exc
    return int(height), int(width)


def _listing(names: list[str]) -> str:
    """Up to a few names, then how many there are in all."""
    shown = ", ".join(names[:_LISTED_NAMES])
    return shown if len(names) <= _LISTED_NAMES else f"{shown}, ... ({len(names)} in all)"


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
    _check_class_names(ds, num_classes)
    _check_labels(ds, num_classes)
    _check_shape(ds, input_shape, preprocess)
    _check_finite(ds)
    _check_scaled_range(ds, preprocess)


def _check_class_names(ds: Dataset, num_classes: int) -> None:
    """An image folder must have one class folder per output of the model (else its labels mean nothing)."""
    if ds.class_names is None or len(ds.class_names) == num_classes:
        return
    raise DataError(
        f"{ds.source}: {len(ds.class_names)} class folders ({_listing(list(ds.class_names))}) but the model "
        f"has {num_classes} outputs; give one subfolder per class of the model (sorted names in its label "
        "order)"
    )


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
