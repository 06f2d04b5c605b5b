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
        ({"X": np.zeros((10, 2)), "y": np.zeros((10, 2))}, "one label per sample"),
        ({"X": np.array([["a", "b"]] * 10), "y": np.arange(10) % 2}, "real numbers"),
        ({"X": np.zeros((10, 2)), "y": np.arange(10) % 2 + 0.5}, "integer class labels"),
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
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz_task(bad)
