"""Task kinds beyond classification: detection from y, losses and metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, r2_score

from netarchitect.errors import NetArchitectError
from netarchitect.search.scoring import SCORINGS, get_scoring
from netarchitect.search.tasks import DataError, get_task, task_from_arrays
from netarchitect.search.trainer import TrainConfig, evaluate, train


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_r2_matches_scikit_learn_per_target_average():
    rng = _rng()
    y, out = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    got = SCORINGS["regression"].metric(torch.tensor(out), torch.tensor(y))
    assert got == pytest.approx(r2_score(y, out), abs=1e-12)
    const = np.ones((10, 1))
    assert SCORINGS["regression"].metric(torch.tensor(const), torch.tensor(const)) == 1.0
    assert SCORINGS["regression"].metric(torch.zeros(10, 1), torch.tensor(const)) == 0.0


def test_macro_f1_matches_scikit_learn_with_zero_division_0():
    rng = _rng(1)
    y = (rng.random((40, 4)) > 0.6).astype(np.float32)
    y[:, 3] = 0  # a label never present
    logits = rng.normal(size=(40, 4)).astype(np.float32)
    logits[:, 3] = -1  # and never predicted
    got = SCORINGS["multilabel"].metric(torch.tensor(logits), torch.tensor(y))
    want = f1_score(y, logits > 0, average="macro", zero_division=0)
    assert got == pytest.approx(want, abs=1e-12)


def test_losses_are_the_torch_losses():
    out, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    torch.testing.assert_close(
        SCORINGS["classification"].loss(out, y, 0.1),
        torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1),
    )
    target = torch.rand(8, 3)
    torch.testing.assert_close(
        SCORINGS["regression"].loss(out, target, 0.0), torch.nn.functional.mse_loss(out, target)
    )
    labels = (target > 0.5).float()
    torch.testing.assert_close(
        SCORINGS["multilabel"].loss(out, labels, 0.2),
        torch.nn.functional.binary_cross_entropy_with_logits(out, labels * 0.8 + 0.1),
    )


def test_formats_and_unknown_kind():
    assert SCORINGS["classification"].format(0.97222) == "97.22%"
    assert SCORINGS["regression"].format(0.48123) == "0.4812"
    assert SCORINGS["regression"].format(None) == "–"
    with pytest.raises(NetArchitectError, match="unknown task kind 'ranking'"):
        get_scoring("ranking")


def test_kind_is_detected_from_y():
    rng = _rng(2)
    x = rng.normal(size=(60, 4))
    reg = task_from_arrays("r", x, rng.normal(size=60) * 10 + 3)
    assert reg.kind == "regression" and reg.num_classes == 1 and reg.y_train.shape[1] == 1
    assert abs(float(reg.y_train.mean())) < 1e-5  # targets standardised with training stats
    multi = task_from_arrays("m", x, (rng.random((60, 3)) > 0.5).astype(np.int64))
    assert multi.kind == "multilabel" and multi.num_classes == 3
    assert multi.y_train.dtype == torch.float32
    two = task_from_arrays("t", x, rng.normal(size=(60, 2)))
    assert two.kind == "regression" and two.num_classes == 2
    cls = task_from_arrays("c", x, np.repeat([0.0, 1.0, 2.0], 20))  # integer-valued floats
    assert cls.kind == "classification" and cls.y_train.dtype == torch.int64
    assert "2 regression target(s)" in two.describe() and "3 labels" in multi.describe()


@pytest.mark.parametrize(
    ("y", "kind", "message"),
    [
        (np.full(30, np.nan), None, "y contains 30 NaN"),
        (np.zeros((30, 2, 2)), None, r"got shape \(30, 2, 2\)"),
        (np.full(30, 1.5), None, "regression target 0 is constant"),
        (np.stack([np.ones(30), np.arange(30) % 2], 1), None, "label column 0 is always set"),
        (np.stack([np.zeros(30), np.arange(30) % 2], 1), None, "label column 0 is never set"),
        (np.arange(30) % 3, "multilabel", "looks like classification targets, not multilabel"),
        (np.arange(30) % 3, "ranking", "unknown task kind 'ranking'"),
        (np.array([[1 + 1j]] * 30), None, "y must be real numbers"),
    ],
)
def test_bad_targets_are_named(y, kind, message):
    with pytest.raises(DataError, match=message):
        task_from_arrays("bad", np.ones((30, 2)), y, kind=kind)


def test_builtin_tabular_tasks():
    wine, cancer, diabetes = get_task("wine"), get_task("breast_cancer"), get_task("diabetes")
    assert (wine.num_classes, wine.input_shape, wine.kind) == (3, (13,), "classification")
    assert (cancer.num_classes, cancer.input_shape) == (2, (30,))
    assert (diabetes.kind, diabetes.num_classes, diabetes.input_shape) == ("regression", 1, (10,))
    assert len(diabetes.y_train) + len(diabetes.y_val) + len(diabetes.y_test) == 442


def test_regression_training_improves_r2_over_the_mean():
    task = get_task("diabetes")
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    result = train(model, task, TrainConfig(epochs=30, lr=1e-2, patience=30))
    r2, loss = evaluate(model, task.x_test, task.y_test, kind="regression")
    assert result.val_acc > 0.3 and r2 > 0.3 and loss < 1.0  # the mean predictor scores 0
    assert task.test(model) == (r2, loss)
