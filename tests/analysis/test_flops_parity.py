"""Parity with ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own counter).

FlopCounterMode reports FLOPs = 2 x MACs for the matrix products and convolutions it
has formulas for, forward and backward together. On every operator both count, ours
equals it exactly. The documented differences:

* operators it has no formula for (it reports 0, we count their MACs):
  :data:`ONLY_OURS` — the CPU attention kernels (``_scaled_dot_product_flash_attention_for_cpu``
  and its backward, the fused ``nn.MultiheadAttention``/``nn.TransformerEncoderLayer`` fast
  paths), oneDNN LSTM layers, ``mv``, ``addmv``, ``dot`` and ``addbmm``;
* ``convolution_backward`` of a *grouped* convolution: its weight-gradient term ignores
  ``groups`` (it treats the batch as the contraction over all input channels), so it
  reports ``groups x`` the true weight-gradient MACs; the input gradient agrees.
* neither counts bias additions as MACs; we report them (and all element-wise work) as
  ``other_flops``, which FlopCounterMode does not count at all.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from netarchitect.analysis import count_flops

ONLY_OURS = frozenset(
    {
        "aten._scaled_dot_product_flash_attention_for_cpu",
        "aten._scaled_dot_product_flash_attention_for_cpu_backward",
        "aten._native_multi_head_attention",
        "aten._transformer_encoder_layer_fwd",
        "aten.mkldnn_rnn_layer",
        "aten.mkldnn_rnn_layer_backward",
        "aten.mv",
        "aten.addmv",
        "aten.dot",
        "aten.addbmm",
    }
)


def torch_counter(model: nn.Module, inputs: tuple, backward: bool) -> dict[str, int]:
    with FlopCounterMode(display=False) as counter:
        out = model(*inputs)
        if backward:
            out.backward(torch.ones_like(out))
    return {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}


def our_counter(model: nn.Module, inputs: tuple, backward: bool) -> dict[str, int]:
    r = count_flops(model, inputs, backward=backward)
    flops: Counter[str] = Counter()
    for table in (r.by_operator, r.by_operator_backward):
        for op, count in table.items():
            if count.macs:
                flops[op] += count.flops
    assert sum(flops.values()) == r.flops
    return dict(flops)


class Attention(nn.Module):
    """``nn.MultiheadAttention`` (explicit bmm path: weights returned) + functional SDPA."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.qkv = nn.Linear(16, 48)
        self.dropout = dropout

    def forward(self, x):
        y = self.mha(x, x, x)[0]
        b, t, d = y.shape
        q, k, v = self.qkv(y).view(b, t, 3, 4, d // 4).permute(2, 0, 3, 1, 4)  # (B, H, T, D)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout).sum(1)


class Products(nn.Module):
    def forward(self, a, b, c):
        out = (
            torch.baddbmm(c, a, b).sum() + (a @ b).sum() + torch.einsum("bij,bjk->bik", a, b).sum()
        )
        out = out + torch.mv(a[0], b[0, :, 0]).sum() + torch.addmv(b[0, 0], a[0], b[0, :, 0]).sum()
        return out + torch.dot(a[0, 0], a[0, 1]) + torch.addbmm(c[0], a, b).sum()


class First(nn.Module):
    """First output of a module returning a tuple (LSTM, MultiheadAttention)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)[0]


def _cases() -> dict[str, tuple[nn.Module, tuple]]:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    mats = (torch.randn(2, 3, 4), torch.randn(2, 4, 3), torch.randn(2, 3, 3))
    return {
        "mlp": (
            nn.Sequential(
                nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4)
            ),
            (torch.randn(3, 8),),
        ),
        "convnet": (
            nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 6, 3, padding=2, dilation=2),
                nn.ConvTranspose2d(6, 4, 3, stride=2),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(4 * 5 * 5, 5),
            ),
            (torch.randn(2, 3, 9, 9),),
        ),
        "attention_math_path": (Attention(dropout=0.1), (x,)),  # dropout: SDPA runs bmm on CPU
        "attention_fused": (Attention(), (x,)),
        "transformer": (
            nn.Transformer(16, 2, 1, 1, 32, batch_first=True, dropout=0.0),
            (torch.randn(2, 5, 16), torch.randn(2, 4, 16)),
        ),
        "products": (Products(), tuple(m.requires_grad_() for m in mats)),
        "lstm": (First(nn.LSTM(8, 6, num_layers=2)), (torch.randn(5, 3, 8),)),
    }


CASES = _cases()


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("name", list(CASES))
def test_equal_to_flop_counter_mode_on_shared_operators(name, backward):
    model, inputs = CASES[name]
    ours = our_counter(model, inputs, backward)
    theirs = torch_counter(model, inputs, backward)
    assert set(theirs) <= set(ours)
    assert {op: ours[op] for op in theirs} == theirs
    only_ours = set(ours) - set(theirs)
    assert only_ours <= ONLY_OURS
    assert sum(ours.values()) == sum(theirs.values()) + sum(ours[op] for op in only_ours)
    expected = EXPECTED_ONLY_OURS.get(name, set())
    assert {op for op in only_ours if backward or not op.endswith("_backward")} == {
        op for op in expected if backward or not op.endswith("_backward")
    }


EXPECTED_ONLY_OURS = {
    "attention_fused": {
        "aten._scaled_dot_product_flash_attention_for_cpu",
        "aten._scaled_dot_product_flash_attention_for_cpu_backward",
    },
    "transformer": {
        "aten._scaled_dot_product_flash_attention_for_cpu",
        "aten._scaled_dot_product_flash_attention_for_cpu_backward",
    },
    "products": {"aten.mv", "aten.addmv", "aten.dot", "aten.addbmm"},
    "lstm": {"aten.mkldnn_rnn_layer", "aten.mkldnn_rnn_layer_backward"},
}


def test_fused_eval_fast_paths_are_counted_only_by_us():
    mha = First(nn.MultiheadAttention(16, 4, batch_first=True)).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        assert torch_counter(mha, (x, x, x), False) == {}
        assert set(our_counter(mha, (x, x, x), False)) == {"aten._native_multi_head_attention"}


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_convolution_weight_gradient_difference(groups, transposed):
    """FlopCounterMode's weight-gradient term ignores groups: it reports groups x ours."""
    conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = conv_cls(8, 8, 3, groups=groups, bias=False)
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    ours = our_counter(conv, (x,), True)
    theirs = torch_counter(conv, (x,), True)
    forward = ours["aten.convolution"]  # input grad and weight grad each cost one forward
    assert theirs["aten.convolution"] == forward
    assert ours["aten.convolution_backward"] == 2 * forward
    assert theirs["aten.convolution_backward"] == forward + groups * forward
