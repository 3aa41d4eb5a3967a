"""Data the way users keep it: image folders (Keras' layout and label order), label-free calibration
(an .npz with only x, a folder without class subfolders), and the bad folders, refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from optsearch.cli.main import cli
from optsearch.core.errors import DataError
from optsearch.data import (
    MODEL_LABELS,
    Dataset,
    ImageOptions,
    Unlabelled,
    load_data,
    load_image_folder,
    load_npz,
    load_samples,
)

#: Class folders named so that Keras' order (Python's sorted strings) is not the natural one.
CLASSES = {"cat": 3, "Dog": 2, "10": 4}
KERAS_ORDER = ("10", "Dog", "cat")


def _run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)


def _class_folder(root: Path, size: tuple[int, int] = (8, 8), channels: int = 3, seed: int = 0) -> Path:
    """CLASSES as subfolders of random images; one image sits a folder deeper, and a .DS_Store is ignored."""
    rng = np.random.default_rng(seed)
    for name, count in CLASSES.items():
        for i in range(count):
            where = root / name / ("deeper" if i == 0 else "") / f"img{i}.png"
            _png(where, rng.integers(0, 256, size=(*size, channels), dtype=np.uint8))
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def _keras_reads(folder: Path, size: tuple[int, int], color_mode: str, labelled: bool = True) -> tuple:
    """What keras.utils.image_dataset_from_directory gives, unshuffled: classes, files, images, labels."""
    ds = keras.utils.image_dataset_from_directory(
        str(folder),
        labels="inferred" if labelled else None,
        color_mode=color_mode,
        image_size=size,
        batch_size=None,
        shuffle=False,
        verbose=False,
    )
    elements = list(ds.as_numpy_iterator())
    images = np.stack([e[0] if labelled else e for e in elements])
    labels = np.array([e[1] for e in elements]) if labelled else None
    return (ds.class_names if labelled else None), list(ds.file_paths), images, labels


# --------------------------------------------------------------------------------------------------
# Reading folders


def test_class_folders_load_in_keras_label_order(tmp_path: Path) -> None:
    folder = _class_folder(tmp_path / "pets")
    ds = load_image_folder(folder, ImageOptions.for_input_shape((8, 8, 3)))
    assert isinstance(ds, Dataset)
    assert ds.class_names == KERAS_ORDER  # sorted as strings: '10' < 'Dog' < 'cat'
    assert ds.x.shape == (9, 8, 8, 3) and ds.x.dtype == np.uint8 and ds.y.dtype == np.int64
    assert ds.y.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    class_names, _, images, labels = _keras_reads(folder, (8, 8), "rgb")
    assert tuple(class_names) == ds.class_names
    np.testing.assert_array_equal(ds.y, labels)
    np.testing.assert_array_equal(ds.x, images)  # the same pixels, in the same order
    assert ds.source.startswith(str(folder)) and "9 images" in ds.source and "3 classes" in ds.source


def test_images_are_resized_to_the_model_input_as_keras_does(tmp_path: Path) -> None:
    folder = _class_folder(tmp_path / "pets", size=(12, 10))
    ds = load_image_folder(folder, ImageOptions.for_input_shape((8, 8, 3)))
    assert ds.x.shape == (9, 8, 8, 3) and ds.x.dtype == np.float32  # bilinear made fractions
    _, _, images, _ = _keras_reads(folder, (8, 8), "rgb")
    np.testing.assert_array_equal(ds.x, images)


def test_colour_mode_and_layout_follow_the_model_input(tmp_path: Path) -> None:
    folder = _class_folder(tmp_path / "pets", channels=3)
    gray = load_image_folder(folder, ImageOptions.for_input_shape((8, 8, 1)))
    assert gray.x.shape == (9, 8, 8, 1) and gray.x.dtype == np.uint8
    np.testing.assert_array_equal(gray.x, _keras_reads(folder, (8, 8), "grayscale")[2])
    assert load_image_folder(folder, ImageOptions.for_input_shape((8, 8))).x.shape == (9, 8, 8)
    assert load_image_folder(folder, ImageOptions.for_input_shape((8, 8, 4))).x.shape == (9, 8, 8, 4)
    with pytest.raises(DataError, match=r"pets: the model's input \(8, 8, 2\) has 2 channels"):
        load_image_folder(folder, ImageOptions.for_input_shape((8, 8, 2)))


def test_a_model_that_resizes_itself_gets_the_images_at_their_size(tmp_path: Path) -> None:
    folder = _class_folder(tmp_path / "pets", size=(12, 10))
    free = ImageOptions.for_input_shape((None, None, 3))
    assert load_image_folder(folder, free).x.shape == (9, 12, 10, 3)
    assert load_image_folder(folder, ImageOptions.for_input_shape((None, None, 3), (6, 6))).x.shape[1:3] == (
        6,
        6,
    )
    _png(folder / "cat" / "big.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DataError, match=r"images of different sizes .*big\.png is 20x20.*--resize H W"):
        load_image_folder(folder, free)


def test_label_free_folder_and_npz_are_unlabelled(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(4):
        _png(tmp_path / "calib" / f"{i}.png", rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    samples = load_samples(str(tmp_path / "calib"), images=ImageOptions.for_input_shape((8, 8, 3)))
    assert isinstance(samples, Unlabelled) and samples.x.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(
        samples.x, _keras_reads(tmp_path / "calib", (8, 8), "rgb", labelled=False)[2]
    )
    np.savez(tmp_path / "x_only.npz", x=samples.x)
    from_npz = load_samples(str(tmp_path / "x_only.npz"))
    assert isinstance(from_npz, Unlabelled) and len(from_npz) == 4
    labelled = from_npz.labelled(np.array([2, 0, 1, 1]))
    assert labelled.y.tolist() == [2, 0, 1, 1] and labelled.source.endswith(f"({MODEL_LABELS})")
    for load in (lambda: load_npz(tmp_path / "x_only.npz"), lambda: load_data(str(tmp_path / "calib"))):
        with pytest.raises(DataError, match=r"has no labels.*the float model's own predictions"):
            load()


def test_a_bare_dataset_name_stays_a_name_when_a_folder_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 4, 4), np.uint8), y_test=np.array([0, 1]))
    monkeypatch.chdir(tmp_path)
    assert load_data("mnist", data_dir=tmp_path).x.shape == (2, 4, 4, 1)
    with pytest.raises(DataError, match="the folder is empty"):
        load_data("./mnist")


# --------------------------------------------------------------------------------------------------
# optsearch run on folders and label-free data


def _gray_folder(root: Path, classes: tuple[str, ...] | None, n: int = 12) -> Path:
    """Grayscale 8x8 images for the `files` fixture's model, in class folders or loose (classes None)."""
    rng = np.random.default_rng(2)
    for i in range(n):
        where = root / (classes[i % len(classes)] if classes else "") / f"{i:02d}.png"
        _png(where, rng.integers(0, 256, size=(8, 8, 1), dtype=np.uint8))
    return root


def _search_accuracy(out: Path) -> tuple[float, str]:
    recorded = json.loads((out / "formats.json").read_text())
    return recorded["accuracy"]["search"]["float_model"], recorded["data"]["source"]


def test_run_on_a_class_folder(files: dict[str, Path], tmp_path: Path) -> None:
    folder = _gray_folder(tmp_path / "digits", ("a", "b", "c"))
    out = tmp_path / "out"
    result = _run(
        "run",
        files["model"],
        "--data",
        folder,
        "--out",
        out,
        "--criterion",
        "paper",
        "--search-fraction",
        "1.0",
    )
    assert result.exit_code == 0, result.output
    _, source = _search_accuracy(out)
    assert source.startswith(str(folder)) and "12 images" in source and MODEL_LABELS not in source


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_run_on_label_free_data_reports_float_accuracy_100(
    files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    if kind == "npz":
        data = tmp_path / "calib.npz"
        np.savez(data, x=np.load(files["data"])["x"][:40])
    else:
        data = _gray_folder(tmp_path / "calib", None, n=20)
    out = tmp_path / "out"
    result = _run(
        "run",
        files["model"],
        "--data",
        data,
        "--out",
        out,
        "--criterion",
        "paper",
        "--search-fraction",
        "1.0",
    )
    assert result.exit_code == 0, result.output
    accuracy, source = _search_accuracy(out)
    assert accuracy == 1.0 and "float accuracy on the search set: 100.00%" in result.output
    assert source.endswith(f"({MODEL_LABELS})")
    assert MODEL_LABELS in (out / "report.md").read_text()
    assert "labels: the float model's own predictions (accuracy = agreement" in result.output
    # verify and export take the run's own data, folder or label-free npz alike
    verified = _run("verify", out)
    assert verified.exit_code in (0, 1) and "samples of" in verified.output, verified.output
    assert "top-1 accuracy" not in verified.output  # no labels: the two networks are compared
    refused = _run("verify", out, "--part", "held-out")
    assert refused.exit_code == 2
    exported = _run("export", out, "--to", "c")
    assert exported.exit_code == 0, exported.output


def test_prepare_flags_labels_from_the_model(files: dict[str, Path], tmp_path: Path) -> None:
    from optsearch.run.inputs import prepare
    from optsearch.settings import DataSettings

    np.savez(tmp_path / "calib.npz", x=np.load(files["data"])["x"][:30])
    inputs = prepare(files["model"], DataSettings(str(tmp_path / "calib.npz"), search_fraction=1.0))
    assert inputs.labels_from_model and MODEL_LABELS in inputs.search.source
    scores = inputs.model.predict(inputs.search.x.astype(np.float32), verbose=0)
    np.testing.assert_array_equal(inputs.search.y, np.argmax(scores, axis=1))
    labelled = prepare(files["model"], DataSettings(str(files["data"]), search_fraction=1.0))
    assert not labelled.labels_from_model


# --------------------------------------------------------------------------------------------------
# Bad folders: one line naming the file or folder, exit 2, nothing written


def _empty_folder(root: Path) -> str:
    root.mkdir()
    (root / ".DS_Store").write_bytes(b"")
    return "data: the folder is empty"


def _non_image_file(root: Path) -> str:
    _gray_folder(root, ("a", "b", "c"))
    (root / "b" / "notes.txt").write_text("not a picture")
    return "data/b/notes.txt: not an image file"


def _unreadable_image(root: Path) -> str:
    _gray_folder(root, ("a", "b", "c"))
    (root / "c" / "05x.png").write_bytes(b"these bytes are no PNG")
    return "data/c/05x.png: not a readable image (Unknown image file format"


def _class_without_images(root: Path) -> str:
    _gray_folder(root, ("a", "b", "c"))
    (root / "empty" / "sub").mkdir(parents=True)
    return "data/empty: class folder 'empty' holds no images"


def _classes_do_not_match(root: Path) -> str:
    _gray_folder(root, ("a", "b"))
    return "2 class folders (a, b) but the model has 3 outputs"


def _subfolders_and_loose_images(root: Path) -> str:
    _gray_folder(root, ("a", "b", "c"))
    _png(root / "stray.png", np.zeros((8, 8, 1), np.uint8))
    return "data: holds class subfolders (a, b, c) and loose files (stray.png) side by side"


BAD_FOLDERS = {
    "empty_folder": _empty_folder,
    "non_image_file": _non_image_file,
    "unreadable_image": _unreadable_image,
    "class_without_images": _class_without_images,
    "classes_do_not_match_outputs": _classes_do_not_match,
    "subfolders_and_loose_images": _subfolders_and_loose_images,
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folder_is_refused_with_one_line(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    folder = tmp_path / "data"
    fragment = BAD_FOLDERS[case](folder)
    result = _run("run", files["model"], "--data", folder, "--out", tmp_path / "out", "--criterion", "paper")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    assert str(folder) in lines[0] and fragment.replace("data", str(folder), 1) in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no output folder, no work folder
