"""Model soups: uniform and greedy weight averaging of fine-tuned copies (digits), BatchNorm
statistics, and the refusal of mismatched ingredients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import netarchitect as na
from netarchitect.errors import NetArchitectError, ShapeError, SpecError
from netarchitect.extend.soup import (
    average_state_dicts,
    check_same_architecture,
    greedy_soup,
    recompute_batchnorm,
    uniform_soup,
)
from netarchitect.search.tasks import get_task
from netarchitect.search.trainer import TrainConfig, evaluate, train


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 10))


@pytest.fixture(scope="module")
def finetuned() -> tuple[object, list[nn.Module]]:
    """One pre-trained small digits model and four short fine-tunes (seeds, learning rates)."""
    task = get_task("digits")
    torch.manual_seed(0)
    base = _net()
    train(base, task, TrainConfig(epochs=3, lr=3e-3, seed=0))
    copies = []
    for seed, lr in [(1, 1e-3), (2, 3e-3), (3, 1e-2), (4, 3e-4)]:
        model = copy.deepcopy(base)
        train(model, task, TrainConfig(epochs=2, lr=lr, seed=seed, warmup_epochs=0))
        copies.append(model)
    return task, copies


@pytest.mark.slow
def test_greedy_soup_never_worse_than_best_ingredient(finetuned) -> None:
    task, models = finetuned
    before = [m.state_dict()["1.weight"].clone() for m in models]
    result = greedy_soup(models, task.x_val, task.y_val)
    best = max(result.ingredient_scores)
    assert result.score >= best
    assert result.score == pytest.approx(evaluate(result.model, task.x_val, task.y_val)[0])
    assert result.ingredients[0] == result.ingredient_scores.index(best)
    assert result.model is not models[result.ingredients[0]]
    for m, w in zip(models, before):  # ingredients untouched
        assert torch.equal(m.state_dict()["1.weight"], w)
    soup = uniform_soup(models, recompute_bn=task.x_train)
    assert 0.5 < evaluate(soup, task.x_val, task.y_val)[0] <= 1.0


@pytest.mark.slow
def test_greedy_soup_custom_score_and_recompute(finetuned) -> None:
    task, models = finetuned
    calls = []

    def score(model: nn.Module) -> float:
        calls.append(model)
        return -evaluate(model, task.x_val, task.y_val)[1]  # lower loss is better

    result = greedy_soup(models, score=score, recompute_bn=task.x_train)
    assert len(calls) == 2 * len(models) - 1
    assert result.score >= max(result.ingredient_scores)
    with pytest.raises(NetArchitectError, match="needs held-out data"):
        greedy_soup(models)


def test_uniform_soup_averages_weights_and_batchnorm_statistics() -> None:
    models = [_net() for _ in range(3)]
    for i, m in enumerate(models):
        m[2].running_mean.fill_(float(i))
        m[2].num_batches_tracked.fill_(10 + i)
    soup = uniform_soup(models)
    assert_close(soup[1].weight, torch.stack([m[1].weight for m in models]).mean(0))
    assert_close(soup[2].running_mean, torch.ones(32))
    assert int(soup[2].num_batches_tracked) == 10
    weighted = average_state_dicts([m.state_dict() for m in models[:2]], [0.25, 0.75])
    assert_close(weighted["2.running_mean"], torch.full((32,), 0.75))


def test_recompute_batchnorm_matches_batch_statistics() -> None:
    model = _net().eval()
    model[2].momentum = 0.3
    x = torch.randn(50, 1, 8, 8)
    recompute_batchnorm(model, x, batch_size=50)
    h = model[1](model[0](x))
    assert_close(model[2].running_mean, h.mean(0))
    assert_close(model[2].running_var, h.var(0, unbiased=True))
    assert not model.training and model[2].momentum == 0.3
    plain = nn.Linear(2, 2)
    assert recompute_batchnorm(plain, torch.randn(3, 2)) is plain


def test_mismatched_ingredients_are_refused_with_the_first_mismatch() -> None:
    a = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(ShapeError, match=r"0.weight: ingredients\[1\] differs .* shape"):
        uniform_soup([a, nn.Sequential(nn.Linear(4, 2), nn.ReLU())])
    with pytest.raises(SpecError, match=r"1: ingredients\[1\] .* module type: GELU vs ReLU"):
        uniform_soup([a, nn.Sequential(nn.Linear(4, 3), nn.GELU())])
    with pytest.raises(SpecError, match=r"0.bias: ingredients\[1\] has no such entry"):
        greedy_soup([a, nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU())],
                    torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(SpecError, match=r"ingredients\[1\] has 4 modules, ingredients\[0\] has 3"):
        uniform_soup([a, nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Identity())])
    with pytest.raises(NetArchitectError, match="no ingredients given"):
        uniform_soup([])
    with pytest.raises(TypeError, match=r"ingredients\[1\] is a dict"):
        uniform_soup([a, {}])
    with pytest.raises(NetArchitectError, match="no state dicts"):
        average_state_dicts([])
    spec = {"name": "s", "inputs": {"x": {"shape": [4]}},
            "nodes": [{"id": "fc", "block": "linear", "params": {"out_features": 3},
                       "inputs": ["x"]}, {"id": "out", "block": "dropout", "params": {"p": 0.1}}],
            "outputs": ["out"]}
    other = {**spec, "nodes": [spec["nodes"][0], {"id": "out", "block": "dropout", "params": {"p": 0.2}}]}
    with pytest.raises(SpecError, match="another spec"):
        check_same_architecture([na.build(spec), na.build(other)])


def test_greedy_soup_of_one_useful_ingredient_is_a_copy() -> None:
    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    good = nn.Linear(3, 2)
    with torch.no_grad():
        good.weight.copy_(torch.tensor([[-5.0, 0.0, 0.0], [5.0, 0.0, 0.0]]))
        good.bias.zero_()
    bad = copy.deepcopy(good)
    with torch.no_grad():
        bad.weight.mul_(-1.0)
    result = greedy_soup([bad, good], x, y)
    assert result.ingredients == [1] and result.score == 1.0
    assert result.model is not good
    assert_close(result.model.weight, good.weight)
