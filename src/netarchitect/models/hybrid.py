"""A convolution-then-attention hybrid in the CoAtNet layout (Dai et al., 2021): C-C-T-T.

Design rationale
----------------
Convolutions and self-attention are good at different things. A depthwise convolution
has a small, fixed, translation-equivariant receptive field: a strong prior that makes
early high-resolution layers cheap and sample-efficient, which is where images have
most pixels and most local structure. Self-attention has a global, input-dependent
receptive field and more capacity, but costs O(N²) in the number of tokens and lacks
the locality prior, so it needs lots of data when used from the first layer (ViT).
CoAtNet's study found that stacking convolutional stages first and attention stages
last (C-C-T-T) generalises like a ConvNet and scales like a Transformer. Here:

- stem (stride 2): two 3×3 ``conv_norm_act``;
- stages 1–2 (strides 4, 8): MBConv (``inverted_residual``, expansion 4, SE 0.25,
  GELU), the first block of each stage downsampling;
- stages 3–4 (strides 16, 32): a 2×2 stride-2 ``patch_embed`` turns the feature map
  into tokens of the stage width (downsampling and widening at once), ``pos_embed`` adds
  learned absolute positions, then pre-norm ``vit_block`` s with heads of
  ``head_dim`` channels; before stage 4 ``token_grid`` lays the tokens back out as a map;
- head: LayerNorm, mean over tokens, linear classifier.

At 224² the attention stages see 14×14 and 7×7 tokens, where global attention is cheap.
Deviation from CoAtNet: absolute learned positions instead of relative attention bias
(reusing the library's blocks), so the input size is fixed at build time.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import INIT_KAIMING_FAN_OUT, SpecBuilder, Stage, check_image_args, variant
from .vit import VIT_INIT

__all__ = ["coatnet_lite_0", "coatnet_lite_nano", "hybrid"]


def _transformer_stage(
    depth: int, dim: int, tokens: int, reduction: int, head_dim: int, mlp_ratio: float, first: bool
) -> Stage:
    if dim % head_dim:
        raise SpecError(
            f"head_dim={head_dim} does not divide the stage width {dim}", path="head_dim"
        )
    pre: list[tuple[str, str, dict[str, Any]]] = [] if first else [("grid", "token_grid", {})]
    pre += [
        ("embed", "patch_embed", {"dim": dim, "patch_size": 2}),
        ("pos", "learned_pos_embed", {"max_positions": tokens}),
    ]
    block = {"num_heads": dim // head_dim, "mlp_ratio": mlp_ratio}
    return Stage("vit_block", depth, block, pre=pre, reduction=reduction)


def hybrid(
    *,
    stem_width: int = 64,
    depths: tuple[int, int, int, int] = (2, 3, 5, 2),
    dims: tuple[int, int, int, int] = (96, 192, 384, 768),
    expand_ratio: float = 4.0,
    head_dim: int = 32,
    mlp_ratio: float = 4.0,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    name: str = "hybrid",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The C-C-T-T hybrid family builder (``img_size`` must be a multiple of 32)."""
    check_image_args(in_chans, num_classes, img_size, stem_width=stem_width, head_dim=head_dim)
    if len(depths) != 4 or len(dims) != 4:
        raise SpecError(f"depths={depths} and dims={dims} need four stages (C-C-T-T)")
    if img_size % 32:
        raise SpecError(f"img_size={img_size} must be a multiple of 32", path="img_size")
    mbconv = {"expand_ratio": expand_ratio, "se_ratio": 0.25, "act_layer": "gelu"}
    stages = [
        Stage(
            "inverted_residual", depths[i], {"out_channels": dims[i], **mbconv}, first={"stride": 2}
        )
        for i in range(2)
    ] + [
        _transformer_stage(depths[i], dims[i], (img_size // r) ** 2, r, head_dim, mlp_ratio, i == 2)
        for i, r in ((2, 16), (3, 32))
    ]
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add(
        "stem_conv1",
        "conv_norm_act",
        {"out_channels": stem_width, "stride": 2, "act_layer": "gelu"},
    )
    b.add("stem_conv2", "conv_norm_act", {"out_channels": stem_width, "act_layer": "gelu"})
    b.stage()
    b.add_stages(stages, drop_path_rate=drop_path_rate)
    b.add("norm", "layernorm", {"eps": 1e-6})
    b.add_head(num_classes, ("token_pool", {"pool_type": "avg"}), drop_rate=drop_rate)
    return b.build((*INIT_KAIMING_FAN_OUT, *VIT_INIT), device=device, dtype=dtype, seed=seed)


def _example() -> Example:
    kwargs = {
        "stem_width": 8,
        "depths": (1, 1, 1, 1),
        "dims": (8, 16, 16, 32),
        "head_dim": 8,
        "num_classes": 5,
        "img_size": 64,
    }
    return Example(kwargs, (example_tensor(2, 3, 64, 64),))


@register_model("coatnet_lite_0", example=_example)
def coatnet_lite_0(**kwargs: Any) -> ClassifierNetwork:
    """CoAtNet-0 layout (depths 2-3-5-2, widths 96–768) with absolute positions."""
    return variant(hybrid, {"name": "coatnet_lite_0"}, kwargs)


@register_model("coatnet_lite_nano", example=_example)
def coatnet_lite_nano(**kwargs: Any) -> ClassifierNetwork:
    """A small C-C-T-T hybrid: depths 2-2-2-2, widths 48–384."""
    defaults = {
        "stem_width": 32,
        "depths": (2, 2, 2, 2),
        "dims": (48, 96, 192, 384),
        "name": "coatnet_lite_nano",
    }
    return variant(hybrid, defaults, kwargs)
