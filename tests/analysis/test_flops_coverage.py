"""Uncounted means missing work only: bookkeeping ops are zero-cost by definition.

Views, copies, padding, index bookkeeping (``select_backward``, ``slice_backward``,
``unsafe_split``) and nested-tensor construction move memory and do no arithmetic; they
belong to the zero-cost table. Real models, forward and backward, leave nothing uncounted.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netarchitect
from netarchitect.analysis import count_flops
from netarchitect.analysis.flop_formulas import (
    ELEMENTWISE,
    FORMULAS,
    LOOKUPS,
    REDUCTIONS,
    ZERO_COST,
    classify,
)
from netarchitect.registry import model_example

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors"),
]

aten = torch.ops.aten


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ("ZERO_COST", ZERO_COST),
        ("LOOKUPS", LOOKUPS),
        ("ELEMENTWISE", ELEMENTWISE),
        ("REDUCTIONS", REDUCTIONS),
        ("FORMULAS", FORMULAS),
    ],
)
def test_every_table_entry_is_a_real_operator(table, names):
    missing = sorted(n for n in names if not hasattr(aten, n) and not hasattr(torch.ops.prim, n))
    assert missing == [], f"{table} names no ATen operator: {missing}"


def test_tables_do_not_overlap():
    tables = [ZERO_COST, LOOKUPS, ELEMENTWISE, REDUCTIONS, frozenset(FORMULAS)]
    for i, a in enumerate(tables):
        for b in tables[i + 1 :]:
            assert a.isdisjoint(b), sorted(a & b)


@pytest.mark.parametrize(
    "op",
    [
        aten.unsafe_split.Tensor,
        aten.unsafe_split_with_sizes.default,
        aten.unsafe_chunk.default,
        aten.select_backward.default,
        aten.slice_backward.default,
        aten.diagonal_backward.default,
        aten.unfold_backward.default,
        aten._nested_tensor_from_mask.default,
        aten._nested_tensor_from_mask_left_aligned.default,
        aten.to_padded_tensor.default,
        aten._nested_from_padded.default,
        aten.permute_copy.default,
        aten.split_with_sizes_copy.default,
    ],
)
def test_bookkeeping_operators_are_zero_cost(op):
    assert classify(op).kind == "zero"


REGISTERED = ("resnet18", "mobilenet_v3_small", "convnext_tiny", "vit_ti_16", "highway_net_50")


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)

    def forward(self, x, mask):
        return self.enc(x, src_key_padding_mask=mask)


class Pads(nn.Module):
    """Functional bookkeeping whose backward used to be uncounted."""

    def forward(self, x):
        y = F.pad(x, (1, 1, 1, 1), mode="circular") + F.pad(x, (1, 1, 1, 1), mode="reflect")
        y = y + F.pad(x, (1, 1, 1, 1), mode="replicate")
        z = F.fold(F.unfold(y, 3), y.shape[-2:], 3)  # col2im adds overlapping patches
        return z.diagonal(0, -2, -1).sum() + x.unfold(-1, 2, 1).sum()


PLAIN = {
    "transformer_encoder": lambda: (
        Encoder(),
        (torch.randn(2, 6, 16), torch.tensor([[False] * 6, [False] * 4 + [True] * 2])),
    ),
    "lstm": lambda: (nn.LSTM(8, 6, num_layers=2, bidirectional=True), (torch.randn(5, 3, 8),)),
    "lstm_proj": lambda: (nn.LSTM(8, 6, proj_size=4), (torch.randn(5, 3, 8),)),
    "gru": lambda: (nn.GRU(8, 6, batch_first=True), (torch.randn(3, 5, 8),)),
    "pads": lambda: (Pads(), (torch.randn(2, 3, 6, 6, requires_grad=True),)),
}


def _build(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    if name in PLAIN:
        return PLAIN[name]()
    example = model_example(name)
    return netarchitect.create_model(name, **example.kwargs), tuple(example.inputs)


@pytest.mark.parametrize("name", [*REGISTERED, *PLAIN])
def test_real_models_leave_nothing_uncounted(name):
    model, inputs = _build(name)
    trained = count_flops(model.train(), inputs, backward=True)
    assert trained.uncounted == {}
    assert trained.forward.macs > 0 or name == "pads"
    model.eval()
    with torch.no_grad():  # eval fast paths (fused attention, nested tensors, oneDNN)
        assert count_flops(model, inputs).uncounted == {}


def test_padding_backward_and_fold_cost_their_additions():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    for mode in ("reflect", "replicate"):

        class Pad(nn.Module):
            def forward(self, t, mode=mode):
                return F.pad(t, (1, 2, 1, 0), mode=mode)

        r = count_flops(Pad(), x, backward=True)
        assert r.forward == r.forward.__class__(0, 0, 0)  # a copy
        padded = 1 * 2 * 5 * 7 - x.numel()  # each padded element is added back once
        assert r.backward.other_flops == padded
    cols = torch.randn(1, 2 * 9, 16)

    class Fold(nn.Module):
        def forward(self, t):
            return F.fold(t, (6, 6), 3)

    assert count_flops(Fold(), cols).other_flops == cols.numel()  # one add per patch element
