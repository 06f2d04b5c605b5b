"""Vision Transformer (Dosovitskiy et al., 2021), torchvision layout.

Spec: ``patch_embed`` (a ``patch_size``-strided conv to ``embed_dim`` tokens),
``cls_token`` (a learned class token prepended), ``pos_embed`` (learned absolute
positions for all ``N + 1`` tokens), ``depth`` pre-norm ``vit_block`` nodes (LayerNorm
eps 1e-6, ``mlp_ratio`` GELU MLP), a final LayerNorm, then the head: the class token
(``global_pool="token"``) or the mean patch token (``"avg"``) and a linear classifier.
Init (timm / the paper's JAX code): truncated normal (std 0.02) linear weights and
positions, zero biases; the class token starts at ``N(0, 1e-6²)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import SpecBuilder, Stage, check_image_args, variant

__all__ = ["VIT_INIT", "vit", "vit_b_16", "vit_l_16", "vit_s_16", "vit_ti_16"]

VIT_INIT = (
    {"init": "trunc_normal", "modules": ["Linear"], "args": {"std": 0.02}},
    {"init": "zeros", "modules": ["Linear"], "params": ["bias"]},
)


def vit(
    *,
    patch_size: int = 16,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    global_pool: str = "token",
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    norm_eps: float = 1e-6,
    name: str = "vit",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The ViT family builder (``img_size`` must be a multiple of ``patch_size``)."""
    check_image_args(
        in_chans,
        num_classes,
        img_size,
        patch_size=patch_size,
        depth=depth,
        embed_dim=embed_dim,
        num_heads=num_heads,
    )
    if img_size % patch_size:
        raise SpecError(
            f"img_size={img_size} is not a multiple of patch_size={patch_size}", path="img_size"
        )
    if global_pool not in ("token", "avg"):
        raise SpecError(f"global_pool={global_pool!r} must be 'token' or 'avg'", path="global_pool")
    num_patches = (img_size // patch_size) ** 2
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add("patch_embed", "patch_embed", {"dim": embed_dim, "patch_size": patch_size})
    b.add("cls_token", "cls_token")
    b.add("pos_embed", "learned_pos_embed", {"max_positions": num_patches + 1})
    if drop_rate:
        b.add("pos_drop", "dropout", {"p": drop_rate})
    block = {
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
        "norm_eps": norm_eps,
        **({"drop": drop_rate} if drop_rate else {}),
        **({"attn_drop": attn_drop_rate} if attn_drop_rate else {}),
    }
    b.add_stages(
        [Stage("vit_block", depth, block, reduction=patch_size)],
        drop_path_rate=drop_path_rate,
        mark="block",
    )
    b.add("norm", "layernorm", {"eps": norm_eps})
    pool = (
        {"pool_type": "cls"}
        if global_pool == "token"
        else {"pool_type": "avg", "num_prefix_tokens": 1}
    )
    b.add_head(num_classes, ("token_pool", pool), drop_rate=drop_rate)
    return b.build(VIT_INIT, device=device, dtype=dtype, seed=seed)


def _example() -> Example:
    kwargs = {
        "patch_size": 8,
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "mlp_ratio": 2.0,
        "num_classes": 5,
        "img_size": 32,
    }
    return Example(kwargs, (example_tensor(2, 3, 32, 32),))


def _vit(dim: int, depth: int, heads: int, name: str, kwargs: dict[str, Any]) -> ClassifierNetwork:
    defaults = {"embed_dim": dim, "depth": depth, "num_heads": heads, "name": name}
    return variant(vit, defaults, kwargs)


@register_model("vit_ti_16", example=_example)
def vit_ti_16(**kwargs: Any) -> ClassifierNetwork:
    """ViT-Ti/16: width 192, depth 12, 3 heads."""
    return _vit(192, 12, 3, "vit_ti_16", kwargs)


@register_model("vit_s_16", example=_example)
def vit_s_16(**kwargs: Any) -> ClassifierNetwork:
    """ViT-S/16: width 384, depth 12, 6 heads."""
    return _vit(384, 12, 6, "vit_s_16", kwargs)


@register_model("vit_b_16", example=_example)
def vit_b_16(**kwargs: Any) -> ClassifierNetwork:
    """ViT-B/16: width 768, depth 12, 12 heads; 86,567,656 parameters."""
    return _vit(768, 12, 12, "vit_b_16", kwargs)


@register_model("vit_l_16", example=_example)
def vit_l_16(**kwargs: Any) -> ClassifierNetwork:
    """ViT-L/16: width 1024, depth 24, 16 heads; 304,326,632 parameters."""
    return _vit(1024, 24, 16, "vit_l_16", kwargs)
