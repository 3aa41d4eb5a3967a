"""scripts/train_zoo.py on a tiny model and tiny data: checkpoints, resume after a kill, skipping, README."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import keras
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_zoo.py"
L = keras.layers


@pytest.fixture(scope="module")
def tz() -> ModuleType:
    """The training script imported as a module."""
    spec = importlib.util.spec_from_file_location("train_zoo", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_zoo"] = module
    spec.loader.exec_module(module)
    return module


def _tiny(shape: tuple[int, ...], classes: int) -> keras.Model:
    """Conv(relu) -> BN -> pool -> Dropout -> Dense -> Softmax, a few hundred parameters."""
    inputs = keras.Input(shape)
    x = L.Rescaling(1 / 255)(inputs)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.GlobalMaxPooling2D()(x)
    x = L.Dropout(0.25)(x)
    x = L.Dense(classes, name="logits")(x)
    return keras.Model(inputs, L.Softmax(name="softmax")(x))


def _data(tz: ModuleType) -> object:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=96)
    return tz.TrainData(x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:], {"dataset": "tiny"})


def _train(tz: ModuleType, out: Path, epochs: int, resume: bool) -> dict | None:
    settings = tz.TrainSettings(epochs=epochs, batch_size=16, shift=1, flip=True)
    return tz.train_model(
        "tiny_set",
        _tiny,
        _data(tz),
        settings,
        out,
        resume=resume,
        architecture="tiny",
        verbose=0,
        log=lambda _: None,
    )


def test_resume_after_kill_matches_an_uninterrupted_run(tz: ModuleType, tmp_path: Path) -> None:
    """Kill a 2-epoch run right after epoch 1's checkpoint, resume: same result as 2 epochs straight."""
    straight = _train(tz, tmp_path / "straight", epochs=2, resume=False)
    assert straight is not None and straight["epochs"] == 2

    first = tmp_path / "first"
    _train_one_epoch_checkpoint(tz, first)
    ckpt = first / "checkpoints" / "tiny_set"
    ckpt_state = json.loads((ckpt / "state.json").read_text())
    assert ckpt_state["epochs_done"] == 1 and len(ckpt_state["history"]) == 1
    optimizer_steps = keras.models.load_model(ckpt / "last.keras").optimizer.iterations.numpy()
    assert optimizer_steps == 4  # 64 samples / batch 16: the optimizer state is in the checkpoint

    resumed = _train(tz, first, epochs=2, resume=True)
    assert resumed is not None
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == ckpt_state["history"][0]  # epoch 1 was not trained again
    final_straight = keras.models.load_model(tmp_path / "straight" / "tiny_set.keras", compile=False)
    final_resumed = keras.models.load_model(first / "tiny_set.keras", compile=False)
    for a, b in zip(final_straight.get_weights(), final_resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def _train_one_epoch_checkpoint(tz: ModuleType, out: Path) -> None:
    """Leave only the epoch-1 checkpoint of a 2-epoch run, as a kill after epoch 1 would."""

    class Killed(Exception):
        pass

    def log(message: str) -> None:
        if "epoch 1/2 done" in message:
            raise Killed

    settings = tz.TrainSettings(epochs=2, batch_size=16, shift=1, flip=True)
    with pytest.raises(Killed):
        tz.train_model(
            "tiny_set",
            _tiny,
            _data(tz),
            settings,
            out,
            resume=False,
            architecture="tiny",
            verbose=0,
            log=log,
        )
    assert not (out / "tiny_set.json").exists()


def test_finished_model_is_skipped_and_checkpoint_needs_resume(tz: ModuleType, tmp_path: Path) -> None:
    record = _train(tz, tmp_path, epochs=1, resume=False)
    assert record is not None
    written = (tmp_path / "tiny_set.json").read_text()
    assert _train(tz, tmp_path, epochs=1, resume=True) is None
    assert (tmp_path / "tiny_set.json").read_text() == written
    (tmp_path / "tiny_set.json").unlink()
    with pytest.raises(SystemExit, match="--resume"):
        _train(tz, tmp_path, epochs=1, resume=False)


def test_final_record_and_files(tz: ModuleType, tmp_path: Path) -> None:
    record = _train(tz, tmp_path, epochs=1, resume=False)
    assert record is not None
    assert record["sha256"] == tz.sha256_of(tmp_path / "tiny_set.keras")
    assert record["parameters"] == _tiny((8, 8, 1), 10).count_params()
    assert record["quantizable_layers"] == 2
    model = keras.models.load_model(tmp_path / "tiny_set.keras", compile=False)
    assert getattr(model, "optimizer", None) is None  # the final file has no optimizer state
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["test_samples"] == 16
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_augment_shapes_and_determinism(tz: ModuleType) -> None:
    x = np.arange(2 * 5 * 5 * 1, dtype=np.uint8).reshape(2, 5, 5, 1)
    a = tz.augment(x, np.random.default_rng(3), shift=2, flip=True)
    b = tz.augment(x, np.random.default_rng(3), shift=2, flip=True)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tz.augment(x, np.random.default_rng(0), shift=0, flip=False), x)


def test_augment_shift_moves_content(tz: ModuleType) -> None:
    """A single bright pixel lands within ``shift`` of where it was, the rest stays zero."""
    x = np.zeros((50, 7, 7, 1), dtype=np.uint8)
    x[:, 3, 3, 0] = 255
    out = tz.augment(x, np.random.default_rng(0), shift=2, flip=False)
    for image in out[..., 0]:
        (r,), (c,) = np.nonzero(image)
        assert abs(r - 3) <= 2 and abs(c - 3) <= 2


def test_readme_renders_finished_models_and_gaps(tz: ModuleType, tmp_path: Path) -> None:
    rec = {
        "name": "sequential_cifar10",
        "architecture": "sequential",
        "input_shape": [32, 32, 3],
        "parameters": 327594,
        "macs_per_image": 52867072,
        "quantizable_layers": 15,
        "epochs": 3,
        "train_seconds": 600.0,
        "seconds_per_epoch": 200.0,
        "test_accuracy": 0.5,
        "validation_accuracy": 0.49,
        "sha256": "ab" * 32,
        "training": {
            "batch_size": 128,
            "learning_rate": 0.001,
            "lr_floor": 0.01,
            "augmentation": "none",
            "seed": 0,
        },
        "data": {"file": "cifar10.npz", "sha256": "cd" * 32, "train": "a", "validation": "b", "test": "c"},
        "software": {"tensorflow": "x", "keras": "y", "python": "z", "machine": "m"},
    }
    (tmp_path / "sequential_cifar10.json").write_text(json.dumps(rec))
    text = tz.render_readme(tmp_path)
    assert "| `sequential_cifar10.keras` | 327,594 | 52.87 M | 15 | 3 | 10 min | 200 | 50.00% (*)" in text
    assert "JPEG" in text and "not available offline" in text and "train_32x32.mat" in text
    assert "| `sequential_mnist` | | | | | not trained yet" in text
    assert "| `resnet8_cifar10` | | | | | not trained yet" in text
    assert "| `mobilenet_v1_cifar10` | | | | | not trained yet" in text
    rows = [line for line in text.splitlines() if line.startswith("| `") and "_svhn" not in line]
    assert len(rows) == 8 + 1  # eight zoo rows, one training row
    assert "| 128 | 0.001 | 1e-05 | none | 0 | 49.00% |" in text


def test_default_slice_is_stratified_and_deterministic(tz: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 30)
    x = rng.integers(0, 256, size=(300, 4, 4, 1), dtype=np.uint8)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    np.savez_compressed(data_dir / "mnist.npz", x_train=x[:10], y_train=y[:10], x_test=x, y_test=y)
    info = tz.make_default_slice(data_dir, tmp_path / "a", size=60)
    again = tz.make_default_slice(data_dir, tmp_path / "b", size=60)
    assert info["indices"] == again["indices"] and info["class_counts"] == [6] * 10
    with np.load(tmp_path / "a" / "default_data.npz") as archive:
        assert sorted(archive.files) == ["x", "y"]
        np.testing.assert_array_equal(archive["x"], x[info["indices"]])
        np.testing.assert_array_equal(archive["y"], y[info["indices"]])
        assert archive["x"].dtype == np.uint8


def test_reference_nets_are_trained_on_cifar10_only(tz: ModuleType) -> None:
    """ResNet-8 and MobileNetV1-0.25 come after the paper's six, on CIFAR-10, with CIFAR-10 settings."""
    names = [f"{arch}_{dataset}" for arch, dataset in tz.MODEL_ORDER]
    assert names[:6] == [
        "sequential_mnist",
        "sequential_fashion_mnist",
        "sequential_cifar10",
        "branched_mnist",
        "branched_fashion_mnist",
        "branched_cifar10",
    ]
    assert names[6:] == ["resnet8_cifar10", "mobilenet_v1_cifar10"]
    assert set(tz.DEFAULT_EPOCHS) == set(names)
    args = tz.parse_args(["--only", "resnet8_cifar10", "--only", "mobilenet_v1_cifar10"])
    assert args.only == ["resnet8_cifar10", "mobilenet_v1_cifar10"]
    with pytest.raises(SystemExit):
        tz.parse_args(["--only", "resnet8_mnist"])
    settings = tz.default_settings("cifar10", 3)
    assert (settings.shift, settings.flip) == (4, True)
