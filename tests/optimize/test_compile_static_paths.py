"""The blocks whose eager forward is data-dependent (sparse MoE dispatch, early exits) take a
static-shape path under ``torch.compile``: one graph, and the same outputs as eager.

Each path is checked twice: compiled with ``fullgraph=True`` (Dynamo would raise on a
break), and run eagerly with ``torch.compiler.is_compiling`` patched to ``True`` (the same
Python lines, visible to coverage, and with gradients).
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch

import netarchitect as na
from netarchitect.layers import _linear_kernel
from netarchitect.layers.early_exit import EarlyExit
from netarchitect.layers.moe import MoEFeedForward
from netarchitect.optimize.compile import compile_model, graph_breaks
from netarchitect.registry import block_examples, model_example
from netarchitect.testing._outputs import flatten_tensors


def _compiled(module: torch.nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    torch._dynamo.reset()
    try:
        return compile_model(module, backend="eager")(*inputs)
    finally:
        torch._dynamo.reset()


def _as_if_compiling(module: torch.nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    with mock.patch("torch.compiler.is_compiling", return_value=True):
        return module(*inputs)


@pytest.mark.parametrize("ex", block_examples(MoEFeedForward), ids=lambda ex: ex.name)
def test_moe_static_path_matches_sparse_dispatch(ex) -> None:
    moe = MoEFeedForward(**ex.kwargs)
    x = ex.inputs[0]
    ref = moe(x)
    aux, dropped = moe.aux_loss, moe.dropped_tokens
    if ex.name == "capacity":
        assert int(dropped) > 0  # the capacity binds: dropped assignments must stay dropped
    for run in (_compiled, _as_if_compiling):
        torch.testing.assert_close(run(moe, x), ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(moe.aux_loss, aux)
        assert torch.equal(moe.dropped_tokens, dropped)
    assert graph_breaks(moe, x) == []


def test_moe_static_path_gradients_match() -> None:
    ex = MoEFeedForward.example()
    moe = MoEFeedForward(**ex.kwargs)
    x = ex.inputs[0].clone().requires_grad_(True)
    grads = []
    for run in (lambda m, t: m(t), _as_if_compiling):
        moe.zero_grad(), setattr(x, "grad", None)
        (run(moe, x).square().sum() + moe.aux_loss).backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in moe.parameters())])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["sample", "batch"])
def test_early_exit_static_path_matches_eager(policy: str) -> None:
    ex = EarlyExit.example()
    block = EarlyExit(**{**ex.kwargs, "policy": policy}).eval()
    x = ex.inputs[0]
    ref = block(x)
    depths = block.exit_depths.clone()
    if policy == "sample":
        assert len(set(depths.tolist())) > 1  # samples really leave at different exits
    for run in (_compiled, _as_if_compiling):
        block.exit_depths = None
        torch.testing.assert_close(run(block, x), ref)
        assert torch.equal(block.exit_depths, depths)
        assert block.last_depth == len(block.stages)  # every stage ran
    assert graph_breaks(block, x) == []


def test_moe_decoder_model_compiles_as_one_graph() -> None:
    ex = model_example("moe-decoder-s")
    model = na.create_model("moe-decoder-s", **{**ex.kwargs, "seed": 0}).eval()
    out = flatten_tensors(_compiled(model, *ex.inputs))
    torch.testing.assert_close(out, flatten_tensors(model(*ex.inputs)))


@pytest.mark.skipif(_linear_kernel._ONEDNN is None, reason="no oneDNN in this build")
def test_linear_kernel_takes_plain_linear_when_compiling() -> None:
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    with torch.no_grad():
        assert _linear_kernel._takes_onednn(x, w, None)
        with mock.patch("torch.compiler.is_compiling", return_value=True):
            assert not _linear_kernel._takes_onednn(x, w, None)
