"""EfficientNet (Tan & Le, 2019): B0 and its compound-scaled family B1–B7 and any φ.

B0 is a 3×3 stride-2 stem, seven stages of MBConv blocks (``inverted_residual`` with
squeeze-excitation sized ``in_channels / 4`` and SiLU), a 1×1 ``final_conv`` to
``4 × last stage width`` channels, global pooling, dropout and a linear head.

Compound scaling multiplies widths by ``w`` and depths by ``d`` with the reference
implementation's rounding: ``round_filters(c) = make_divisible(c · w, 8)`` (nearest
multiple of 8, never below 90%) and ``round_repeats(n) = ceil(d · n)``. B1–B7 use the
released (w, d, resolution, dropout) table, which was tuned by grid search around the
rule. :func:`efficientnet_custom` applies the rule itself for any φ:

    d = α^φ,  w = β^φ,  resolution = 224 · γ^φ (rounded to a multiple of 8),
    with α = 1.2, β = 1.1, γ = 1.15 (α · β² · γ² ≈ 2: FLOPs grow about 2^φ).

Init as torchvision: Kaiming-normal (fan-out) convolutions, ``U(±1/√num_classes)``
classifier weights, zero biases.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..registry import Example, register_model
from ._classifier import ClassifierNetwork
from ._stages import (
    INIT_KAIMING_FAN_OUT,
    TF_BATCHNORM,
    SpecBuilder,
    Stage,
    check_image_args,
    make_divisible,
    round_repeats,
    variant,
)

__all__ = [
    "COMPOUND_COEFFICIENTS",
    "EFFICIENTNET_B0_STAGES",
    "EFFICIENTNET_PARAMS",
    "compound_scaling",
    "efficientnet",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_custom",
]

#: B0 stages: expansion, kernel, first stride, output channels, repeats.
EFFICIENTNET_B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

#: Released variants: (width_mult, depth_mult, resolution, dropout).
EFFICIENTNET_PARAMS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}

#: Variants whose BatchNorm uses TensorFlow's eps/momentum in torchvision.
_TF_NORM_VARIANTS = ("b5", "b6", "b7")

#: The compound-scaling bases (α depth, β width, γ resolution) found for B0.
COMPOUND_COEFFICIENTS = (1.2, 1.1, 1.15)


def compound_scaling(phi: float) -> tuple[float, float, int]:
    """``(width_mult, depth_mult, resolution)`` for compound coefficient ``phi``."""
    if isinstance(phi, bool) or not isinstance(phi, (int, float)):
        raise SpecError(f"phi={phi!r} must be a real number", path="phi")
    alpha, beta, gamma = COMPOUND_COEFFICIENTS
    resolution = max(8, 8 * round(224 * gamma**phi / 8))
    return beta**phi, alpha**phi, resolution


def efficientnet(
    *,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    stages: tuple[tuple[int, int, int, int, int], ...] = EFFICIENTNET_B0_STAGES,
    stem_channels: int = 32,
    se_ratio: float = 0.25,
    act_layer: str = "silu",
    norm_layer: Any = "batchnorm2d",
    in_chans: int = 3,
    num_classes: int = 1000,
    img_size: int = 224,
    drop_rate: float = 0.2,
    drop_path_rate: float = 0.2,
    name: str = "efficientnet",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> ClassifierNetwork:
    """The EfficientNet family builder: B0's ``stages`` scaled by ``width_mult``/``depth_mult``."""
    check_image_args(in_chans, num_classes, img_size, width_mult=width_mult, depth_mult=depth_mult)

    def width(c: int) -> int:
        return make_divisible(c * width_mult, 8)

    body = [
        Stage(
            "inverted_residual",
            round_repeats(n, depth_mult),
            {
                "out_channels": width(c),
                "kernel_size": k,
                "expand_ratio": t,
                "se_ratio": se_ratio,
                "act_layer": act_layer,
            },
            first={"stride": s},
        )
        for t, k, s, c, n in stages
    ]
    b = SpecBuilder(name, (in_chans, img_size, img_size))
    b.add_mobile_body(
        width(stem_channels),
        body,
        4 * width(stages[-1][3]),
        act_layer=act_layer,
        drop_path_rate=drop_path_rate,
        norm_layer=norm_layer,
    )
    b.add_head(num_classes, drop_rate=drop_rate)
    init: list[dict[str, Any]] = [*INIT_KAIMING_FAN_OUT]
    if num_classes:
        bound = num_classes**-0.5
        init += [
            {"init": "uniform", "modules": ["Linear"], "args": {"a": -bound, "b": bound}},
            {"init": "zeros", "modules": ["Linear"], "params": ["bias"]},
        ]
    return b.build(init, device=device, dtype=dtype, seed=seed)


def efficientnet_custom(*, phi: float = 0.0, **kwargs: Any) -> ClassifierNetwork:
    """EfficientNet scaled from B0 by the compound rule for any ``phi`` (0 is B0)."""
    width_mult, depth_mult, resolution = compound_scaling(phi)
    defaults = {
        "width_mult": width_mult,
        "depth_mult": depth_mult,
        "img_size": resolution,
        "name": f"efficientnet_phi{phi:g}",
    }
    return variant(efficientnet, defaults, kwargs)


def _example(**kwargs: Any) -> Example:
    small = {
        "width_mult": 0.25,
        "depth_mult": 1.0,
        "stages": EFFICIENTNET_B0_STAGES[:2],
        "drop_path_rate": 0.0,
        "num_classes": 5,
        "img_size": 32,
        **kwargs,
    }
    return Example(small, (example_tensor(2, 3, 32, 32),))


register_model("efficientnet_custom", example=lambda: _example(phi=-2.0))(efficientnet_custom)


def _released(key: str) -> Any:
    width_mult, depth_mult, resolution, dropout = EFFICIENTNET_PARAMS[key]
    defaults = {
        "width_mult": width_mult,
        "depth_mult": depth_mult,
        "img_size": resolution,
        "drop_rate": dropout,
        "name": f"efficientnet_{key}",
    }
    if key in _TF_NORM_VARIANTS:
        defaults["norm_layer"] = TF_BATCHNORM

    def builder(**kwargs: Any) -> ClassifierNetwork:
        return variant(efficientnet, defaults, kwargs)

    builder.__name__ = builder.__qualname__ = f"efficientnet_{key}"
    builder.__doc__ = (
        f"EfficientNet-{key.upper()}: width ×{width_mult}, depth ×{depth_mult}, "
        f"{resolution}×{resolution} input, dropout {dropout}."
    )
    return register_model(f"efficientnet_{key}", example=_example)(builder)


efficientnet_b0 = _released("b0")
efficientnet_b1 = _released("b1")
efficientnet_b2 = _released("b2")
efficientnet_b3 = _released("b3")
efficientnet_b4 = _released("b4")
efficientnet_b5 = _released("b5")
efficientnet_b6 = _released("b6")
efficientnet_b7 = _released("b7")
