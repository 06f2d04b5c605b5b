"""GPT-2 (Radford et al. 2019): learned positions, pre-norm, tanh-GELU MLP, tied embeddings.

Three levels: :func:`~netarchitect.models.decoder.decoder_lm` (every knob) → :func:`gpt`
(GPT-2's choices) → named sizes that only set numbers (``gpt2-tiny``, ``gpt2``,
``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``). Each is a spec-built
:class:`~netarchitect.models._lm_base.CausalLM`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..registry import Example
from ._lm_base import CausalLM
from ._variants import register_sizes
from .decoder import decoder_lm

__all__ = ["GPT2_SIZES", "gpt"]

#: Sizes of the released GPT-2 models (vocab 50257, context 1024).
GPT2_SIZES: dict[str, dict[str, int]] = {
    "gpt2-tiny": {"dim": 64, "depth": 2, "num_heads": 2, "max_positions": 128},
    "gpt2": {"dim": 768, "depth": 12, "num_heads": 12},
    "gpt2-medium": {"dim": 1024, "depth": 24, "num_heads": 16},
    "gpt2-large": {"dim": 1280, "depth": 36, "num_heads": 20},
    "gpt2-xl": {"dim": 1600, "depth": 48, "num_heads": 25},
}


def gpt(
    *,
    vocab_size: int = 50257,
    dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    max_positions: int = 1024,
    name: str = "gpt2",
    **kwargs: Any,
) -> CausalLM:
    """A GPT-2-style decoder: learned absolute positions, pre-norm LayerNorm (eps 1e-5), 4x MLP
    with tanh-GELU (``gelu_new``), biases everywhere, tied head.

    ``kwargs`` override any other :func:`~netarchitect.models.decoder.decoder_lm` argument
    (``drop=0.1`` for GPT-2's dropout, ``pos="rope"``, ``device="meta"``, ``seed=0``, ...).
    """
    config: dict[str, Any] = {
        "pos": "learned",
        "norm_layer": "layernorm",
        "norm_eps": 1e-5,
        "mlp_layer": "mlp",
        "act_layer": "gelu_tanh",
        "bias": True,
        "tie_embeddings": True,
        **kwargs,
    }
    return decoder_lm(
        vocab_size, dim, depth=depth, num_heads=num_heads, max_positions=max_positions,
        name=name, **config,
    )


def _example() -> Example:
    kwargs = {"vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 16}
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


register_sizes(gpt, GPT2_SIZES, example=_example, describe="GPT-2")
