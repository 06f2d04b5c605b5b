"""Dense prediction: an FPN decoder head for semantic segmentation, and resizing to the input.

:class:`FPNHead` takes a backbone's stage outputs (``feature_info`` order, finest first) as
separate inputs (a spec node with ``merge: args``) and predicts per-pixel class logits;
:class:`ResizeLike` brings them to the input's exact resolution.
:func:`netarchitect.models.segmentation.segmentation_model` wires both onto any backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import ParameterFree, check_positive_int, example_tensor, reset_children
from .basic import Conv2d
from .conv_blocks import ConvNormAct

__all__ = ["FPNHead", "ResizeLike"]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("fpn_head")
class FPNHead(nn.Module):
    """Semantic-FPN decoder (Lin et al. 2017; Kirillov et al. 2019, simplified): a 1×1 lateral
    conv per stage to ``decoder_channels``, the top-down pathway
    ``p_i = lateral_i(c_i) + up(p_{i+1})``, a 3×3 conv-norm-act on each ``p_i``, all upsampled
    to the finest level and summed, then a 1×1 classifier upsampled ``upscale`` times
    (bilinear) — usually the finest stage's reduction, so logits are at input resolution.

    Shapes:
        ``c_0 (B, C_0, H_0, W_0), …, c_{n-1} (B, C_{n-1}, H_{n-1}, W_{n-1})`` (finest first)
        -> ``(B, num_classes, upscale · H_0, upscale · W_0)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        decoder_channels: int = 64,
        upscale: int = 1,
        norm_layer: str = "batchnorm2d",
        act_layer: str = "relu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, int) or not in_channels:
            raise SpecError(
                f"in_channels={in_channels!r}: give the channels of each stage, finest first "
                "(a list, e.g. feature_info's num_chs)",
                path="in_channels",
            )
        for c in in_channels:
            check_positive_int("in_channels", c)
        check_positive_int("num_classes", num_classes)
        check_positive_int("decoder_channels", decoder_channels)
        check_positive_int("upscale", upscale)
        factory = {"device": device, "dtype": dtype}
        d = decoder_channels
        self.in_channels, self.num_classes, self.upscale = tuple(in_channels), num_classes, upscale
        self.lateral = nn.ModuleList(Conv2d(c, d, kernel_size=1, **factory) for c in in_channels)
        self.smooth = nn.ModuleList(
            ConvNormAct(d, d, kernel_size=3, norm_layer=norm_layer, act_layer=act_layer, **factory)
            for _ in in_channels
        )
        self.classifier = Conv2d(d, num_classes, kernel_size=1, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_children(self)
        if self.classifier.weight.device.type != "meta":  # small logits at the start
            nn.init.normal_(self.classifier.weight, std=0.01)
            nn.init.zeros_(self.classifier.bias)

    @classmethod
    def example(cls) -> Example:
        feats = (example_tensor(2, 4, 8, 8), example_tensor(2, 6, 4, 4, seed=1),
                 example_tensor(2, 8, 2, 2, seed=2))
        return Example(
            {"in_channels": (4, 6, 8), "num_classes": 3, "decoder_channels": 8, "upscale": 2},
            feats,
        )

    def forward(self, *features: Tensor) -> Tensor:
        if len(features) != len(self.lateral):
            raise ValueError(
                f"FPNHead built for {len(self.lateral)} stages (in_channels={self.in_channels}) "
                f"got {len(features)} feature maps"
            )
        for i, (f, c) in enumerate(zip(features, self.in_channels, strict=True)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(
                    f"feature {i}: shape {tuple(f.shape)}, expected (B, {c}, H, W) "
                    f"(in_channels={self.in_channels})"
                )
        p = self.lateral[-1](features[-1])
        pyramid = [p]
        for lateral, f in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            p = lateral(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest")
            pyramid.append(p)
        pyramid.reverse()  # finest first, matching self.smooth
        size = features[0].shape[-2:]
        fused = sum(
            F.interpolate(s(q), size=size, mode="bilinear", align_corners=False) if i else s(q)
            for i, (s, q) in enumerate(zip(self.smooth, pyramid, strict=True))
        )
        out = self.classifier(fused)  # (B, K, H_0, W_0)
        if self.upscale > 1:
            out = F.interpolate(out, scale_factor=self.upscale, mode="bilinear",
                                align_corners=False)
        return out

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}"


@register_block("resize_like")
class ResizeLike(ParameterFree, nn.Module):
    """Resize ``x`` (bilinear) to the spatial size of ``ref`` (only its shape is read).

    Shapes:
        ``x (B, C, h, w)``, ``ref (B, *, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, *, mode: str = "bilinear", device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()  # device/dtype: accepted for the block contract, nothing to place
        if mode not in ("bilinear", "nearest"):
            raise SpecError(f"mode={mode!r}: use 'bilinear' or 'nearest'", path="mode")
        self.mode = mode

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(2, 3, 4, 4), example_tensor(2, 1, 7, 9)))

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        if x.shape[-2:] == ref.shape[-2:]:
            return x
        corners = {"align_corners": False} if self.mode == "bilinear" else {}
        return F.interpolate(x, size=ref.shape[-2:], mode=self.mode, **corners)
