"""count_flops: closed-form MACs/FLOPs of plain torch layers, backward rule, bookkeeping."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.analysis import Count, count_flops


class Fn(nn.Module):
    """Wraps a function of the inputs so functional calls run inside a module."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def test_linear_macs_flops_and_bias():
    r = count_flops(nn.Linear(8, 16), torch.randn(3, 8))
    assert r.macs == 3 * 8 * 16
    assert r.flops == 2 * 3 * 8 * 16
    assert r.by_operator == {"aten.addmm": Count(3 * 8 * 16, 3 * 16, 1)}  # linear -> addmm
    assert r.other_flops == 3 * 16  # one add per output element for the bias
    assert r.total_flops == r.flops + r.other_flops
    assert r.backward is None and r.uncounted == {}


def test_linear_without_bias_on_3d_input():
    r = count_flops(nn.Linear(8, 16, bias=False), torch.randn(2, 5, 8))
    assert (r.macs, r.other_flops) == (2 * 5 * 8 * 16, 0)


@pytest.mark.parametrize(
    ("conv", "shape", "macs", "out_elems"),
    [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 9, 9), 2 * 6 * 5 * 5 * 4 * 9, 300),
        (nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 8, 8), 2 * 6 * 64 * 2 * 9, 768),
        (nn.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 8, 8), 2 * 4 * 64 * 1 * 9, 512),
        (nn.Conv1d(3, 5, 3), (2, 3, 10), 2 * 5 * 8 * 3 * 3, 80),
        (nn.Conv3d(2, 3, (1, 2, 3)), (1, 2, 4, 5, 6), 3 * 4 * 4 * 4 * 2 * 6, 192),
        # transposed: input elements x (Cout / groups) x kernel
        (nn.ConvTranspose2d(4, 6, 3, stride=2), (2, 4, 5, 5), 2 * 4 * 25 * 6 * 9, 2 * 6 * 11 * 11),
        (
            nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2),
            (2, 4, 5, 5),
            2 * 4 * 25 * 3 * 9,
            2 * 6 * 11 * 11,
        ),
        (nn.ConvTranspose1d(3, 2, 4, stride=2), (1, 3, 5), 15 * 2 * 4, 2 * 12),
    ],
)
def test_convolutions_closed_form(conv, shape, macs, out_elems):
    r = count_flops(conv, torch.randn(shape))
    assert r.macs == macs
    assert r.other_flops == out_elems  # bias
    assert list(r.by_operator) == ["aten.convolution"]


def test_bmm_einsum_and_matmul_are_seen_functionally():
    a, b = torch.randn(4, 3, 5), torch.randn(4, 5, 2)
    assert count_flops(Fn(torch.bmm), (a, b)).macs == 4 * 3 * 2 * 5
    assert count_flops(Fn(lambda x, y: torch.einsum("bij,bjk->bik", x, y)), (a, b)).macs == 120
    x, w = torch.randn(3, 5), torch.randn(4, 5)
    assert count_flops(Fn(lambda p, q: torch.einsum("ij,kj->ik", p, q)), (x, w)).macs == 60
    big = torch.randn(2, 3, 4, 5)
    assert count_flops(Fn(lambda p, q: p @ q), (big, torch.randn(5, 6))).macs == 2 * 3 * 4 * 6 * 5
    assert count_flops(Fn(torch.mv), (x, torch.randn(5))).macs == 15
    assert count_flops(Fn(torch.dot), (torch.randn(7), torch.randn(7))).macs == 7


def test_add_family_counts_the_addition_as_other():
    m, a, b = torch.randn(3, 2), torch.randn(3, 5), torch.randn(5, 2)
    r = count_flops(Fn(torch.addmm), (m, a, b))
    assert (r.macs, r.other_flops) == (3 * 5 * 2, 3 * 2)  # MACs of the product, the adds
    assert r.by_operator == {"aten.addmm": Count(30, 6, 1)}
    r = count_flops(
        Fn(torch.baddbmm), (torch.randn(4, 3, 2), torch.randn(4, 3, 5), torch.randn(4, 5, 2))
    )
    assert (r.macs, r.other_flops) == (120, 24)
    r = count_flops(
        Fn(torch.addbmm), (torch.randn(3, 2), torch.randn(4, 3, 5), torch.randn(4, 5, 2))
    )
    assert (r.macs, r.other_flops) == (120, 6)
    r = count_flops(Fn(torch.addmv), (torch.randn(3), a, torch.randn(5)))
    assert (r.macs, r.other_flops) == (15, 3)
    r = count_flops(Fn(torch.addr), (torch.randn(3, 4), torch.randn(3), torch.randn(4)))
    assert (r.macs, r.other_flops) == (12, 0)


def test_sequential_of_plain_layers_exact():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 10),
        nn.Softmax(-1),
    )
    r = count_flops(model, torch.randn(2, 3, 6, 6))
    conv = 2 * 4 * 36 * 3 * 9
    assert r.by_module["0"] == Count(conv, 288, 1)
    assert r.by_module["1"].other_flops == 288 * (5 + 2) + 1  # + num_batches_tracked += 1
    assert r.by_module["2"] == Count(0, 288, 1)
    assert r.by_module["3"] == Count(0, 72 * 4, 1)
    assert "4" not in r.by_module  # flatten is a view
    assert r.by_module["5"] == Count(2 * 36 * 10, 20, 1)
    assert r.by_module["6"] == Count(0, 5 * 20, 1)
    assert r.macs == conv + 720
    assert r.by_module[""].macs == r.macs and r.by_module[""].other_flops == r.other_flops
    model.eval()
    assert count_flops(model, torch.randn(2, 3, 6, 6)).by_module["1"].other_flops == 288 * 4


def test_norms_pooling_and_activations():
    x = torch.randn(2, 4, 6, 6)
    assert count_flops(nn.LayerNorm(6), x).other_flops == x.numel() * 7
    assert count_flops(nn.LayerNorm(6, elementwise_affine=False), x).other_flops == x.numel() * 5
    assert count_flops(nn.GroupNorm(2, 4), x).other_flops == x.numel() * 7
    assert count_flops(nn.AvgPool2d(3, stride=3), x).other_flops == 2 * 4 * 4 * 9
    assert count_flops(nn.AdaptiveAvgPool2d(2), x).other_flops == x.numel()
    assert count_flops(nn.GELU(), x).other_flops == x.numel()
    assert count_flops(nn.LogSoftmax(-1), x).other_flops == 5 * x.numel()
    up = count_flops(nn.Upsample(scale_factor=2, mode="bilinear"), x)
    assert up.other_flops == 7 * 4 * x.numel()
    assert count_flops(nn.Upsample(scale_factor=2), x).other_flops == 0  # nearest: a copy
    # CPU dropout without autograd: mask.div_(1 - p) then x * mask
    assert count_flops(nn.Dropout(0.5), x).other_flops == 2 * x.numel()


def test_losses_and_reductions():
    logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
    r = count_flops(Fn(F.cross_entropy), (logits, target))
    assert r.other_flops == 5 * 40 + 4  # log_softmax + nll (one per target)
    r = count_flops(Fn(F.mse_loss), (torch.randn(4, 3), torch.randn(4, 3)))
    assert r.other_flops == 3 * 12
    assert count_flops(Fn(lambda t: t.sum()), torch.randn(5, 3)).other_flops == 15


def test_backward_of_matmul_layers_is_twice_forward():
    """Rule: each product needing an input gradient costs 2 x forward backward."""
    x = torch.randn(3, 8, requires_grad=True)
    r = count_flops(nn.Linear(8, 16, bias=False), x, backward=True)
    assert r.backward.macs == 2 * r.forward.macs
    assert r.macs == 3 * r.forward.macs
    assert x.grad is None  # the user's tensors keep their .grad


def test_backward_first_layer_only_computes_weight_gradient():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    r = count_flops(model, torch.randn(3, 8), backward=True)
    assert r.by_module_backward["0"].macs == 1 * 3 * 8 * 16
    assert r.by_module_backward["2"].macs == 2 * 3 * 16 * 4
    assert r.by_module_backward["2"].other_flops == 3 * 4  # bias gradient: a sum
    assert r.by_module_backward["1"] == Count(0, 48, 1)  # threshold_backward
    assert r.by_module_backward[""].macs == r.backward.macs
    assert all(p.grad is None for p in model.parameters())


def test_conv_backward_is_twice_forward_with_input_grad():
    conv = nn.Conv2d(3, 4, 3, groups=1, bias=False)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    r = count_flops(conv, x, backward=True)
    assert r.backward.macs == 2 * r.forward.macs
    assert list(r.by_operator_backward) == ["aten.convolution_backward"]
    transposed = nn.ConvTranspose2d(3, 4, 2, stride=2)
    r = count_flops(transposed, x, backward=True)
    assert r.backward.macs == 2 * r.forward.macs
    assert r.backward.other_flops == 4 * 12 * 12  # bias gradient


def test_backward_requires_something_to_differentiate():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no output requires grad"):
        count_flops(model, torch.randn(1, 2), backward=True)
    with torch.inference_mode(), pytest.raises(ValueError, match="inference_mode"):
        count_flops(nn.Linear(2, 2), torch.randn(1, 2), backward=True)


def test_no_grad_inference_mode_and_keyword_inputs():
    model = nn.Linear(4, 4)
    expected = count_flops(model, torch.randn(2, 4)).macs
    with torch.no_grad():
        assert count_flops(model, torch.randn(2, 4)).macs == expected
    with torch.inference_mode():
        assert count_flops(model, torch.randn(2, 4)).macs == expected
    assert count_flops(model, {"input": torch.randn(2, 4)}).macs == expected
    assert count_flops(model, [torch.randn(2, 4)]).macs == expected


def test_uncounted_operators_are_listed_never_zero():
    r = count_flops(Fn(lambda t: torch.topk(t, 2).values.sum()), torch.randn(3, 5))
    assert r.uncounted == {"aten.topk": 1}
    assert r.other_flops == 6  # the sum is still counted


@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")
def test_lookups_and_scatters():
    emb = nn.Embedding(10, 4)
    idx = torch.tensor([[1, 2, 3]])
    r = count_flops(emb, idx, backward=True)
    assert r.by_operator["aten.embedding"] == Count(0, 0, 1)  # a lookup: listed, zero cost
    assert r.by_operator_backward["aten.embedding_dense_backward"].other_flops == 12
    src, index = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    base = torch.zeros(5, 4)
    r = count_flops(Fn(lambda s: base.index_add(0, index, s)), src)
    assert r.by_operator["aten.index_add"].other_flops == 24
    expanded = index[:, None].expand(-1, 4)
    r = count_flops(Fn(lambda s: base.scatter_add(0, expanded, s)), src)
    assert r.by_operator["aten.scatter_add"].other_flops == 24
    r = count_flops(Fn(lambda s: base.scatter_reduce(0, expanded, s, "amax")), src)
    assert r.by_operator["aten.scatter_reduce"].other_flops == 24
    r = count_flops(Fn(lambda s: base.scatter(0, expanded, s)), src)
    assert r.by_operator["aten.scatter"] == Count(0, 0, 1)
    r = count_flops(Fn(lambda s: base.scatter(0, expanded, s, reduce="add")), src)
    assert r.by_operator["aten.scatter"].other_flops == 24
    r = count_flops(Fn(lambda s: s.gather(0, expanded) + s.index_select(0, index)), src)
    assert r.by_operator["aten.gather"].calls == 1 and r.by_operator["aten.index_select"].calls == 1
    assert r.other_flops == 24  # only the add
    r = count_flops(Fn(lambda s: base.index_put((index,), s, accumulate=True)), src)
    assert r.by_operator["aten.index_put"].other_flops == 24
    r = count_flops(Fn(lambda s: base.index_put((index,), s)), src)
    assert r.by_operator["aten.index_put"].other_flops == 0


def test_shared_module_counts_every_call_once_per_path():
    layer = nn.Linear(4, 4, bias=False)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(self.layer(x))

    r = count_flops(Twice(), torch.randn(2, 4))
    assert r.by_module["layer"].macs == 2 * 32 and r.by_module["layer"].calls == 2
    assert r.by_module[""].macs == 64


def test_result_serialises():
    r = count_flops(nn.Linear(2, 3), torch.randn(1, 2), backward=True)
    data = json.loads(r.to_json())
    assert data["forward"]["macs"] == 6 and data["backward"]["macs"] == 6
    assert data["by_module"][""]["flops"] == 12
    assert Count(1, 2, 3) + Count(1, 1, 1) == Count(2, 3, 4)
