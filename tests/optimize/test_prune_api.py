"""``prune()``: criteria, the before/after table, the fine-tuning hook."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.optimize.pruning import CRITERIA, plan_pruning, prune, zero_pruned
from netarchitect.optimize.pruning.api import cost_table
from netarchitect.registry import model_example


def _resnet():
    ex = model_example("resnet18")
    return na.create_model("resnet18", seed=0, **ex.kwargs).eval(), ex.inputs


def _batches(n: int = 2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 5, (4,), generator=g))
            for _ in range(n)]


def test_structured_prune_returns_model_spec_and_table() -> None:
    model, _ = _resnet()
    result = prune(model, 0.5, timed=True)
    assert result.spec is not None and result.model.spec == result.spec
    t = result.table
    assert set(t) == {"params", "macs", "memory_bytes", "latency_ms"}
    assert t["params"]["after"] == sum(p.numel() for p in result.model.parameters())
    assert t["params"]["before"] == sum(p.numel() for p in model.parameters())
    assert t["macs"]["ratio"] < 0.5 and t["params"]["ratio"] < 0.5
    assert result.plan is not None and result.sparsity is None


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_gives_an_exact_pruning(criterion: str) -> None:
    model, inputs = _resnet()
    data = _batches() if criterion == "taylor" else None
    result = prune(model, 0.5, criterion=criterion, data=data)
    with torch.no_grad():
        expected = zero_pruned(model, result.plan)(*inputs)
        torch.testing.assert_close(result.model(*inputs), expected)


def test_criteria_choose_differently() -> None:
    model, _ = _resnet()
    chosen = {c: plan_pruning(model, 0.5, criterion=c, data=_batches()).indices for c in CRITERIA}
    key = "nodes.stem.conv.weight"
    assert not all(torch.equal(chosen["l1"][key][0], chosen[c][key][0]) for c in CRITERIA)


def test_unstructured_through_prune_and_finetune_hook() -> None:
    model, _ = _resnet()
    seen = []
    result = prune(model, 0.5, structured=False, finetune=seen.append)
    assert seen == [result.model] and result.sparsity.overall == pytest.approx(0.5, abs=0.01)
    assert result.table["params"]["ratio"] == 1.0 and result.spec == model.spec


def test_cost_table_without_inputs_has_params_only() -> None:
    a = torch.nn.Linear(4, 4)
    assert set(cost_table(a, a, None)) == {"params"}


def test_prune_takes_example_inputs_for_the_table() -> None:
    model, inputs = _resnet()
    result = prune(model, 0.3, example_inputs=inputs[0][:1])
    assert result.table["macs"]["after"] < result.table["macs"]["before"]


def test_round_to_keeps_multiples() -> None:
    ex = model_example("resnet18")
    kwargs = {**ex.kwargs, "widths": (4, 12), "stem_width": 16}
    model, inputs = na.create_model("resnet18", seed=0, **kwargs).eval(), ex.inputs
    result = prune(model, 0.5, round_to=4)
    for group in result.plan.groups:
        assert group.kept % 4 == 0 or group.kept == group.size
    assert result.spec.node("stem").params["out_channels"] == 8
    assert result.spec.node("s1_b0").params["out_channels"] == 4  # 2 is not a multiple of 4
    assert result.spec.node("s2_b0").params["out_channels"] == 8  # 6 rounds to 8
    with torch.no_grad():
        expected = zero_pruned(model, result.plan)(*inputs)
        torch.testing.assert_close(result.model(*inputs), expected)


@pytest.mark.parametrize("round_to", [0, -8, 2.5, True])
def test_bad_round_to_is_refused(round_to) -> None:
    from netarchitect.optimize.pruning import PruneError

    model, _ = _resnet()
    with pytest.raises(PruneError, match="round_to"):
        prune(model, 0.5, round_to=round_to)
    with pytest.raises(PruneError, match="round_to"):
        prune(torch.nn.Sequential(torch.nn.Linear(4, 4)), 0.5, round_to=round_to,
              example_inputs=torch.randn(2, 4))


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return [(x[i:i + 128], y[i:i + 128]) for i in range(0, 1280, 128)], (x[1280:], y[1280:])


def _accuracy(model, test) -> float:
    with torch.no_grad():
        return float((model(test[0]).argmax(1) == test[1]).float().mean())


def test_finetuning_recovers_accuracy_after_pruning() -> None:
    from netarchitect.network import build
    from netarchitect.optimize.pruning import finetuner

    train, test = _digits()
    spec = {"name": "mlp", "inputs": {"x": {"shape": [64]}}, "outputs": ["head"], "nodes": [
        {"id": "fc", "block": "linear", "params": {"out_features": 64}},
        {"id": "act", "block": "relu"},
        {"id": "head", "block": "linear", "params": {"out_features": 10}},
    ]}
    model = build(spec, seed=0)
    finetuner(train, steps=150, lr=1e-2)(model)
    dense = _accuracy(model, test)
    assert dense > 0.85
    pruned = prune(model, 0.9).model
    tuned = prune(model, 0.9, finetune=finetuner(train, steps=100, lr=1e-2)).model
    assert pruned.nodes["fc"].out_features == tuned.nodes["fc"].out_features == 6
    assert _accuracy(tuned, test) > max(_accuracy(pruned, test), dense - 0.1)


def test_finetuner_refuses_empty_data() -> None:
    from netarchitect.optimize.pruning import PruneError, finetuner

    with pytest.raises(PruneError, match="finetuner"):
        finetuner([])
