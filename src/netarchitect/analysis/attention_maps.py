"""Attention maps of any model in one call, and attention rollout (Abnar & Zuidema, 2020).

* :func:`attention_maps` runs the model once and returns, per attention module (every
  :class:`~netarchitect.layers.attention.MultiHeadAttention`, hence every transformer,
  ViT, GPT-2, BERT, LLaMA, conformer or perceiver block), its softmax probabilities
  ``(B, heads, Lq, Lk)``. The model's outputs are those of the fused kernel, unchanged.
* :func:`attention_rollout` multiplies the self-attention maps of successive layers,
  ``R = Π_l norm(½ (fuse_heads(A_l) + I))``, and returns the class token's row (or the mean
  row when there is no class token) over the patch tokens as a patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.attention import MultiHeadAttention
from .attribution import AttributionError

__all__ = ["HEAD_FUSIONS", "attention_maps", "attention_modules", "attention_rollout",
           "recording_attention"]

HEAD_FUSIONS = ("mean", "max", "min")


def attention_modules(model: nn.Module) -> dict[str, MultiHeadAttention]:
    """The model's attention modules by module path (the model itself as ``""``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, MultiHeadAttention)}


class _Store(list):
    """One module's ``attention_store``: also logs each map, with the module's path, in the
    order of the calls across all modules."""

    def __init__(self, name: str, log: list[tuple[str, Tensor]]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def append(self, item: Tensor) -> None:
        super().append(item)
        self.log.append((self.name, item))


@contextmanager
def recording_attention(model: nn.Module) -> Iterator[list[tuple[str, Tensor]]]:
    """Inside, every forward of an attention module of ``model`` appends
    ``(module path, probabilities (B, H, Lq, Lk))`` to the yielded list, in call order."""
    modules = attention_modules(model)
    if not modules:
        raise AttributionError(
            f"{type(model).__name__} has no attention modules (MultiHeadAttention) to read"
        )
    log: list[tuple[str, Tensor]] = []
    previous = {name: m.__dict__.get("attention_store") for name, m in modules.items()}
    for name, m in modules.items():
        m.attention_store = _Store(name, log)
    try:
        yield log
    finally:
        for name, m in modules.items():
            if previous[name] is None:
                m.__dict__.pop("attention_store", None)
            else:
                m.attention_store = previous[name]


def attention_maps(
    model: nn.Module, inputs: Tensor | Sequence[Any] | Mapping[str, Any], **kwargs: Any
) -> dict[str, Tensor]:
    """Run ``model`` once (no gradients) on ``inputs`` (a tensor, a tuple of positional
    inputs or a dict of keyword inputs; ``kwargs`` are passed too) and return the attention
    probabilities ``(B, heads, Lq, Lk)`` of every attention module, in call order, keyed by
    module path (a module called ``n > 1`` times also gets ``path#1`` ... ``path#{n-1}``)."""
    args, kw = _split(inputs)
    with recording_attention(model) as log, torch.no_grad():
        model(*args, **kw, **kwargs)
    maps: dict[str, Tensor] = {}
    seen: dict[str, int] = {}
    for name, t in log:
        i = seen[name] = seen.get(name, -1) + 1
        maps[name if i == 0 else f"{name}#{i}"] = t
    return maps


def _split(inputs: Tensor | Sequence[Any] | Mapping[str, Any]) -> tuple[tuple, dict]:
    if isinstance(inputs, Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    return tuple(inputs), {}


def attention_rollout(
    maps: Mapping[str, Tensor] | Sequence[Tensor],
    *,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
    num_prefix_tokens: int = 1,
    grid: tuple[int, int] | None = None,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) over self-attention ``maps`` in layer order.

    Each layer's heads are fused (``head_fusion``: ``mean``, ``max`` or ``min``); the
    ``discard_ratio`` fraction of its smallest entries (per sample, never the first token's
    attention to itself) is set to zero; then ``Â = norm_rows(½ (A + I))`` and
    ``R = Â_L ⋯ Â_1``. Returns, for ``num_prefix_tokens >= 1``, the first (class) token's row
    ``R[:, 0, prefix:]``, else the mean row ``mean_i R[:, i, :]``, reshaped to ``grid``
    (default: the square of the patch count), scaled to a maximum of 1.

    Shapes:
        maps: each (B, H, T, T); output: (B, h, w).
    """
    layers = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    if head_fusion not in HEAD_FUSIONS:
        raise AttributionError(f"head_fusion={head_fusion!r}: choose one of {HEAD_FUSIONS}")
    if not 0.0 <= discard_ratio < 1.0:
        raise AttributionError(f"discard_ratio={discard_ratio} must be in [0, 1)")
    if not layers:
        raise AttributionError("attention_rollout needs at least one attention map")
    shape = layers[0].shape
    for a in layers:
        if a.dim() != 4 or a.shape[-1] != a.shape[-2] or a.shape != shape:
            raise AttributionError(
                f"attention_rollout needs self-attention maps of one shape (B, H, T, T); got "
                f"{tuple(a.shape)} next to {tuple(shape)}"
            )
    B, _, T, _ = shape
    patches = T - num_prefix_tokens
    if grid is None:
        side = math.isqrt(max(patches, 0))
        grid = (side, side)
    if num_prefix_tokens < 0 or patches < 1 or grid[0] * grid[1] != patches:
        raise AttributionError(
            f"{T} tokens with num_prefix_tokens={num_prefix_tokens} leave {patches} patch "
            f"tokens, not a grid {grid}; pass grid=(h, w)"
        )
    eye = torch.eye(T, dtype=torch.float32, device=layers[0].device)
    result = eye.expand(B, T, T)
    for a in layers:
        fused = getattr(a.float(), head_fusion)(dim=1)
        fused = fused.values if head_fusion != "mean" else fused  # (B, T, T)
        fused = _discard(fused, discard_ratio)
        a_hat = (fused + eye) / 2
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)
        result = a_hat @ result
    row = result[:, 0] if num_prefix_tokens else result.mean(1)  # (B, T)
    mask = row[:, num_prefix_tokens:].reshape(B, *grid)
    peak = mask.flatten(1).amax(1).clamp_min(torch.finfo(mask.dtype).tiny)
    return mask / peak[:, None, None]


def _discard(fused: Tensor, ratio: float) -> Tensor:
    """Zero the ``ratio`` fraction of smallest entries of each sample's (T, T) map, never
    entry (0, 0)."""
    flat = fused.flatten(1).clone()  # (B, T·T)
    count = int(flat.shape[1] * ratio)
    if count == 0:
        return fused
    _, idx = flat.topk(count, dim=1, largest=False)
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    drop[:, 0] = False
    return flat.masked_fill(drop, 0.0).view_as(fused)
