"""Structured pruning of plain ``nn.Module``s through torch.fx: the coupling patterns,
exactness against zeroed channels, and the modules it refuses."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from netarchitect.optimize.pruning import PruneError, prune, zero_pruned
from netarchitect.optimize.pruning.fx_graph import (
    PrunedMultiheadAttention,
    plan_module,
    prune_module,
)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(self.bn(self.conv(y)) + y)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class Mobile(nn.Module):
    """Depthwise and grouped convolutions, a concatenation, and a concatenation feeding a
    grouped convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.branch = nn.Conv2d(8, 4, 1)
        self.fuse = nn.Conv2d(12, 8, 1)
        self.grouped_cat = nn.Conv2d(16, 8, 1, groups=4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = nn.functional.relu(self.dw(self.pw(x)))
        y = self.grouped(y).relu()
        z = self.fuse(torch.cat([y, self.branch(y)], 1))
        z = self.grouped_cat(torch.cat([z, y], dim=1))
        return self.head(z.mean((2, 3)))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x):
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(x)))


CASES = {
    "residual": (Residual, (2, 3, 8, 8)),
    "mobile": (Mobile, (2, 3, 8, 8)),
    "attention": (Attention, (2, 5, 16)),
}


def _setup(name: str):
    torch.manual_seed(0)
    cls, shape = CASES[name]
    model = cls().eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model, torch.randn(*shape)


@pytest.mark.parametrize("name", list(CASES))
def test_fx_pruning_is_exact_and_smaller(name: str) -> None:
    model, x = _setup(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_module(model, 0.5, (x,))
    pruned = prune_module(copy.deepcopy(model), 0.5, (x,))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zero_pruned(model, plan)(x), rtol=1e-5, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fx_residual_add_ties_the_stem_and_the_block() -> None:
    model, x = _setup("residual")
    pruned = prune_module(copy.deepcopy(model), 0.5, (x,))
    assert pruned.stem[0].out_channels == pruned.conv.out_channels == 4
    assert pruned.bn.num_features == 4 and pruned.head.in_features == 4


def test_fx_depthwise_grouped_and_concat() -> None:
    model, x = _setup("mobile")
    pruned = prune_module(copy.deepcopy(model), 0.5, (x,))
    assert pruned.dw.groups == pruned.dw.in_channels == pruned.dw.out_channels == 4
    assert pruned.grouped.groups == 2 and pruned.grouped.in_channels == 4
    assert pruned.grouped_cat.groups == 4 and pruned.grouped_cat.out_channels == 4
    assert pruned.grouped_cat.in_channels == 16  # concatenated parts feeding it stay whole


def test_fx_multihead_attention_loses_whole_heads() -> None:
    model, x = _setup("attention")
    pruned = prune_module(copy.deepcopy(model), 0.5, (x,))
    assert isinstance(pruned.mha, PrunedMultiheadAttention)
    assert pruned.mha.num_heads == 2 and pruned.mha.head_dim == 4
    assert pruned.mha.in_proj_weight.shape == (24, 16) and pruned.fc1.out_features == 16
    _, weights = pruned.mha(x, x, x)
    assert weights is None


def test_pruned_mha_matches_torch_with_masks_and_sequence_first() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()
    ours = PrunedMultiheadAttention(mha, mha.in_proj_weight.detach(), mha.in_proj_bias.detach(),
                                    mha.out_proj.weight.detach(), 2).eval()
    q = torch.randn(4, 3, 8)
    pad = torch.tensor([[False] * 4, [False, False, True, True], [False] * 3 + [True]])
    causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
    for kwargs in ({}, {"key_padding_mask": pad}, {"attn_mask": causal},
                   {"attn_mask": causal, "key_padding_mask": pad}):
        expected = mha(q, q, q, need_weights=False, **kwargs)[0]
        torch.testing.assert_close(ours(q, q, q, **kwargs)[0], expected, rtol=1e-5, atol=1e-5)


def test_prune_dispatches_plain_modules_to_fx() -> None:
    model, x = _setup("residual")
    result = prune(model, 0.5, example_inputs=x)
    assert result.spec is None and result.table["params"]["ratio"] < 1


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.fc(x)
        return x


def test_fx_refusals_name_the_module() -> None:
    with pytest.raises(PruneError, match="Untraceable.*cannot trace"):
        prune_module(Untraceable(), 0.5, (torch.randn(2, 4),))
    with pytest.raises(PruneError, match="example_inputs"):
        prune_module(Untraceable(), 0.5, None)
    with pytest.raises(PruneError, match="no prunable"):
        prune_module(nn.Sequential(nn.Linear(4, 4)), 0.5, (torch.randn(2, 4),))
    with pytest.raises(PruneError, match="amount"):
        prune_module(nn.Sequential(nn.Linear(4, 4)), 1.5, (torch.randn(2, 4),))
