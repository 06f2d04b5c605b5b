"""The candidate trainer: determinism, learning, early stopping, augmentation, settings."""

from __future__ import annotations

import pytest
import torch

from netarchitect import NetArchitectError, build
from netarchitect.search import TrainConfig, evaluate, get_task, train
from netarchitect.search.trainer import augment_batch

MLP = {
    "inputs": {"x": [2]},
    "nodes": [
        {"id": "fc", "block": "linear", "params": {"out_features": 16}},
        {"id": "act", "block": "relu"},
        {"id": "drop", "block": "dropout", "params": {"p": 0.1}},
        {"id": "head", "block": "linear", "params": {"out_features": 2}},
    ],
}


@pytest.fixture(scope="module")
def moons():
    return get_task("moons")


def test_training_is_deterministic_for_a_seed_and_learns(moons):
    cfg = TrainConfig(lr=2e-2, epochs=8, batch_size=64, augment=0.3, label_smoothing=0.05, seed=3)
    a, b = build(MLP, seed=1), build(MLP, seed=1)
    ra, rb = train(a, moons, cfg), train(b, moons, cfg)
    assert ra.curve == rb.curve and ra.val_loss == rb.val_loss
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert ra.val_acc >= 0.85 and ra.stopped == "completed" and ra.epochs_run == 8
    assert (
        evaluate(a, moons.x_val, moons.y_val)[0] == ra.val_acc
    )  # the best epoch's weights are kept
    other = train(build(MLP, seed=1), moons, TrainConfig(lr=2e-2, epochs=8, augment=0.3, seed=4))
    assert other.curve != ra.curve


def test_on_epoch_can_stop_training(moons):
    seen = []

    def stop_at_two(epoch, acc):
        seen.append((epoch, acc))
        return epoch == 1

    result = train(build(MLP, seed=0), moons, TrainConfig(epochs=10), on_epoch=stop_at_two)
    assert result.stopped == "pruned" and result.epochs_run == 2 and [e for e, _ in seen] == [0, 1]
    assert [a for _, a in seen] == result.curve


def test_patience_stops_a_run_that_does_not_improve(moons):
    cfg = TrainConfig(lr=1e-30, weight_decay=0.0, warmup_epochs=0, epochs=10, patience=2)
    result = train(build(MLP, seed=0), moons, cfg)
    assert result.stopped == "early" and result.epochs_run == 3 and result.best_epoch == 0


def test_augmentation():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert augment_batch(images, 0.0, gen) is images
    out = augment_batch(images, 1.0, torch.Generator().manual_seed(1))
    again = augment_batch(images, 1.0, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and torch.equal(out, again) and not torch.equal(out, images)
    vectors = torch.zeros(4000, 3)
    noisy = augment_batch(vectors, 0.5, gen)
    assert (
        abs(float(noisy.std()) - 0.1) < 0.01
    )  # noise std is 0.2 * strength; vectors are not shifted


def test_shift_moves_pixels_by_at_most_one():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 100.0
    out = augment_batch(x, 1.0, gen)
    peaks = out.flatten(1).argmax(1)
    rows, cols = peaks // 5, peaks % 5
    assert ((rows - 2).abs() <= 1).all() and ((cols - 2).abs() <= 1).all()
    assert ((rows != 2) | (cols != 2)).any()


def test_train_config_validation_and_coercion():
    cfg = TrainConfig.from_dict(
        {"lr": 0.01, "batch_size": 32.0, "epochs": 3, "unknown": 1, "augment": None}, seed=5
    )
    assert (
        cfg.batch_size == 32
        and isinstance(cfg.batch_size, int)
        and cfg.seed == 5
        and cfg.augment == 0.0
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (
        {"lr": 0},
        {"batch_size": 0},
        {"label_smoothing": 1.0},
        {"augment": 2.0},
        {"patience": 0},
    ):
        with pytest.raises(NetArchitectError, match=f"train.{next(iter(bad))}"):
            TrainConfig(**bad)


def test_a_diverging_run_scores_zero(moons):
    result = train(build(MLP, seed=0), moons, TrainConfig(lr=1e30, epochs=2, warmup_epochs=0))
    assert result.curve[-1] == 0.0


class _Pulled(torch.nn.Module):
    """A classifier with a parameter that only an auxiliary loss term moves."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 2)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def forward(self, x):
        return self.net(x) + 0 * self.anchor

    def auxiliary_loss(self, targets):
        self.seen.append(len(targets))
        return ((self.anchor - 3.0) ** 2).sum()


def test_auxiliary_losses_of_blocks_join_every_step(moons):
    from netarchitect.losses import auxiliary_loss, auxiliary_modules

    model = torch.nn.Sequential(_Pulled())
    assert auxiliary_modules(model) == [model[0]]
    cfg = TrainConfig(lr=5e-2, epochs=3, batch_size=64, weight_decay=0.0, seed=0)
    train(model, moons, cfg)
    steps = 3 * -(-len(moons.x_train) // 64)
    assert len(model[0].seen) == steps  # once per training step, with that batch's targets
    assert float(model[0].anchor) > 0.1  # moved toward 3 by the auxiliary term alone
    plain = torch.nn.Linear(2, 2)
    assert auxiliary_modules(plain) == []
    assert float(auxiliary_loss(plain, torch.zeros(3))) == 0.0
