"""Train the model zoo: the paper's two architectures (spec §9) on MNIST, Fashion-MNIST and CIFAR-10,
and the modern embedded reference nets (ResNet-8, MobileNetV1-0.25) on CIFAR-10.

Eight models, ``<arch>_<dataset>``, trained one after another from ``$OPTSEARCH_DATA`` (default
``../shared/datasets`` beside the repository). The last 10% of each training set is held out for
validation and never trained on; the reported accuracy is measured on the full test set.

Every epoch ends with a checkpoint in ``<out>/checkpoints/<name>/`` (the model WITH its optimizer
state, plus ``state.json``: epochs done, history, seconds), each written atomically (temp file +
``os.replace``), so a kill at any moment leaves the last complete epoch. ``--resume`` continues from
there; a model whose final ``<name>.json`` exists is skipped. Each epoch's sample order and
augmentation come from ``default_rng([seed, epoch])``, so a resumed run sees the same data as an
uninterrupted one.

Final artefacts: ``<out>/<name>.keras`` (weights only, no optimizer, not compiled; the tool loads it
with ``compile=False``), ``<out>/<name>.json`` (architecture, parameters, MACs per image, settings,
data, epochs, wall time, float test accuracy, sha256) and ``<out>/README.md`` rendered from all
finished JSON files. ``--make-default-slice`` writes ``default_data.npz`` (a stratified MNIST test
slice shipped as the tool's embedded default data) and its provenance ``default_data.json``.

    python scripts/train_zoo.py --resume                      # all eight, in order
    python scripts/train_zoo.py --resume --only sequential_mnist
    python scripts/train_zoo.py --make-default-slice
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from optsearch.data import DATA_DIR_ENV, Dataset, load_named, split
from optsearch.model import zoo
from optsearch.model.graph import find_quantizable_layers

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = REPO_ROOT / "models"

#: The modern embedded reference architectures (``optsearch.model.zoo``), trained on CIFAR-10 only.
REFERENCE_ARCHITECTURES: tuple[str, ...] = ("resnet8", "mobilenet_v1")

#: Training order: the embedded default (sequential MNIST) first, then the other sequential models.
MODEL_ORDER: tuple[tuple[str, str], ...] = (
    ("sequential", "mnist"),
    ("sequential", "fashion_mnist"),
    ("sequential", "cifar10"),
    ("branched", "mnist"),
    ("branched", "fashion_mnist"),
    ("branched", "cifar10"),
    *((arch, "cifar10") for arch in REFERENCE_ARCHITECTURES),
)

#: Epochs per model, chosen from the measured seconds per epoch on 2 CPU cores so that each model
#: trains in about an hour or less (see models/README.md for the measured times).
DEFAULT_EPOCHS: dict[str, int] = {
    "sequential_mnist": 15,
    "sequential_fashion_mnist": 20,
    "sequential_cifar10": 40,
    "branched_mnist": 12,
    "branched_fashion_mnist": 12,
    "branched_cifar10": 40,
    "resnet8_cifar10": 100,
    "mobilenet_v1_cifar10": 90,
}

#: Light augmentation per dataset: (largest random shift in pixels, random horizontal flips).
AUGMENTATION: dict[str, tuple[int, bool]] = {
    "mnist": (2, False),
    "fashion_mnist": (2, True),
    "cifar10": (4, True),
}

#: What the README says next to every CIFAR-10 number.
CIFAR_NOTE = (
    "trained on 20,000 CIFAR-10 images decoded from JPEG (quality 75, lossy) and tested on the JPEG-"
    "decoded test set, so lower accuracy than the paper's (full, exact CIFAR-10) is expected"
)

#: The embedded default data: how many MNIST test images, and the seed of the stratified choice.
DEFAULT_SLICE_SIZE = 2000
DEFAULT_SLICE_SEED = 0

#: Checkpoint file names inside ``<out>/checkpoints/<name>/``.
CHECKPOINT_MODEL = "last.keras"
CHECKPOINT_STATE = "state.json"

Builder = Callable[[tuple[int, ...], int], keras.Model]


# --------------------------------------------------------------------------------------------------
# Settings and data


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a training run; stored in checkpoints and in the final JSON.

    Adam with a cosine learning-rate decay from ``learning_rate`` to ``learning_rate * lr_floor`` over
    all steps; sparse categorical cross-entropy on the softmax output.
    """

    epochs: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_floor: float = 0.01
    shift: int = 0
    flip: bool = False
    seed: int = 0
    validation_fraction: float = 0.1
    deterministic: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return dataclasses.asdict(self)


def default_settings(dataset: str, epochs: int) -> TrainSettings:
    """The zoo's settings for ``dataset`` trained for ``epochs`` epochs."""
    shift, flip = AUGMENTATION[dataset]
    return TrainSettings(epochs=epochs, shift=shift, flip=flip)


@dataclass(frozen=True)
class TrainData:
    """Training, validation (last part of the training file) and test arrays, with their provenance."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape (H, W, C)."""
        return tuple(int(d) for d in self.x_train.shape[1:])


def load_training_data(dataset: str, data_dir: Path, validation_fraction: float) -> TrainData:
    """``<data_dir>/<dataset>.npz``: the training split minus its last ``validation_fraction``, that
    last part as validation data, and the full test split."""
    train = load_named(dataset, "train", data_dir)
    test = load_named(dataset, "test", data_dir)
    n_val = round(len(train) * validation_fraction)
    n_fit = len(train) - n_val
    path = data_dir / f"{dataset}.npz"
    return TrainData(
        x_train=train.x[:n_fit],
        y_train=train.y[:n_fit],
        x_val=train.x[n_fit:],
        y_val=train.y[n_fit:],
        x_test=test.x,
        y_test=test.y,
        description={
            "dataset": dataset,
            "file": path.name,
            "sha256": sha256_of(path),
            "train": f"x_train[0:{n_fit}] ({n_fit} images)",
            "validation": f"x_train[{n_fit}:{len(train)}] ({n_val} images, the last "
            f"{validation_fraction:.0%} of the training file, held out)",
            "test": f"x_test, all {len(test)} images",
        },
    )


def augment(x: np.ndarray, rng: np.random.Generator, shift: int, flip: bool) -> np.ndarray:
    """Random integer shifts of up to ``shift`` pixels (zero fill) and, if ``flip``, random mirroring.

    ``x`` is NHWC; the result has the same shape and dtype. Pure numpy and seeded by ``rng``.
    """
    out = x
    if flip:
        mirror = rng.random(len(x)) < 0.5
        out = out.copy()
        out[mirror] = out[mirror, :, ::-1]
    if shift > 0:
        n, h, w = x.shape[:3]
        padded = np.pad(out, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        dy = rng.integers(0, 2 * shift + 1, size=n)
        dx = rng.integers(0, 2 * shift + 1, size=n)
        rows = dy[:, None] + np.arange(h)[None, :]
        cols = dx[:, None] + np.arange(w)[None, :]
        out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out


def epoch_arrays(data: TrainData, settings: TrainSettings, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The shuffled, augmented training arrays of ``epoch`` (0-based), from ``default_rng([seed, epoch])``.

    Depending only on the seed and the epoch makes a resumed run see the same data as an
    uninterrupted one.
    """
    rng = np.random.default_rng([settings.seed, epoch])
    order = rng.permutation(len(data.y_train))
    x = augment(data.x_train[order], rng, settings.shift, settings.flip)
    return x.astype(np.float32), data.y_train[order]


# --------------------------------------------------------------------------------------------------
# Files


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then ``os.replace`` it: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """``model.save`` to a temp ``.keras`` file beside ``path``, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# Training


def compile_model(model: keras.Model, settings: TrainSettings, steps_per_epoch: int) -> None:
    """Adam with cosine decay over all ``epochs * steps_per_epoch`` steps (the schedule is saved with
    the optimizer, so a resumed run continues on the same curve)."""
    schedule = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, decay_steps=settings.epochs * steps_per_epoch, alpha=settings.lr_floor
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def reseed_random_layers(model: keras.Model, seed: int, epoch: int) -> None:
    """Set every random layer's seed state (Dropout) from ``(seed, epoch)``.

    Keras does not restore a SeedGenerator's state from a ``.keras`` file, so without this a resumed
    run would draw different dropout masks than an uninterrupted one.
    """
    generators = [
        value
        for layer in model.layers
        for value in vars(layer).values()
        if isinstance(value, keras.random.SeedGenerator)
    ]
    rng = np.random.default_rng([seed, epoch])
    for generator, value in zip(generators, rng.integers(0, 2**31 - 1, size=len(generators)), strict=True):
        generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))


def model_facts(model: keras.Model) -> dict[str, Any]:
    """Parameter counts, MACs per image and quantizable layers, measured on the built model."""
    layers = find_quantizable_layers(model)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": trainable,
        "non_trainable_parameters": int(model.count_params()) - trainable,
        "macs_per_image": sum(q.macs for q in layers),
        "quantizable_layers": len(layers),
    }


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on all of ``x`` (uint8 images go in as float32, batch by batch)."""
    correct = 0
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].astype(np.float32)
        scores = model.predict_on_batch(batch)
        correct += int((np.argmax(scores, axis=1) == y[start : start + batch_size]).sum())
    return correct / len(x)


def train_model(
    name: str,
    builder: Builder,
    data: TrainData,
    settings: TrainSettings,
    out_dir: Path,
    *,
    resume: bool,
    architecture: str,
    verbose: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Train ``name`` to ``settings.epochs``, checkpointing every epoch, and write its final files.

    Returns the final record, or None when ``<out_dir>/<name>.json`` already exists (finished models
    are skipped). An existing checkpoint is continued with ``resume=True`` and refused otherwise.
    """
    final_json = out_dir / f"{name}.json"
    if final_json.exists():
        log(f"{name}: finished already ({final_json}), skipped")
        return None
    ckpt_dir = out_dir / "checkpoints" / name
    ckpt_model, ckpt_state = ckpt_dir / CHECKPOINT_MODEL, ckpt_dir / CHECKPOINT_STATE
    steps_per_epoch = -(-len(data.y_train) // settings.batch_size)
    keras.utils.set_random_seed(settings.seed)
    if ckpt_state.exists():
        if not resume:
            raise SystemExit(
                f"{name}: a checkpoint exists in {ckpt_dir}; pass --resume to continue it or delete it"
            )
        state = json.loads(ckpt_state.read_text(encoding="utf-8"))
        if state["settings"] != settings.as_dict():
            raise SystemExit(
                f"{name}: the checkpoint in {ckpt_dir} was made with settings {state['settings']}, "
                f"not {settings.as_dict()}; use the same settings or delete the checkpoint"
            )
        model = keras.models.load_model(ckpt_model, compile=True)
        log(f"{name}: resuming after epoch {state['epochs_done']} of {settings.epochs}")
    else:
        state = {"name": name, "settings": settings.as_dict(), "epochs_done": 0, "history": []}
        model = builder(data.input_shape, 10)
        compile_model(model, settings, steps_per_epoch)
        log(f"{name}: training from scratch for {settings.epochs} epochs ({steps_per_epoch} steps each)")
    x_val = data.x_val.astype(np.float32)
    for epoch in range(state["epochs_done"], settings.epochs):
        x, y = epoch_arrays(data, settings, epoch)
        reseed_random_layers(model, settings.seed, epoch)
        start = time.perf_counter()
        fit = model.fit(
            x,
            y,
            batch_size=settings.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=(x_val, data.y_val) if len(data.y_val) else None,
            verbose=verbose,
        )
        seconds = time.perf_counter() - start
        metrics = {key: float(values[-1]) for key, values in fit.history.items()}
        state["history"].append({"epoch": epoch + 1, **metrics, "seconds": round(seconds, 2)})
        state["epochs_done"] = epoch + 1
        save_model_atomic(model, ckpt_model)
        write_json_atomic(ckpt_state, state)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        log(
            f"{name}: epoch {epoch + 1}/{settings.epochs} done in {seconds:.1f} s ({shown}); checkpoint saved"
        )
    return finish_model(name, builder, model, data, settings, state, out_dir, architecture, log)


def finish_model(
    name: str,
    builder: Builder,
    trained: keras.Model,
    data: TrainData,
    settings: TrainSettings,
    state: dict[str, Any],
    out_dir: Path,
    architecture: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Save the compile-free final model, measure it on the full test set and write its JSON record."""
    final = builder(data.input_shape, 10)
    final.set_weights(trained.get_weights())
    path = out_dir / f"{name}.keras"
    save_model_atomic(final, path)
    reloaded = keras.models.load_model(path, compile=False)
    test_accuracy = accuracy(reloaded, data.x_test, data.y_test)
    train_seconds = sum(entry["seconds"] for entry in state["history"])
    record = {
        "name": name,
        "architecture": architecture,
        "input_shape": list(data.input_shape),
        "classes": 10,
        **model_facts(reloaded),
        "training": {
            **settings.as_dict(),
            "optimizer": "Adam",
            "schedule": f"cosine decay over all steps to {settings.lr_floor:g} x the start rate",
            "loss": "sparse categorical cross-entropy",
            "augmentation": _augmentation_text(settings),
        },
        "data": data.description,
        "epochs": state["epochs_done"],
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(1, state["epochs_done"]), 1),
        "validation_accuracy": state["history"][-1].get("val_accuracy") if state["history"] else None,
        "test_accuracy": test_accuracy,
        "test_samples": len(data.y_test),
        "history": state["history"],
        "file": path.name,
        "sha256": sha256_of(path),
        "software": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        },
    }
    write_json_atomic(out_dir / f"{name}.json", record)
    log(f"{name}: finished, float test accuracy {test_accuracy:.4f} on {len(data.y_test)} images")
    return record


def _augmentation_text(settings: TrainSettings) -> str:
    """The augmentation in words."""
    parts = []
    if settings.shift:
        parts.append(f"random shifts up to {settings.shift} px (zero fill)")
    if settings.flip:
        parts.append("random horizontal flips")
    return ", ".join(parts) or "none"


# --------------------------------------------------------------------------------------------------
# The embedded default data


def make_default_slice(
    data_dir: Path, out_dir: Path, size: int = DEFAULT_SLICE_SIZE, seed: int = DEFAULT_SLICE_SEED
) -> dict[str, Any]:
    """``default_data.npz``: a stratified slice of the MNIST test set (keys ``x``, ``y``), deterministic.

    The indices are the search part of ``optsearch.data.split(mnist test, size / 10000, seed)``: per
    class a seeded permutation, the same fraction of each class, in ascending file order. They are
    stored with the source's sha256 in ``default_data.json``.
    """
    source = data_dir / "mnist.npz"
    test = load_named("mnist", "test", data_dir)
    fraction = size / len(test)
    positions = Dataset(x=np.arange(len(test)), y=test.y, source=test.source)
    indices = split(positions, search_fraction=fraction, seed=seed)[0].x
    part = test.subset(indices, " [embedded default slice]")
    path = out_dir / "default_data.npz"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".default_data.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, x=part.x.astype(np.uint8), y=part.y.astype(np.uint8))
    os.replace(tmp, path)
    provenance = {
        "file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "images": len(part),
        "shape": list(part.x.shape),
        "class_counts": np.bincount(part.y, minlength=10).tolist(),
        "source_file": "mnist.npz (x_test, y_test), see ../shared/datasets/README.md",
        "source_sha256": sha256_of(source),
        "rule": (
            f"optsearch.data.split(mnist test, search_fraction={fraction:g}, seed={seed}): per class a "
            f"numpy default_rng permutation, the first {fraction:.0%} of each class, ascending file order"
        ),
        "indices": indices.tolist(),
    }
    write_json_atomic(out_dir / "default_data.json", provenance)
    return provenance


# --------------------------------------------------------------------------------------------------
# models/README.md


def render_readme(out_dir: Path) -> str:
    """The zoo's README from every finished ``<name>.json`` (and ``default_data.json``) in ``out_dir``."""
    records = {}
    for arch, dataset in MODEL_ORDER:
        path = out_dir / f"{arch}_{dataset}.json"
        if path.exists():
            records[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    lines = [
        "# Model zoo",
        "",
        "The paper's two architectures (spec §9) and the modern embedded reference nets ResNet-8 "
        "(MLPerf Tiny) and MobileNetV1-0.25 (built by `optsearch.model.zoo`) trained by "
        "`scripts/train_zoo.py`. Every number below is written by that script from its measurements; "
        "do not edit this file by hand. Models take raw uint8 images (rescaling and resizing are inside "
        "the model) and end in a linear `logits` Dense followed by a separate `softmax` layer.",
        "",
        "| model | params | MACs / image | quantizable layers | epochs | train time | s / epoch "
        "| float test accuracy | sha256 of .keras |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for arch, dataset in MODEL_ORDER:
        name = f"{arch}_{dataset}"
        rec = records.get(name)
        if rec is None:
            lines.append(f"| `{name}` | | | | | not trained yet | | | |")
            continue
        note = " (*)" if dataset == "cifar10" else ""
        lines.append(
            f"| `{name}.keras` | {rec['parameters']:,} | {rec['macs_per_image'] / 1e6:.2f} M "
            f"| {rec['quantizable_layers']} | {rec['epochs']} | {_duration(rec['train_seconds'])} "
            f"| {rec['seconds_per_epoch']:.0f} | {rec['test_accuracy']:.2%}{note} "
            f"| `{rec['sha256']}` |"
        )
    lines += [
        "| `*_svhn` | | | | | not available offline | | | |",
        "",
        f"(*) CIFAR-10: {CIFAR_NOTE}.",
        "",
        "SVHN: the cropped-digit files are not available on these machines, so no SVHN models are "
        "trained. The loader supports the official `train_32x32.mat` / `test_32x32.mat` "
        "(`optsearch.data.load_named('svhn', split)`, from `$OPTSEARCH_DATA` or its `svhn/` folder), "
        "so users who have them can train and search SVHN models the same way.",
        "",
        "Accuracy is the float model's top-1 accuracy on the full test set of its dataset, measured "
        "on the saved `.keras` file. Parameters count BatchNorm's moving statistics (non-trainable); "
        "MACs are the multiply-accumulates per image of the quantizable layers "
        "(`optsearch.model.graph.find_quantizable_layers`).",
        "",
    ]
    if records:
        lines += _training_section(records)
    default = out_dir / "default_data.json"
    if default.exists():
        lines += _default_data_section(json.loads(default.read_text(encoding="utf-8")))
    return "\n".join(lines)


def _training_section(records: dict[str, dict[str, Any]]) -> list[str]:
    """A table of training settings and data per finished model."""
    lines = [
        "## Training",
        "",
        "Adam on sparse categorical cross-entropy, batch size as below, the learning rate "
        "cosine-decayed over all steps from the start to the end rate below; deterministic seeds "
        "(`keras.utils.set_random_seed`, TensorFlow op determinism); each epoch's order and "
        "augmentation drawn from `numpy.random.default_rng([seed, epoch])`. The last 10% of each "
        "training file is held out for validation (never trained on).",
        "",
        "| model | architecture | input | epochs | batch | start lr | end lr | augmentation | seed "
        "| final val. accuracy | data file (sha256) | train / validation / test |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for name, rec in records.items():
        t, d = rec["training"], rec["data"]
        val = rec.get("validation_accuracy")
        lines.append(
            f"| `{name}` | {rec['architecture']} | {'x'.join(map(str, rec['input_shape']))} "
            f"| {rec['epochs']} | {t['batch_size']} | {t['learning_rate']:g} "
            f"| {t['learning_rate'] * t['lr_floor']:g} | {t['augmentation']} "
            f"| {t['seed']} | {'' if val is None else f'{val:.2%}'} | `{d['file']}` (`{d['sha256'][:16]}…`) "
            f"| {d['train']} / {d['validation']} / {d['test']} |"
        )
    software = next(iter(records.values()))["software"]
    lines += [
        "",
        f"Trained with TensorFlow {software['tensorflow']}, Keras {software['keras']}, Python "
        f"{software['python']} on {software['machine']}; the per-epoch history is in each model's JSON file.",
        "",
    ]
    return lines


def _default_data_section(info: dict[str, Any]) -> list[str]:
    """Provenance of the embedded default data slice."""
    return [
        "## Embedded default data",
        "",
        f"`{info['file']}` ({info['bytes']:,} bytes, sha256 `{info['sha256']}`): {info['images']:,} "
        f"MNIST test images, uint8 {tuple(info['shape'])}, keys `x` and `y`, with "
        f"`sequential_mnist.keras` the default model of `optsearch run`.",
        "",
        f"- Source: {info['source_file']}, sha256 `{info['source_sha256']}`.",
        f"- Selection: {info['rule']}; images per class 0..9: {', '.join(map(str, info['class_counts']))}.",
        "- The test-set indices, in order, are listed in `default_data.json` (`indices`).",
        "",
    ]


def _duration(seconds: float) -> str:
    """``1 h 05 min`` or ``12 min``."""
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def write_readme(out_dir: Path) -> None:
    """(Re)write ``<out_dir>/README.md`` from the finished models."""
    write_text_atomic(out_dir / "README.md", render_readme(out_dir))


# --------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [f"{arch}_{dataset}" for arch, dataset in MODEL_ORDER]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=names, action="append", help="train only this model (repeatable)")
    parser.add_argument("--epochs", type=int, help="epochs for every model trained (default: per model)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: models/)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR),
        help=f"folder with <dataset>.npz (default: ${DATA_DIR_ENV} or ../shared/datasets)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--make-default-slice", action="store_true", help="write default_data.npz and stop")
    parser.add_argument("--readme-only", action="store_true", help="only rewrite README.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir: Path = args.out
    log = _stamped_log
    if args.make_default_slice:
        info = make_default_slice(args.data_dir, out_dir)
        log(f"wrote {out_dir / info['file']} ({info['images']} images, {info['bytes']:,} bytes)")
        write_readme(out_dir)
        return 0
    if args.readme_only:
        write_readme(out_dir)
        return 0
    tf.config.experimental.enable_op_determinism()
    verbose = 1 if sys.stdout.isatty() else 2
    for arch, dataset in MODEL_ORDER:
        name = f"{arch}_{dataset}"
        if args.only and name not in args.only:
            continue
        if (out_dir / f"{name}.json").exists():
            log(f"{name}: finished already, skipped")
            continue
        settings = dataclasses.replace(
            default_settings(dataset, args.epochs or DEFAULT_EPOCHS[name]), seed=args.seed
        )
        data = load_training_data(dataset, args.data_dir, settings.validation_fraction)

        def builder(shape: tuple[int, ...], classes: int, arch: str = arch) -> keras.Model:
            return zoo.build(arch, shape, classes)

        train_model(
            name,
            builder,
            data,
            settings,
            out_dir,
            resume=args.resume,
            architecture=arch,
            verbose=verbose,
            log=log,
        )
        write_readme(out_dir)
    return 0


def _stamped_log(message: str) -> None:
    """Print ``message`` with a time stamp, flushed (the log is read while training runs)."""
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
