"""Each block with a pruning rule, between two layers, at its registered examples: pruning
is exact (the pruned units zeroed beforehand give the same output) and shrinks it."""

from __future__ import annotations

import pytest
import torch

from netarchitect.network import build
from netarchitect.optimize.pruning import PruneError, apply_plan, plan_pruning, zero_pruned
from netarchitect.registry import block_examples, get_block

BLOCKS = ["mlp", "swiglu", "gated_mlp", "glu", "geglu", "reglu", "moe", "multi_head_attention",
          "layerscale", "squeeze_excite", "depthwise_separable_conv", "fused_mbconv",
          "inverted_residual", "mobilenetv3_block", "basic_block", "bottleneck",
          "convnext_block", "dense_block", "dense_transition", "conv_norm_act",
          "transformer_block", "vit_block", "highway", "conformer_block"]
_IN = ("in_channels", "dim", "in_features")


def _cases():
    for name in BLOCKS:
        for i, ex in enumerate(block_examples(get_block(name))):
            if ex.forward_kwargs or len(ex.inputs) != 1 or "context_dim" in ex.kwargs:
                continue  # cross-attention and masked calls need context this spec lacks
            yield pytest.param(name, ex, id=f"{name}-{ex.name or i}")


def _layer(x: torch.Tensor, node_id: str, width: int) -> dict:
    if x.dim() == 4:
        return {"id": node_id, "block": "conv2d", "params": {"out_channels": width, "kernel_size": 1}}
    return {"id": node_id, "block": "linear", "params": {"out_features": width}}


@pytest.mark.parametrize(("name", "ex"), list(_cases()))
def test_block_prunes_exactly_between_two_layers(name: str, ex) -> None:
    (x,) = ex.inputs
    params = {k: v for k, v in ex.kwargs.items() if k not in _IN}
    width = x.shape[1] if x.dim() == 4 else x.shape[-1]
    spec = {
        "name": name, "inputs": {"x": {"shape": list(x.shape[1:])}}, "outputs": ["out"],
        "nodes": [_layer(x, "pre", width), {"id": "blk", "block": name, "params": params},
                  _layer(x, "out", 3)],
    }
    net = build(spec, seed=0).eval()
    if name == "multi_head_attention" and ex.kwargs.get("pos") in ("alibi", "relative"):
        with pytest.raises(PruneError, match="per-head position biases"):
            plan_pruning(net, 0.5)  # biases per head: heads kept, and nothing else to prune
        return
    plan = plan_pruning(net, 0.5)
    pruned = apply_plan(net, plan)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zero_pruned(net, plan)(x), rtol=1e-5, atol=1e-5)
