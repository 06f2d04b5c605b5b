"""LLaMA-style decoders (Touvron et al. 2023): RMSNorm, SwiGLU, rotary positions, GQA, no biases.

:func:`llama` fixes LLaMA's choices on :func:`~netarchitect.models.decoder.decoder_lm`;
named sizes only set numbers: ``llama-tiny`` (llama2.c's 15M "stories" model, tied
embeddings), ``llama-1b`` (LLaMA-3.2-1B), ``llama-7b`` (LLaMA-2-7B), ``llama3-8b``
(LLaMA-3-8B, 8K context) and ``llama3.1-8b`` (LLaMA-3.1-8B, 128K context). The
LLaMA-3.1/3.2 sizes rescale RoPE frequencies as their published configs do
(``rope_type="llama3"``: factor 8 for 3.1-8B, 32 for 3.2-1B; low/high frequency factors
1/4; original context 8192).
"""

from __future__ import annotations

from typing import Any

import torch

from ..layers.mlp import gated_hidden_dim
from ..layers.positional import RopeScaling
from ..registry import Example
from ._lm_base import CausalLM
from ._variants import register_sizes
from .decoder import decoder_lm

__all__ = ["LLAMA_SIZES", "llama"]


def _llama3_rope(factor: float) -> dict[str, Any]:
    """LLaMA-3.1/3.2's published ``rope_type="llama3"`` rescaling with ``factor``."""
    return {
        "type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_positions": 8192,
    }


#: Published shapes; ``hidden_dim`` is the SwiGLU width.
LLAMA_SIZES: dict[str, dict[str, Any]] = {
    "llama-tiny": {
        "vocab_size": 32000, "dim": 288, "depth": 6, "num_heads": 6, "hidden_dim": 768,
        "max_positions": 256, "tie_embeddings": True,
    },
    "llama-1b": {
        "vocab_size": 128256, "dim": 2048, "depth": 16, "num_heads": 32, "num_kv_heads": 8,
        "hidden_dim": 8192, "max_positions": 131072, "rope_base": 500000.0,
        "rope_scaling": _llama3_rope(32.0), "tie_embeddings": True,
    },
    "llama-7b": {
        "vocab_size": 32000, "dim": 4096, "depth": 32, "num_heads": 32, "hidden_dim": 11008,
        "max_positions": 4096,
    },
    "llama2-70b": {
        "vocab_size": 32000, "dim": 8192, "depth": 80, "num_heads": 64, "num_kv_heads": 8,
        "hidden_dim": 28672, "max_positions": 4096,
    },
    "llama3-8b": {
        "vocab_size": 128256, "dim": 4096, "depth": 32, "num_heads": 32, "num_kv_heads": 8,
        "hidden_dim": 14336, "max_positions": 8192, "rope_base": 500000.0,
    },
    "llama3.1-8b": {
        "vocab_size": 128256, "dim": 4096, "depth": 32, "num_heads": 32, "num_kv_heads": 8,
        "hidden_dim": 14336, "max_positions": 131072, "rope_base": 500000.0,
        "rope_scaling": _llama3_rope(8.0),
    },
}


def llama(
    *,
    vocab_size: int = 32000,
    dim: int = 4096,
    depth: int = 32,
    num_heads: int = 32,
    num_kv_heads: int | None = None,
    hidden_dim: int | None = None,
    multiple_of: int = 256,
    max_positions: int = 4096,
    rope_base: float = 10000.0,
    rope_scaling: RopeScaling = None,
    norm_eps: float = 1e-5,
    tie_embeddings: bool = False,
    name: str = "llama",
    **kwargs: Any,
) -> CausalLM:
    """A LLaMA-style decoder: RoPE (``rotate_half`` layout), pre-norm RMSNorm,
    SwiGLU feed-forward, grouped-query attention (``num_kv_heads``), no biases, untied head.

    ``hidden_dim`` defaults to LLaMA's rule ``multiple_of · ceil(8·dim/3 / multiple_of)``
    (11008 for dim 4096). ``rope_scaling`` rescales the RoPE frequencies (plain data, see
    :class:`~netarchitect.layers.positional.RotaryEmbedding`), e.g. LLaMA-3.1's
    ``{"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_positions": 8192}``. ``kwargs`` override any other
    :func:`~netarchitect.models.decoder.decoder_lm` argument.
    """
    if hidden_dim is None:
        hidden_dim = gated_hidden_dim(dim, 4.0, multiple_of)
    config: dict[str, Any] = {
        "pos": "rope",
        "norm_layer": "rmsnorm",
        "mlp_layer": "swiglu",
        "act_layer": None,
        "bias": False,
        "mlp_bias": False,
        **kwargs,
    }
    return decoder_lm(
        vocab_size,
        dim,
        depth=depth,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        hidden_dim=hidden_dim,
        max_positions=max_positions,
        rope_base=rope_base,
        norm_eps=norm_eps,
        tie_embeddings=tie_embeddings,
        rope_scaling=rope_scaling,
        name=name,
        **config,
    )


def _example() -> Example:
    kwargs = {
        "vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
        "hidden_dim": 48, "max_positions": 16,
    }
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


register_sizes(llama, LLAMA_SIZES, example=_example, describe="LLaMA-style")
