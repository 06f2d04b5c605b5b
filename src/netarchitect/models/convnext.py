"""ConvNeXt (Liu et al., 2022), torchvision layout.

Spec: a ``patch_size`` (4) strided "patchify" ``conv2d`` + ``layernorm2d`` stem; four stages of
``convnext_block`` nodes (7×7 depthwise conv, LayerNorm, 4× MLP, LayerScale 1e-6),
each later stage entered through ``layernorm2d`` + 2×2 stride-2 ``conv2d``; global
average pooling, LayerNorm and a linear head. All LayerNorms use eps 1e-6 (the head's is
``head_norm_eps``: transformers' ConvNeXt uses its config's ``layer_norm_eps``). Init:
truncated normal (std 0.02) convolution and linear weights, zero biases.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import SpecBuilder, Stage, check_image_args, variant

__all__ = ["convnext", "convnext_small", "convnext_tiny"]

_EPS = 1e-6
_INIT = (
    {"init": "trunc_normal", "modules": ["Conv2d", "Linear"], "args": {"std": 0.02}},
    {"init": "zeros", "modules": ["Conv2d", "Linear"], "params": ["bias"]},
)


def convnext(
    *,
    depths: tuple[int, ...] = (3, 3, 9, 3),
    dims: tuple[int, ...] = (96, 192, 384, 768),
    kernel_size: int = 7,
    mlp_ratio: float = 4.0,
    layerscale_init: float | None = 1e-6,
    patch_size: int = 4,
    head_norm_eps: float = _EPS,
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    name: str = "convnext",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The ConvNeXt family builder (``layerscale_init=None`` disables LayerScale; the stem
    patchifies with ``patch_size``-strided ``patch_size``² kernels)."""
    check_image_args(
        in_chans,
        num_classes,
        img_size,
        kernel_size=kernel_size,
        patch_size=patch_size,
        head_norm_eps=head_norm_eps,
    )
    if len(depths) != len(dims) or not depths:
        raise SpecError(f"depths={depths} and dims={dims} need the same non-zero length")
    block = {"kernel_size": kernel_size, "mlp_ratio": mlp_ratio, "layerscale_init": layerscale_init}
    stages = [
        Stage(
            "convnext_block",
            depth,
            block,
            pre=()
            if i == 0
            else (
                ("norm", "layernorm2d", {"eps": _EPS}),
                ("down", "conv2d", {"out_channels": dim, "kernel_size": 2, "stride": 2}),
            ),
        )
        for i, (depth, dim) in enumerate(zip(depths, dims))
    ]
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add(
        "stem_conv",
        "conv2d",
        # padding 0: non-overlapping patches (the default "same" padding would shift them)
        {"out_channels": dims[0], "kernel_size": patch_size, "stride": patch_size, "padding": 0},
    )
    b.add("stem_norm", "layernorm2d", {"eps": _EPS})
    b.add_stages(stages, drop_path_rate=drop_path_rate)
    b.add_head(
        num_classes, pre=[("norm", "layernorm", {"eps": head_norm_eps})], drop_rate=drop_rate
    )
    return b.build(_INIT, device=device, dtype=dtype, seed=seed)


def _example() -> Example:
    kwargs = {"depths": (1, 1), "dims": (8, 16), "kernel_size": 3, "num_classes": 5, "img_size": 32}
    return Example(kwargs, (example_tensor(2, 3, 32, 32),))


@register_model("convnext_tiny", example=_example)
def convnext_tiny(**kwargs: Any) -> ClassifierNetwork:
    """ConvNeXt-Tiny: depths (3, 3, 9, 3), dims 96–768; 28,589,128 parameters."""
    return variant(convnext, {"name": "convnext_tiny"}, kwargs)


@register_model("convnext_small", example=_example)
def convnext_small(**kwargs: Any) -> ClassifierNetwork:
    """ConvNeXt-Small: depths (3, 3, 27, 3), dims 96–768; 50,223,688 parameters."""
    return variant(convnext, {"depths": (3, 3, 27, 3), "name": "convnext_small"}, kwargs)
