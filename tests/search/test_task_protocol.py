"""The search asks its task for everything task-specific: fit, test, check, proxy and cost inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from rich.console import Console

from netarchitect import load_spec
from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.search import design, get_task
from netarchitect.search.constraints import Budget, check, measure
from netarchitect.search.tasks import _TASKS, Task, list_tasks, register_task

MLP = {
    "name": "mlp",
    "inputs": {"x": {"shape": [2]}},
    "nodes": [
        {"id": "fc", "block": "linear", "params": {"out_features": 16}},
        {"id": "act", "block": "relu"},
        {"id": "head", "block": "linear", "params": {"out_features": 2}},
    ],
    "outputs": ["head"],
}


@dataclasses.dataclass(frozen=True)
class BatchCostTask(Task):
    """``moons`` measured on a batch of 8 and without a proxy batch."""

    fitted: list = dataclasses.field(default_factory=list, compare=False)

    def cost_inputs(self):
        return {"x": self.x_train[:8]}

    def proxy_inputs(self, n, generator):
        return None

    def fit(self, model, cfg, *, on_epoch=None):
        self.fitted.append(cfg.seed)
        return super().fit(model, cfg, on_epoch=on_epoch)


@pytest.fixture
def batch_task():
    moons = get_task("moons")
    fields = {f.name: getattr(moons, f.name) for f in dataclasses.fields(Task)}
    task = BatchCostTask(**{**fields, "name": "moons_batched"})
    register_task("moons_batched")(lambda: task)
    yield task
    _TASKS.pop("moons_batched")


def test_tensor_task_methods_are_the_classification_defaults():
    task = get_task("moons")
    gen = torch.Generator().manual_seed(0)
    assert task.proxy_inputs(5, gen).shape == (5, 2) and task.cost_inputs() is None
    task.check_model(load_spec(MLP))
    with pytest.raises(SpecError, match="3 classes"):
        dataclasses.replace(task, num_classes=3).check_model(load_spec(MLP))


def test_costs_are_measured_on_the_task_inputs(batch_task):
    spec = load_spec(MLP)
    one = measure(spec)
    batched = measure(spec, inputs=batch_task.cost_inputs())
    assert batched.params == one.params and batched.macs == 8 * one.macs == 8 * (2 * 16 + 16 * 2)
    m, violation = check(Budget(max_macs=300), spec, inputs=batch_task.cost_inputs())
    assert violation is not None and violation.name == "macs" and m.macs == 512


def test_design_runs_a_registered_task_through_its_methods(batch_task, tmp_path):
    assert "moons_batched" in list_tasks()
    result = design(
        task="moons_batched",
        trials=2,
        workers=0,
        out=tmp_path,
        max_params=None,
        console=Console(width=120),
    )
    assert batch_task.fitted  # the search trained through task.fit
    assert result.final and all(f["macs"] % 8 == 0 for f in result.final)


def test_proxies_are_refused_for_a_task_without_input_batches(batch_task, tmp_path):
    with pytest.raises(NetArchitectError, match="--proxy synflow: zero-cost proxies"):
        design(task="moons_batched", trials=1, workers=0, out=tmp_path, proxy="synflow")
