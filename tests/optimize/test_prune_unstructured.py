"""Unstructured magnitude pruning, made permanent (no masks, same state-dict keys)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netarchitect.optimize.pruning import PruneError, prune_unstructured, sparsity


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_global_pruning_zeroes_the_smallest_weights_permanently() -> None:
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = prune_unstructured(model, 0.5)
    assert report.total == 8 * 16 + 16 * 4 and report.zeros == round(0.5 * report.total)
    assert report.overall == pytest.approx(0.5, abs=1e-2)
    assert pruned.state_dict().keys() == model.state_dict().keys()  # no masks, no *_orig
    assert not list(pruned.buffers()) and not any(hasattr(m, "weight_mask") for m in pruned.modules())
    # exactly the smallest |w| went: every kept weight is at least every removed one
    w = torch.cat([before["0.weight"].flatten(), before["2.weight"].flatten()]).abs()
    kept = torch.cat([pruned[0].weight.flatten(), pruned[2].weight.flatten()]) != 0
    assert w[kept].min() >= w[~kept].max()
    assert torch.equal(pruned[0].bias, before["0.bias"])  # biases stay dense
    for k, v in model.state_dict().items():  # the input is untouched
        assert torch.equal(v, before[k])


def test_layer_scope_prunes_each_weight_by_the_amount() -> None:
    _, report = prune_unstructured(_mlp(), 0.25, scope="layer")
    assert report.by_param["0.weight"] == pytest.approx(0.25)
    assert report.by_param["2.weight"] == pytest.approx(0.25)


def test_inplace_and_sparsity_of_a_dense_model() -> None:
    model = _mlp()
    assert sparsity(model).overall == 0.0
    same, _ = prune_unstructured(model, 0.1, inplace=True)
    assert same is model and sparsity(model).overall == pytest.approx(0.1, abs=1e-2)


def test_tied_weights_are_counted_once() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    _, report = prune_unstructured(model, 0.5)
    assert report.total == 40


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, "half", True])
def test_bad_amount_is_refused(amount) -> None:
    with pytest.raises(PruneError, match="amount"):
        prune_unstructured(_mlp(), amount)


def test_bad_scope_and_nothing_to_prune_are_refused() -> None:
    with pytest.raises(PruneError, match="scope"):
        prune_unstructured(_mlp(), 0.5, scope="row")
    with pytest.raises(PruneError, match="no weight"):
        prune_unstructured(nn.LayerNorm(4), 0.5)
    assert sparsity(nn.LayerNorm(4)).overall == 0.0
