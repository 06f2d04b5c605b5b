"""Tasks: built-in data sets, stratified fixed splits, .npz files and their validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netarchitect.search import (
    DataError,
    get_task,
    list_tasks,
    load_npz_task,
    register_task,
    task_from_arrays,
)
from netarchitect.search.tasks import Task


def test_digits_is_a_fixed_stratified_split():
    task = get_task("digits")
    assert task.input_shape == (1, 8, 8) and task.num_classes == 10
    sizes = (len(task.y_train), len(task.y_val), len(task.y_test))
    assert sum(sizes) == 1797 and sizes[2] == 360
    for y in (task.y_train, task.y_val, task.y_test):  # every class in every part, in proportion
        counts = torch.bincount(y, minlength=10).float()
        assert counts.min() / counts.max() > 0.8
    again = get_task("digits")
    torch.testing.assert_close(task.x_test, again.x_test)  # the test split never changes
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64
    assert abs(float(task.x_train.mean())) < 1e-4  # standardised with training statistics
    assert task.default_space == "default_space.yaml"
    assert "10 classes, inputs 1×8×8" in task.describe()


def test_moons_and_the_open_registry():
    task = get_task("moons")
    assert (
        task.input_shape == (2,)
        and task.num_classes == 2
        and task.default_space == "mlp_space.yaml"
    )
    assert {"digits", "moons"} <= set(list_tasks())

    @register_task("blobs_for_test")
    def blobs() -> Task:
        rng = np.random.default_rng(0)
        return task_from_arrays("blobs", rng.normal(size=(60, 3)), np.arange(60) % 3)

    assert get_task("blobs_for_test").num_classes == 3
    with pytest.raises(DataError, match="unknown task 'digts'.*did you mean 'digits'"):
        get_task("digts")


def save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_vectors_and_images(tmp_path):
    rng = np.random.default_rng(0)
    task = load_npz_task(save(tmp_path, X=rng.normal(size=(50, 4)), y=np.array(["a", "b"] * 25)))
    assert task.name == "data" and task.input_shape == (4,) and task.num_classes == 2
    assert task.default_space == "mlp_space.yaml"
    images = load_npz_task(save(tmp_path, X=rng.normal(size=(30, 5, 5)), y=np.arange(30.0) % 3))
    assert images.input_shape == (1, 5, 5) and images.default_space == "default_space.yaml"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.zeros((10, 2))}, r"missing array\(s\) \['y'\]"),
        ({"X": np.zeros((10, 2)), "y": np.arange(9) % 2}, "X has 10 samples but y has 9"),
        (
            {"X": np.where(np.eye(10, 2) > 0, np.nan, 0.0), "y": np.arange(10) % 2},
            "NaN or infinite",
        ),
        ({"X": np.zeros((10, 2)), "y": np.ones(10)}, "single class"),
        ({"X": np.zeros((10, 2)), "y": np.array([0] * 8 + [1] * 2)}, "class 1 has 2 sample"),
        ({"X": np.zeros(10), "y": np.arange(10) % 2}, "X must have shape"),
        ({"X": np.zeros((10, 2)), "y": np.zeros((10, 2))}, "label column 0 is never set"),
        ({"X": np.array([["a", "b"]] * 10), "y": np.arange(10) % 2}, "real numbers"),
        ({"X": np.zeros((10, 2)), "y": np.full(10, 0.5)}, "regression target 0 is constant"),
    ],
)
def test_bad_data_files_are_clear_errors(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_npz_task(save(tmp_path, **arrays))


def test_unreadable_data_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz_task(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match=r"not an \.npz archive; save X and y with numpy\.savez"):
        load_npz_task(bad)
    np.save(tmp_path / "plain.npy", np.zeros((10, 2)))
    with pytest.raises(DataError, match="not an .npz archive"):
        load_npz_task(tmp_path / "plain.npy")
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("X.npy", b"\x93NUMPY\x01\x00 truncated header")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz_task(tmp_path / "other.npz")


def sklearn_splits(n: int, k: int) -> bool:
    """Whether scikit-learn's two stratified splits (as tasks.py makes them) succeed."""
    from sklearn.model_selection import train_test_split

    y = np.arange(n) % k
    try:
        rest, _ = train_test_split(np.arange(n), test_size=0.2, stratify=y, random_state=0)
        train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=0)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("k", [2, 3, 10])
def test_too_few_samples_for_the_three_way_split(k):
    x = np.random.default_rng(0).normal(size=(60, 3))
    for n in range(3 * k, 6 * k):  # every class has at least 3 samples
        if sklearn_splits(n, k):
            task = task_from_arrays("ok", x[:n], np.arange(n) % k)
            for part in (task.y_train, task.y_val, task.y_test):  # every class in every part
                assert len(set(part.tolist())) == k
            continue
        with pytest.raises(DataError, match=rf"^few: {n} samples are too few .* of {k} classes"):
            task_from_arrays("few", x[:n], np.arange(n) % k)
    with pytest.raises(DataError, match="6 samples are too few .* give at least 7$"):
        task_from_arrays("few", x[:6], [0, 0, 0, 1, 1, 1])


def test_standardising_uses_float64_and_overflow_is_an_error():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    extreme = np.where(rng.random((40, 3)) > 0.5, 3e38, -3e38).astype(np.float32)
    task = task_from_arrays("extreme", extreme, y)  # at float32's limit, still usable
    assert torch.isfinite(task.x_train).all() and task.x_train.abs().max() < 3
    images = task_from_arrays("images", rng.normal(size=(40, 4, 4)) * 1e30, y)
    assert abs(float(images.x_train.mean())) < 0.5 and 0.5 < float(images.x_train.std()) < 2
    for big in (np.full((40, 3), 1e200) * np.where(rng.random((40, 3)) > 0.5, 1, -1),):
        with pytest.raises(DataError, match=r"cannot be standardised: values up to 1e\+200"):
            task_from_arrays("huge", big, y)
