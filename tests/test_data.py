"""optsearch.data: loading (npz, named, keras fallback, SVHN .mat), labels, validation, split, batches."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optsearch import data
from optsearch.core.errors import DataError
from optsearch.data import (
    DATASET_NAMES,
    Dataset,
    Preprocess,
    batches,
    fit_channel_axis,
    load_data,
    load_named,
    load_npz,
    split,
    to_class_indices,
    validate,
)

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _images(n: int, shape: tuple[int, ...] = (4, 4, 1), seed: int = 0) -> np.ndarray:
    """Small random uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _dataset(y: np.ndarray | list[int], shape: tuple[int, ...] = (4, 4, 1), dtype: str = "uint8") -> Dataset:
    """A Dataset whose sample i is filled with the value i (so subsets can be traced back)."""
    y = np.asarray(y, dtype=np.int64)
    x = np.broadcast_to(np.arange(len(y)).reshape(-1, *[1] * len(shape)), (len(y), *shape)).astype(dtype)
    return Dataset(x=x, y=y, source="test set")


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own OPTSEARCH_DATA."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


# --------------------------------------------------------------------------------------------------
# load_npz


def test_load_npz_reads_x_and_y(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = _images(6)
    np.savez(path, x=x, y=np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8))
    ds = load_npz(path)
    assert np.array_equal(ds.x, x) and ds.x.dtype == np.uint8
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert len(ds) == 6 and str(path) in ds.source


def test_load_npz_reads_x_test_and_prefers_x_y(tmp_path: Path) -> None:
    only_test = tmp_path / "test.npz"
    np.savez(only_test, x_test=_images(3), y_test=np.array([2, 1, 0]))
    assert load_npz(only_test).y.tolist() == [2, 1, 0]

    both = tmp_path / "both.npz"
    np.savez_compressed(both, x=_images(2), y=np.array([1, 1]), x_test=_images(3), y_test=np.array([0, 0, 0]))
    assert load_npz(both).y.tolist() == [1, 1]


def test_load_npz_one_hot_labels(tmp_path: Path) -> None:
    path = tmp_path / "onehot.npz"
    np.savez(path, x=_images(3), y=np.eye(4, dtype=np.float32)[[3, 0, 2]])
    assert load_npz(path).y.tolist() == [3, 0, 2]


def test_load_npz_refuses_pickle(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"obj\.npz.*pickle"):
        load_npz(path)


def test_load_npz_missing_keys_lists_found_and_expected(tmp_path: Path) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, images=_images(2), labels=np.array([0, 1]))
    with pytest.raises(DataError, match=r"keys\.npz") as info:
        load_npz(path)
    message = str(info.value)
    assert "images" in message and "labels" in message
    assert "x/y" in message and "x_test/y_test" in message


def test_load_npz_not_an_npz(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(DataError, match=r"notes\.npz is not an \.npz archive"):
        load_npz(text)
    npy = tmp_path / "array.npz"
    with npy.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        load_npz(npy)


def test_load_npz_zip_with_broken_member(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", b"garbage")
        archive.writestr("y.npy", b"garbage")
    with pytest.raises(DataError, match=r"broken\.npz could not be read"):
        load_npz(path)


def test_load_npz_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*nope\.npz"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(DataError, match="not a file"):
        load_npz(tmp_path)


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(DataError) as info:
        load_npz(path)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# load_named / load_data


def _write_named(folder: Path, name: str, n_train: int = 5, n_test: int = 3, shape=(28, 28)) -> None:
    """A small ``<name>.npz`` in the shared-datasets layout (x_train, y_train, x_test, y_test)."""
    np.savez(
        folder / f"{name}.npz",
        x_train=_images(n_train, shape),
        y_train=np.arange(n_train, dtype=np.uint8) % 10,
        x_test=_images(n_test, shape, seed=1),
        y_test=np.arange(n_test, dtype=np.uint8)[::-1],
    )


def test_load_named_from_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_named(tmp_path, "mnist")
    monkeypatch.setenv("OPTSEARCH_DATA", str(tmp_path))
    ds = load_named("mnist")
    assert ds.x.shape == (3, 28, 28, 1)  # the channel axis is added to (N, 28, 28)
    assert ds.y.tolist() == [2, 1, 0]
    assert ds.source.startswith("mnist test") and "mnist.npz" in ds.source


def test_load_named_train_split_and_explicit_dir(tmp_path: Path) -> None:
    _write_named(tmp_path, "cifar10", shape=(32, 32, 3))
    ds = load_data("cifar10:train", data_dir=tmp_path)
    assert ds.x.shape == (5, 32, 32, 3) and ds.source.startswith("cifar10 train")
    assert load_named("CIFAR10", "test", data_dir=str(tmp_path)).x.shape == (3, 32, 32, 3)


def test_load_data_mnist_train_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_named(tmp_path, "mnist")
    monkeypatch.setenv("OPTSEARCH_DATA", str(tmp_path))
    assert len(load_data("mnist:train")) == 5
    assert len(load_data("mnist")) == 3


def test_load_named_npz_missing_split_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "mnist.npz", x_test=_images(2), y_test=np.array([0, 1]))
    with pytest.raises(DataError, match=r"x_train/y_train"):
        load_named("mnist", "train", data_dir=tmp_path)


def test_load_data_path_spec(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    np.savez(path, x=_images(2), y=np.array([0, 1]))
    assert len(load_data(str(path))) == 2


def test_unknown_name_and_split() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as info:
        load_data("imagenet")
    assert all(name in str(info.value) for name in DATASET_NAMES)
    with pytest.raises(DataError, match=r"unknown split 'val'.*train, test"):
        load_data("mnist:val")
    with pytest.raises(DataError, match="empty split"):
        load_data("mnist:")


def test_keras_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def fake_load_data():
        train = (np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 2, 3], np.uint8))
        test = (np.ones((2, 28, 28), np.uint8), np.array([9, 8], np.uint8))
        return train, test

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", fake_load_data)
    ds = load_named("fashion_mnist", data_dir=tmp_path)  # folder without fashion_mnist.npz
    assert ds.x.shape == (2, 28, 28, 1) and ds.y.tolist() == [9, 8]
    assert "keras.datasets" in ds.source
    assert load_named("fashion_mnist", "train").y.tolist() == [0, 1, 2, 3]


def test_keras_fallback_cifar_column_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def fake_load_data():
        x = np.zeros((3, 32, 32, 3), np.uint8)
        return (x, np.array([[1], [2], [3]])), (x, np.array([[7], [0], [5]]))

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake_load_data)
    ds = load_named("cifar10")
    assert ds.x.shape == (3, 32, 32, 3) and ds.y.tolist() == [7, 0, 5]


def test_keras_download_failure_is_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def offline():
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    monkeypatch.setenv("OPTSEARCH_DATA", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_named("mnist")
    message = str(info.value)
    assert "mnist" in message and "could not be downloaded" in message
    assert "OPTSEARCH_DATA" in message and "mnist.npz" in message and "\n" not in message


# --------------------------------------------------------------------------------------------------
# SVHN


def _write_svhn_mat(path: Path, labels: list[int]) -> np.ndarray:
    """A tiny SVHN-layout .mat file: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    savemat = pytest.importorskip("scipy.io", reason="scipy is needed to write SVHN .mat files").savemat
    n = len(labels)
    x_nhwc = np.random.default_rng(3).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    savemat(path, {"X": np.transpose(x_nhwc, (1, 2, 3, 0)), "y": np.array(labels, np.uint8).reshape(n, 1)})
    return x_nhwc


def test_svhn_mat_round_trip(tmp_path: Path) -> None:
    x_nhwc = _write_svhn_mat(tmp_path / "test_32x32.mat", [10, 1, 9, 10])
    ds = load_named("svhn", data_dir=tmp_path)
    assert ds.x.shape == (4, 32, 32, 3) and ds.x.dtype == np.uint8
    assert np.array_equal(ds.x, x_nhwc)
    assert ds.y.tolist() == [0, 1, 9, 0]


def test_svhn_in_subfolder_train_split(tmp_path: Path) -> None:
    (tmp_path / "svhn").mkdir()
    _write_svhn_mat(tmp_path / "svhn" / "train_32x32.mat", [3, 10])
    assert load_data("svhn:train", data_dir=tmp_path).y.tolist() == [3, 0]


def test_svhn_conversion_without_scipy() -> None:
    x_nhwc = _images(3, (32, 32, 3))
    mat = {"X": np.transpose(x_nhwc, (1, 2, 3, 0)), "y": np.array([[10], [4], [10]], np.uint8)}
    x, y = data._svhn_arrays(mat, Path("test_32x32.mat"))
    assert np.array_equal(x, x_nhwc) and y.tolist() == [0, 4, 0]
    with pytest.raises(DataError, match="needs X and y"):
        data._svhn_arrays({"images": x_nhwc}, Path("test_32x32.mat"))


def test_svhn_missing_files_says_where(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"test_32x32\.mat was not found") as info:
        load_named("svhn", data_dir=tmp_path)
    assert str(tmp_path) in str(info.value) and "OPTSEARCH_DATA" in str(info.value)
    with pytest.raises(DataError, match="OPTSEARCH_DATA is not set"):
        load_named("svhn")


def test_svhn_npz_in_data_dir(tmp_path: Path) -> None:
    _write_named(tmp_path, "svhn", shape=(32, 32, 3))
    assert load_named("svhn", data_dir=tmp_path).x.shape == (3, 32, 32, 3)


# --------------------------------------------------------------------------------------------------
# Real data


def test_real_mnist_test_set() -> None:
    if not (SHARED_DATASETS / "mnist.npz").is_file():
        pytest.skip(f"shared dataset copy not present: {SHARED_DATASETS / 'mnist.npz'}")
    ds = load_named("mnist", data_dir=SHARED_DATASETS)
    assert ds.x.shape == (10_000, 28, 28, 1) and ds.x.dtype == np.uint8
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y).tolist()) == set(range(10))
    assert np.bincount(ds.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --------------------------------------------------------------------------------------------------
# Labels


@pytest.mark.parametrize(
    "labels",
    [
        np.array([2, 0, 1], np.uint8),
        np.array([2, 0, 1], np.int32),
        np.array([[2], [0], [1]]),
        np.array([2.0, 0.0, 1.0]),
        np.eye(3, dtype=np.float32)[[2, 0, 1]],
        np.eye(3, dtype=np.int64)[[2, 0, 1]],
    ],
)
def test_to_class_indices_accepts(labels: np.ndarray) -> None:
    out = to_class_indices(labels, "labels.npz")
    assert out.dtype == np.int64 and out.shape == (3,) and out.tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([[0, 1, 1], [1, 0, 0]]), "not hold exactly one 1"),
        (np.array([[0, 0, 0], [1, 0, 0]]), "not hold exactly one 1"),
        (np.array([[0.2, 0.8], [1.0, 0.0]]), "not hold exactly one 1"),
        (np.array([0, -1, 2]), "negative"),
        (np.array([0.0, 1.5]), "not whole numbers"),
        (np.array([0.0, np.nan]), "not whole numbers"),
        (np.zeros((2, 2, 2)), "shape"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_to_class_indices_refuses(labels: np.ndarray, pattern: str) -> None:
    with pytest.raises(DataError, match=f"labels.npz.*{pattern}"):
        to_class_indices(labels, "labels.npz")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=40), st.integers(10, 12))
def test_one_hot_round_trip(labels: list[int], n_classes: int) -> None:
    one_hot = np.eye(n_classes, dtype=np.float32)[labels]
    assert to_class_indices(one_hot, "s").tolist() == labels


# --------------------------------------------------------------------------------------------------
# validate

_OK = {"input_shape": (4, 4, 1), "num_classes": 3, "preprocess": Preprocess(scale=1 / 255)}


def test_validate_accepts_good_data() -> None:
    validate(_dataset([0, 1, 2, 1]), **_OK)
    validate(_dataset([0, 1]), input_shape=(None, None, 1), num_classes=2, preprocess=Preprocess())


def test_validate_empty() -> None:
    ds = Dataset(x=np.zeros((0, 4, 4, 1), np.uint8), y=np.zeros(0, np.int64), source="empty.npz")
    with pytest.raises(DataError, match=r"empty\.npz: the dataset has no samples"):
        validate(ds, **_OK)


def test_validate_length_mismatch() -> None:
    ds = Dataset(x=_images(3), y=np.array([0, 1], np.int64), source="short.npz")
    with pytest.raises(DataError, match=r"short\.npz: 3 samples but 2 labels"):
        validate(ds, **_OK)


def test_validate_label_out_of_range() -> None:
    with pytest.raises(DataError, match="largest label is 7 but the model has 3 classes"):
        validate(_dataset([0, 7, 1]), **_OK)
    ds = Dataset(x=_images(2), y=np.array([0, -1], np.int64), source="neg")
    with pytest.raises(DataError, match="neg: labels include -1"):
        validate(ds, **_OK)


def test_validate_counts_nan_and_inf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_FINITE_CHECK_ROWS", 3)  # several chunks
    ds = _dataset([0, 1, 2, 0, 1, 2, 0], dtype="float32")
    x = ds.x.copy()
    x[1, 0, 0, 0] = np.nan
    x[1, 1, 0, 0] = np.inf
    x[5, 2, 2, 0] = -np.inf
    with pytest.raises(DataError, match="test set: 3 NaN or inf values in 2 of 7 samples"):
        validate(Dataset(x=x, y=ds.y, source=ds.source), **_OK)


def test_validate_shape_mismatch_suggests_resize() -> None:
    with pytest.raises(DataError) as info:
        validate(_dataset([0, 1]), input_shape=(8, 8, 1), num_classes=3, preprocess=Preprocess())
    message = str(info.value)
    assert "test set" in message and "(4, 4, 1)" in message and "(8, 8, 1)" in message
    assert "--resize H W" in message and "Resizing layer" in message


def test_validate_shape_mismatch_channels() -> None:
    with pytest.raises(DataError, match=r"channel counts differ \(1 vs 3\).*grayscale vs RGB"):
        validate(_dataset([0, 1]), input_shape=(4, 4, 3), num_classes=3, preprocess=Preprocess())


def test_validate_shape_missing_channel_axis() -> None:
    with pytest.raises(DataError, match="no channel axis"):
        validate(_dataset([0, 1], shape=(4, 4)), **{**_OK, "preprocess": Preprocess()})


def test_validate_uses_preprocessed_shape() -> None:
    validate(_dataset([0, 1]), input_shape=(6, 5, 1), num_classes=3, preprocess=Preprocess(resize=(6, 5)))


# --------------------------------------------------------------------------------------------------
# Preprocess


def test_preprocess_scale_gives_float32() -> None:
    batch = np.array([[0, 51], [255, 102]], np.uint8)[np.newaxis, ..., np.newaxis]
    out = Preprocess(scale=1 / 255)(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_allclose(out[0, :, :, 0], [[0.0, 0.2], [1.0, 0.4]], rtol=1e-6)
    assert Preprocess()(batch).dtype == np.float32


def test_preprocess_resize_shapes_and_values() -> None:
    rgb = np.full((2, 4, 4, 3), 200, np.uint8)
    out = Preprocess(scale=0.5, resize=(8, 6))(rgb)
    assert out.shape == (2, 8, 6, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 100.0)
    assert Preprocess(resize=(8, 6)).output_shape((4, 4, 3)) == (8, 6, 3)


def test_preprocess_grayscale_3d_batches() -> None:
    gray = _images(3, (4, 4))
    assert Preprocess(resize=(2, 2))(gray).shape == (3, 2, 2)  # resized per image, no axis added
    with_axis = Preprocess(resize=(2, 2), add_channel_axis=True)
    assert with_axis(gray).shape == (3, 2, 2, 1)
    assert with_axis.output_shape((4, 4)) == (2, 2, 1)
    assert Preprocess(add_channel_axis=True)(_images(2, (4, 4, 1))).shape == (2, 4, 4, 1)


def test_fit_channel_axis_only_when_needed() -> None:
    base = Preprocess(scale=1 / 255)
    fitted = fit_channel_axis(base, (28, 28), (28, 28, 1))
    assert fitted.add_channel_axis and fitted.scale == base.scale
    assert fit_channel_axis(base, (28, 28), (28, 28)) is base
    assert fit_channel_axis(base, (28, 28, 1), (28, 28, 1)) is base
    assert fit_channel_axis(base, (28, 28), (32, 32, 1)) is base


def test_preprocess_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="resize"):
        Preprocess(resize=(0, 4))
    with pytest.raises(ValueError, match="scale"):
        Preprocess(scale=float("nan"))
    with pytest.raises(DataError, match="cannot resize samples of shape"):
        Preprocess(resize=(2, 2))(np.zeros((3, 5), np.float32))


def test_import_is_light() -> None:
    code = "import sys, optsearch.data; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------------
# split


def test_split_stratified_proportions() -> None:
    y = np.repeat([0, 1, 2], [100, 40, 10])
    search, held = split(_dataset(y), 0.3, seed=1)
    assert held is not None
    assert np.bincount(search.y).tolist() == [30, 12, 3]
    assert np.bincount(held.y).tolist() == [70, 28, 7]
    assert "search part" in search.source and "held-out part" in held.source


def test_split_disjoint_covering_sorted() -> None:
    ds = _dataset(np.arange(50) % 4)
    search, held = split(ds, 0.5, seed=0)
    assert held is not None
    search_ids, held_ids = search.x[:, 0, 0, 0].astype(int), held.x[:, 0, 0, 0].astype(int)
    assert np.all(np.diff(search_ids) > 0) and np.all(np.diff(held_ids) > 0)
    assert not set(search_ids) & set(held_ids)
    assert sorted([*search_ids, *held_ids]) == list(range(50))
    assert np.array_equal(search.y, ds.y[search_ids]) and np.array_equal(held.y, ds.y[held_ids])


def test_split_deterministic_by_seed() -> None:
    ds = _dataset(np.arange(200) % 5)
    first, _ = split(ds, 0.5, seed=7)
    again, _ = split(ds, 0.5, seed=7)
    other, _ = split(ds, 0.5, seed=8)
    assert np.array_equal(first.x, again.x)
    assert not np.array_equal(first.x, other.x)


def test_split_no_split() -> None:
    ds = _dataset([0, 1, 2])
    search, held = split(ds, 1.0)
    assert search is ds and held is None


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="search_fraction"):
        split(_dataset([0, 1]), fraction)


def test_split_single_sample_class_goes_to_search() -> None:
    search, held = split(_dataset([0, 0, 0, 0, 1]), 0.5)
    assert held is not None
    assert 1 in search.y.tolist() and 1 not in held.y.tolist()


def test_split_keeps_both_parts_non_empty() -> None:
    search, held = split(_dataset([0, 1, 2]), 0.5)  # every class is a single sample
    assert held is not None and len(search) == 2 and len(held) == 1
    search, held = split(_dataset([0, 0, 1, 1]), 0.05)  # every class rounds to 0
    assert held is not None and len(search) == 1 and len(held) == 3
    search, held = split(_dataset([0, 0, 1, 1]), 0.95)  # every class rounds to all
    assert held is not None and len(search) == 3 and len(held) == 1


def test_split_too_small() -> None:
    with pytest.raises(DataError, match="too few to split"):
        split(_dataset([0]), 0.5)
    assert split(_dataset([0]), 1.0)[1] is None


@settings(max_examples=100, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=2, max_size=120),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_properties(labels: list[int], fraction: float, seed: int) -> None:
    ds = _dataset(labels, shape=(1,), dtype="int64")
    search, held = split(ds, fraction, seed)
    assert held is not None and len(search) > 0 and len(held) > 0
    search_ids, held_ids = search.x[:, 0], held.x[:, 0]
    assert not set(search_ids.tolist()) & set(held_ids.tolist())
    assert sorted([*search_ids.tolist(), *held_ids.tolist()]) == list(range(len(labels)))
    for c in set(labels):
        n_class = labels.count(c)
        assert abs(int((search.y == c).sum()) - fraction * n_class) <= 1


# --------------------------------------------------------------------------------------------------
# batches


def test_batches_stream_in_order() -> None:
    ds = _dataset(np.arange(10) % 3)
    got = list(batches(ds, 4, Preprocess(scale=0.5)))
    assert [xb.shape for xb, _ in got] == [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
    assert all(xb.dtype == np.float32 and yb.dtype == np.int64 for xb, yb in got)
    np.testing.assert_array_equal(np.concatenate([xb[:, 0, 0, 0] for xb, _ in got]), np.arange(10) * 0.5)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in got]), ds.y)


def test_batches_is_lazy_and_checks_size() -> None:
    calls: list[int] = []

    class Counting(Preprocess):
        def __call__(self, batch: np.ndarray) -> np.ndarray:
            calls.append(len(batch))
            return super().__call__(batch)

    stream = batches(_dataset(np.zeros(9, int)), 3, Counting())
    assert calls == []
    next(stream)
    assert calls == [3]
    with pytest.raises(ValueError, match="batch_size"):
        batches(_dataset([0]), 0, Preprocess())


def test_batches_with_resize() -> None:
    xb, yb = next(batches(_dataset([0, 1, 2]), 2, Preprocess(scale=1 / 255, resize=(8, 8))))
    assert xb.shape == (2, 8, 8, 1) and xb.dtype == np.float32 and yb.tolist() == [0, 1]
