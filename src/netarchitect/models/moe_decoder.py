"""Mixture-of-experts decoder LMs (Switch / GShard / Mixtral): MoE feed-forward every k layers.

The decoder is :class:`~netarchitect.models._lm_base.DecoderLM` with
:class:`~netarchitect.layers.moe.MoEFeedForward` as the feed-forward of every
``moe_every``-th block (top-k routing); the forward returns the logits together with
the summed load-balancing loss. Named sizes: ``moe-decoder-s`` and ``mixtral-8x7b``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..layers._factory import LayerType, check_positive_int
from ..layers.kv_cache import KVCache
from ..layers.moe import MoEFeedForward, moe_aux_loss
from ..registry import Example, register_model
from ._lm_base import DecoderLM

__all__ = ["MOE_SIZES", "MoEDecoderLM", "MoELMOutput", "moe_decoder"]


@dataclass
class MoELMOutput:
    """Logits (B, T, V) and the load-balancing loss (0-dim), summed over the MoE layers."""

    logits: Tensor
    aux_loss: Tensor


class MoEDecoderLM(DecoderLM):
    """Decoder-only LM whose blocks ``moe_every - 1, 2·moe_every - 1, ...`` use a sparse MoE.

    MoE blocks route each token to its ``top_k`` of ``num_experts`` expert
    feed-forwards (``expert_layer``: ``"mlp"``, ``"swiglu"``, ...); the other blocks use
    a dense ``mlp_layer`` (default: the expert type). ``capacity_factor=None`` (default)
    never drops tokens, so outputs do not depend on the rest of the batch. ``forward``
    returns :class:`MoELMOutput`: ``aux_loss`` is
    :func:`~netarchitect.layers.moe.moe_aux_loss` — the sum over MoE layers of
    ``aux_loss_weight · E · Σ_e f_e P_e`` — to add to the training loss. Other
    arguments are :class:`DecoderLM`'s.

    Shapes:
        input_ids: (B, T) -> logits (B, T, vocab_size), aux_loss ().
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        depth: int,
        num_heads: int,
        num_experts: int = 8,
        top_k: int = 2,
        moe_every: int = 1,
        expert_layer: LayerType = "mlp",
        mlp_layer: LayerType = None,
        capacity_factor: float | None = None,
        aux_loss_weight: float = 0.01,
        router_jitter: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_positive_int("moe_every", moe_every)
        moe = functools.partial(
            MoEFeedForward,
            num_experts=num_experts,
            top_k=top_k,
            capacity_factor=capacity_factor,
            aux_loss_weight=aux_loss_weight,
            expert_layer=expert_layer,
            router_jitter=router_jitter,
        )
        dense = expert_layer if mlp_layer is None else mlp_layer
        layers = [moe if (i + 1) % moe_every == 0 else dense for i in range(depth)]
        super().__init__(
            vocab_size, dim, depth=depth, num_heads=num_heads, mlp_layer=layers, **kwargs
        )
        self.num_experts, self.top_k, self.moe_every = num_experts, top_k, moe_every

    def forward(  # type: ignore[override]
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: Sequence[KVCache] | None = None,
        logits_to_keep: int | None = None,
    ) -> MoELMOutput:
        logits = super().forward(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            kv_cache=kv_cache,
            logits_to_keep=logits_to_keep,
        )
        return MoELMOutput(logits, moe_aux_loss(self).to(logits.device))


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
    **kwargs: Any,
) -> MoEDecoderLM:
    """A LLaMA-style :class:`MoEDecoderLM` (RoPE, RMSNorm eps 1e-5, SwiGLU experts, no biases,
    untied head); ``kwargs`` override any argument (``pos="learned"``,
    ``expert_layer="mlp"``, ``act_layer="gelu_tanh"`` for a GPT-style MoE)."""
    config: dict[str, Any] = {
        "pos": "rope",
        "norm_layer": "rmsnorm",
        "norm_eps": 1e-5,
        "expert_layer": "swiglu",
        "bias": False,
        "tie_embeddings": False,
        **kwargs,
    }
    return MoEDecoderLM(vocab_size, dim, depth=depth, num_heads=num_heads, **config)


def _example() -> Example:
    kwargs = {
        "vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
        "hidden_dim": 32, "num_experts": 4, "top_k": 2, "moe_every": 1, "max_positions": 16,
    }
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


def _register(name: str, size: dict[str, Any]) -> None:
    def build(**overrides: Any) -> MoEDecoderLM:
        return moe_decoder(**{**size, **overrides})

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"MoE decoder ``{name}``: {size} (see :func:`moe_decoder`)."
    register_model(name, example=_example)(build)


for _name, _size in MOE_SIZES.items():
    _register(_name, _size)
