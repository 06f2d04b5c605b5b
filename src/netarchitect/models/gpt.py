"""GPT-2 (Radford et al. 2019): learned positions, pre-norm, tanh-GELU MLP, tied embeddings.

Three levels: :class:`~netarchitect.models._lm_base.DecoderLM` (every knob) →
:func:`gpt` (GPT-2's choices) → named sizes that only set numbers
(``gpt2-tiny``, ``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..registry import Example, register_model
from ._lm_base import DecoderLM

__all__ = ["GPT2_SIZES", "DecoderLM", "gpt"]

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
    **kwargs: Any,
) -> DecoderLM:
    """A GPT-2-style :class:`DecoderLM`: learned absolute positions, pre-norm LayerNorm
    (eps 1e-5), 4x MLP with tanh-GELU (``gelu_new``), biases everywhere, tied head.

    ``kwargs`` override any other :class:`DecoderLM` argument (``drop=0.1`` for GPT-2's
    dropout, ``pos="rope"``, ``device="meta"``, ...).
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
    return DecoderLM(
        vocab_size, dim, depth=depth, num_heads=num_heads, max_positions=max_positions, **config
    )


def _example() -> Example:
    kwargs = {"vocab_size": 64, "dim": 32, "depth": 2, "num_heads": 4, "max_positions": 16}
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return Example(kwargs, (ids,))


def _register(name: str, size: dict[str, int]) -> None:
    def build(**overrides: Any) -> DecoderLM:
        return gpt(**{**size, **overrides})

    build.__name__ = name.replace("-", "_")
    build.__doc__ = f"GPT-2 ``{name}``: {size} (see :func:`gpt`)."
    register_model(name, example=_example)(build)


for _name, _size in GPT2_SIZES.items():
    _register(_name, _size)
