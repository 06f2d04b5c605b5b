"""Mixture-of-experts decoder LMs (Switch / GShard / Mixtral): MoE feed-forward every k layers.

The decoder is :func:`~netarchitect.models.decoder.decoder_lm` with
:class:`~netarchitect.layers.moe.MoEFeedForward` as the feed-forward of every
``moe_every``-th block (top-k routing); the forward returns the logits together with
the summed load-balancing loss. Named sizes: ``moe-decoder-s`` and ``mixtral-8x7b``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..layers._factory import LayerType, check_positive_int
from ..registry import Example
from ._lm_base import MoECausalLM, MoELMOutput
from ._variants import register_sizes
from .decoder import decoder_lm

__all__ = ["MOE_SIZES", "MoECausalLM", "MoELMOutput", "moe_decoder"]


#: ``moe-decoder-s``: a small LLaMA-style MoE; ``mixtral-8x7b``: Mixtral's published shape.
MOE_SIZES: dict[str, dict[str, Any]] = {
    "moe-decoder-s": {
        "vocab_size": 32000, "dim": 512, "depth": 8, "num_heads": 8, "hidden_dim": 1408,
        "num_experts": 8, "top_k": 2, "moe_every": 2, "max_positions": 2048,
    },
    "mixtral-8x7b": {
        "vocab_size": 32000, "dim": 4096, "depth": 32, "num_heads": 32, "num_kv_heads": 8,
        "hidden_dim": 14336, "num_experts": 8, "top_k": 2, "moe_every": 1,
        "max_positions": 32768, "rope_base": 1e6,
    },
}


def moe_decoder(
    *,
    vocab_size: int = 32000,
    dim: int = 512,
    depth: int = 8,
    num_heads: int = 8,
    num_experts: int = 8,
    top_k: int = 2,
    moe_every: int = 1,
    expert_layer: LayerType = "swiglu",
    mlp_layer: LayerType = None,
    capacity_factor: float | None = None,
    aux_loss_weight: float = 0.01,
    router_jitter: float = 0.0,
    name: str = "moe_decoder",
    **kwargs: Any,
) -> MoECausalLM:
    """A LLaMA-style decoder whose blocks ``moe_every - 1, 2·moe_every - 1, ...`` use a sparse
    :class:`~netarchitect.layers.moe.MoEFeedForward` (RoPE, RMSNorm eps 1e-5, SwiGLU experts,
    no biases, untied head).

    MoE blocks route each token to its ``top_k`` of ``num_experts`` expert feed-forwards
    (``expert_layer``); the other blocks use a dense ``mlp_layer`` (default: the expert
    type). ``capacity_factor=None`` (default) never drops tokens, so outputs do not depend
    on the rest of the batch. ``forward`` returns :class:`MoELMOutput` (logits and the
    summed load-balancing loss). ``kwargs`` override any
    :func:`~netarchitect.models.decoder.decoder_lm` argument (``pos="learned"``,
    ``act_layer="gelu_tanh"`` for a GPT-style MoE).
    """
    check_positive_int("moe_every", moe_every)
    moe = {
        "name": "moe", "num_experts": num_experts, "top_k": top_k,
        "capacity_factor": capacity_factor, "aux_loss_weight": aux_loss_weight,
        "expert_layer": expert_layer, "router_jitter": router_jitter,
    }
    dense = expert_layer if mlp_layer is None else mlp_layer
    layers = [moe if (i + 1) % moe_every == 0 else dense for i in range(depth)]
    config: dict[str, Any] = {
        "pos": "rope",
        "norm_layer": "rmsnorm",
        "norm_eps": 1e-5,
        "bias": False,
        "tie_embeddings": False,
        **kwargs,
    }
    return decoder_lm(  # type: ignore[return-value]
        vocab_size, dim, depth=depth, num_heads=num_heads, mlp_layer=layers,
        kind="moe_causal_lm", name=name, **config,
    )


def _example() -> Example:
    kwargs = {
        "vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
        "hidden_dim": 32, "num_experts": 4, "top_k": 2, "moe_every": 1, "max_positions": 16,
    }
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


register_sizes(moe_decoder, MOE_SIZES, example=_example, describe="MoE decoder")
