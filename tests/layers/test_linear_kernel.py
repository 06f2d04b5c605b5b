"""The few-row inference kernel of ``Linear``: same numbers as ``F.linear``, and taken only
where nothing (autograd, FLOP counters, compilers, other dtypes) can tell the difference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode

from netarchitect import create_model
from netarchitect.analysis import count_flops
from netarchitect.layers import _linear_kernel as K
from netarchitect.layers.attention import MultiHeadAttention
from netarchitect.layers.basic import Linear

pytestmark = pytest.mark.skipif(K._ONEDNN is None, reason="torch built without oneDNN")


Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _case(rows: int = 3, bias: bool = True) -> Case:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, rows, 48, generator=g)
    w = torch.randn(40, 48, generator=g)
    return x, w, torch.randn(40, generator=g) if bias else None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 5, K.FEW_ROWS])
def test_few_rows_take_onednn_and_match_f_linear(rows: int, bias: bool) -> None:
    x, w, b = _case(rows, bias)
    with torch.no_grad():
        assert K._takes_onednn(x, w, b)
        assert_close(K.linear(x, w, b), F.linear(x, w, b))
    with torch.inference_mode():
        assert_close(K.linear(x, w, b), F.linear(x, w, b))


def test_in_place_weight_updates_are_seen() -> None:
    x, w, b = _case()
    with torch.no_grad():
        K.linear(x, w, b)
        w.mul_(-2.0)
        b.add_(1.0)
        assert_close(K.linear(x, w, b), F.linear(x, w, b))


def test_everything_else_takes_f_linear() -> None:
    x, w, b = _case()
    with torch.no_grad():
        assert not K._takes_onednn(x.double(), w.double(), b.double())
        assert not K._takes_onednn(x.bfloat16(), w.bfloat16(), b.bfloat16())
        assert not K._takes_onednn(torch.randn(K.FEW_ROWS + 1, 48), w, b)
        assert not K._takes_onednn(torch.randn(0, 48), w, b)
        assert not K._takes_onednn(torch.randn(48), w, b)  # no batch dim
        assert not K._takes_onednn(x, w.t().contiguous().t(), b)  # non-contiguous weight
        assert not K._takes_onednn(x.to("meta"), w.to("meta"), b.to("meta"))
        assert not K._takes_onednn(x.to_sparse(), w, b)
        assert not K._takes_onednn(x, w, b.double())
        with torch.backends.mkldnn.flags(enabled=False):
            assert not K._takes_onednn(x, w, b)
        with torch.device("cpu"):  # a torch-function mode is active
            assert not K._takes_onednn(x, w, b)
        with FlopCounterMode(display=False) as counter:
            K.linear(x, w, b)
        assert counter.get_total_flops() == 2 * 3 * 48 * 40
    w.requires_grad_(True)
    assert not K._takes_onednn(x, w, b)  # autograd would lose the graph
    y = K.linear(x, w, b)
    y.sum().backward()
    assert w.grad is not None


def test_model_outputs_and_flops_are_unchanged_in_no_grad_decoding() -> None:
    model = create_model("gpt2-tiny", seed=0).eval()
    ids = torch.randint(0, 100, (1, 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = model(ids)
        with torch.backends.mkldnn.flags(enabled=False):
            reference = model(ids)
        assert_close(fast, reference)
        counted = count_flops(model, (ids,)).macs
        with torch.backends.mkldnn.flags(enabled=False):
            assert counted == count_flops(model, (ids,)).macs > 0  # counters see every matmul


def test_projections_are_the_fast_linear() -> None:
    attention = MultiHeadAttention(16, 4)
    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    assert all(isinstance(getattr(attention, n), Linear) for n in names)
