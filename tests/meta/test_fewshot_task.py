"""The ``digits-fewshot`` search task: its protocol methods, and ``design`` end to end."""

from __future__ import annotations

import math

import pytest
import torch
from rich.console import Console

from netarchitect import build, load_spec
from netarchitect.errors import SpecError
from netarchitect.meta.fewshot_task import EMBED_DIM, FewShotTask
from netarchitect.search.config import packaged_space
from netarchitect.search.space import SearchSpace
from netarchitect.search.tasks import get_task, list_tasks
from netarchitect.search.trainer import TrainConfig

SMALL = {
    "train_glyphs": 30,
    "val_glyphs": 10,
    "episodes_per_epoch": 4,
    "val_episodes": 4,
    "test_episodes": 6,
    "embed_dim": 8,
}


def _embedder(width: int = 8, *, outputs: list[str] | None = None) -> dict:
    return {
        "name": "embedder",
        "inputs": {"x": {"shape": [1, 16, 16]}},
        "nodes": [
            {"id": "conv", "block": "conv_norm_act", "params": {"out_channels": 4}},
            {"id": "pool", "block": "maxpool2d", "params": {"kernel_size": 4}},
            {"id": "flat", "block": "flatten"},
            {"id": "embed", "block": "linear", "params": {"out_features": width}},
        ],
        "outputs": outputs or ["embed"],
    }


@pytest.fixture(scope="module")
def task() -> FewShotTask:
    return FewShotTask("tiny-fewshot", **SMALL)


def test_task_describes_itself_and_is_registered(task):
    assert task.num_classes == 8 and task.input_shape == (1, 16, 16)
    text = task.describe()
    assert "5-way 5-shot" in text and "30 glyph classes" in text and "digits 5-9" in text
    assert "digits-fewshot" in list_tasks()
    assert get_task("digits-fewshot").num_classes == EMBED_DIM


def test_episode_sets_are_disjoint_and_fixed(task):
    digits_val = {int(c) for e in task.val_sets[1] for c in e.classes}
    assert digits_val <= {1000 + d for d in range(5)}
    assert {int(c) for e in task.val_sets[0] for c in e.classes} <= set(range(30, 40))
    assert {int(c) for e in task.test_set for c in e.classes} == {1000 + d for d in range(5, 10)}
    # held-out digit 0-4 images never reach training
    val_rows = set()
    for e in task.val_sets[1]:
        val_rows |= {x.numpy().tobytes() for x in torch.cat([e.support_x, e.query_x])}
    train_rows = {task.x[i].numpy().tobytes() for i in task.train_index if task.y[i] >= 1000}
    assert val_rows and not (val_rows & train_rows)
    again = FewShotTask("tiny-fewshot", **SMALL)
    torch.testing.assert_close(again.test_set[0].query_x, task.test_set[0].query_x)


def test_check_model_wants_one_embedding_of_num_classes(task):
    task.check_model(load_spec(_embedder(8)))
    with pytest.raises(SpecError, match=r"must output \[8\] \(the embedding width\)"):
        task.check_model(load_spec(_embedder(5)))
    with pytest.raises(SpecError, match="one output"):
        task.check_model(load_spec(_embedder(8, outputs=["embed", "flat"])))


def test_packaged_space_samples_valid_embedding_networks():
    full = FewShotTask()
    space = SearchSpace.from_spec(
        packaged_space(full.default_space),
        variables={"num_classes": full.num_classes},
        inputs={"x": full.input_shape},
    )
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        spec = space.sample(study.ask())
        full.check_model(spec)
        assert build(spec)(torch.zeros(2, 1, 16, 16)).shape == (2, EMBED_DIM)


def test_fit_is_seeded_restores_the_best_epoch_and_tests(task):
    cfg = TrainConfig(lr=3e-3, epochs=3, warmup_epochs=1, augment=0.3, patience=5, seed=4)
    results, states = [], []
    for _ in range(2):
        model = build(load_spec(_embedder()), seed=0)
        results.append(task.fit(model, cfg))
        states.append(model.state_dict())
    a, b = results
    assert a.val_acc == b.val_acc and a.curve == b.curve and len(a.curve) == 3
    assert a.val_acc == max(a.curve) and 0.2 <= a.val_acc <= 1 and math.isfinite(a.val_loss)
    torch.testing.assert_close(states[0], states[1])
    acc, loss = task.test(model)
    assert 0 <= acc <= 1 and math.isfinite(loss)
    assert not model.training


def test_fit_stops_when_pruned_or_patience_runs_out(task):
    model = build(load_spec(_embedder()), seed=0)
    seen = []
    res = task.fit(
        model, TrainConfig(epochs=3, seed=0), on_epoch=lambda e, m: seen.append(e) or True
    )
    assert res.stopped == "pruned" and res.epochs_run == 1 and seen == [0]
    res = task.fit(model, TrainConfig(lr=1e-12, epochs=6, patience=1, warmup_epochs=0, seed=0))
    assert res.stopped == "early" and res.epochs_run < 6


def test_proxy_and_cost_inputs(task):
    x = task.proxy_inputs(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 1, 16, 16)
    assert task.cost_inputs() is None


TINY_SPACE = """
name: tiny_fewshot
nodes:
  - {id: conv, block: conv_norm_act, params: {out_channels: !choice [4, 8], kernel_size: 3}}
  - {id: pool, block: maxpool2d, params: {kernel_size: 4}}
  - {id: flat, block: flatten}
  - {id: embed, block: linear, params: {out_features: $num_classes}}
outputs: [embed]
train:
  epochs: 1
  lr: !float {low: 1.0e-3, high: 1.0e-2, log: true}
  patience: 1
"""


@pytest.mark.slow
def test_design_end_to_end_on_digits_fewshot(tmp_path):
    from netarchitect.search import design

    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    console = Console(record=True, width=160)
    result = design(
        task="digits-fewshot", space=space, trials=2, workers=1, out=tmp_path, console=console
    )
    shown = console.export_text()
    assert "digits-fewshot" in shown and result.report.is_file()
    assert result.final and all(0.2 <= f["test_acc"] <= 1 for f in result.final)  # chance: 0.2
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and all(0 <= t.values[0] <= 1 for t in done)
