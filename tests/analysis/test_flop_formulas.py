"""Formula table details: rarely used kernels, classification, decomposition, custom ops."""

from __future__ import annotations

import torch
from torch import nn

from netarchitect.analysis import count_flops
from netarchitect.analysis._common import storage_key, storage_nbytes
from netarchitect.analysis._tracking import ModuleTracker
from netarchitect.analysis.flop_formulas import classify, numel, op_display_name

aten = torch.ops.aten


def meta(*shape):
    return torch.empty(shape, device="meta")


def cost(op, *args, out=None, **kwargs):
    return classify(op).cost(args, kwargs, out)


def test_rare_kernels_by_formula():
    x, w = meta(4, 6), meta(6, 5)
    assert cost(aten._addmm_activation.default, meta(5), x, w, out=meta(4, 5))[1] == (120, 40)
    bn = cost(aten._batch_norm_no_update.default, meta(2, 3, 4), None, None, None, None, 0.1, 1e-5)
    assert bn[1] == (0, 24 * 2)
    assert cost(aten._fused_rms_norm.default, meta(2, 8), [8], meta(8), None)[1] == (0, 16 * 5)
    grad = meta(2, 3, 4, 4)
    pool = cost(
        aten.avg_pool2d_backward.default,
        grad,
        grad,
        [2],
        [2],
        [0],
        False,
        True,
        None,
        out=meta(2, 3, 8, 8),
    )
    assert pool[1] == (0, 384)
    assert cost(aten.mse_loss_backward.default, meta(), x, x, 1, out=x)[1] == (0, 48)
    assert cost(aten.native_dropout.default, x, 0.5, True)[1] == (0, 24)
    idx = torch.zeros(7, dtype=torch.long, device="meta")
    bag = cost(aten._embedding_bag.default, meta(10, 3), idx, idx[:2])
    assert bag[1] == (0, 21)
    back = cost(
        aten._embedding_bag_backward.default, meta(2, 3), idx, idx[:2], idx, idx, idx, 10, False, 0
    )
    assert back[1] == (0, 21)
    assert cost(aten._cdist_forward.default, meta(5, 3), meta(4, 3), 2.0, None, out=meta(5, 4))[
        1
    ] == (0, 3 * 20 * 3)
    assert cost(
        aten._cdist_backward.default,
        meta(5, 4),
        meta(5, 3),
        meta(4, 3),
        2.0,
        meta(5, 4),
        out=meta(5, 3),
    )[1] == (0, 3 * 20 * 3)


def test_varlen_kernel_on_meta_falls_back_to_dense():
    q = meta(5, 3, 8)  # (total tokens, heads, dim) with offsets we cannot read on meta
    cu = torch.zeros(3, dtype=torch.int32, device="meta")
    kind, (macs, _) = cost(
        aten._flash_attention_forward.default, q, q, q, cu, cu, 3, 3, 0.0, False, False
    )
    assert kind == "formula" and macs == 3 * 5 * 5 * 16


def test_classification_and_names():
    assert classify(aten.view.default).kind == "zero"
    assert classify(aten.gather.default).kind == "lookup"
    assert classify(aten.add_.Tensor).name == "add"
    assert op_display_name(aten.relu_.default) == "aten.relu"
    assert classify(aten.topk.default).kind == "unknown"
    assert numel([meta(2), (meta(3),)]) == 5 and numel(None) == 0


def test_custom_operator_is_uncounted():
    @torch.library.custom_op("netarchitect_test::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    class Net(nn.Module):
        def forward(self, x):
            return twice(x)

    r = count_flops(Net(), torch.randn(3))
    assert r.uncounted == {"netarchitect_test.twice": 1}
    assert classify(torch.ops.netarchitect_test.twice.default).name == "netarchitect_test::twice"


def test_composite_ops_are_decomposed_under_inference_mode():
    class Net(nn.Module):
        def forward(self, a, b):
            return torch.outer(a, b).sum() + torch.cdist(a[None, :, None], b[None, :, None]).sum()

    with torch.inference_mode():
        r = count_flops(Net(), (torch.randn(3), torch.randn(4)))
    assert r.uncounted == {}
    assert r.by_operator["aten.mul"].other_flops == 12  # outer -> broadcast multiply


def test_tracker_ignores_foreign_modules():
    inner, foreign = nn.Linear(2, 2), nn.Linear(2, 2)
    tracker = ModuleTracker(nn.Sequential(inner))
    with tracker:
        foreign(torch.randn(1, 2))  # not part of the tracked model
        assert tracker.stack == []
        tracker.stack.append("0")
        tracker._starts.append(0)
        tracker._on_post(nn.Sequential(inner), (), None)  # root never entered: ignored
        assert tracker.stack == ["0"]


def test_storage_helpers():
    sparse = torch.eye(3).to_sparse()
    assert storage_key(sparse)[0] == "tensor"
    assert storage_nbytes(sparse) == sparse.numel() * 4
