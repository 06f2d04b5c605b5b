"""Blocks of diffusion UNets (Ho et al. 2020; Dhariwal & Nichol 2021): the timestep (and
class) embedding, a residual block conditioned on it, and self-attention over feature maps.

Down- and upsampling are the library's ``conv2d`` (stride 2) and ``upsample`` + ``conv2d``;
skip connections are ``concat`` merges in the spec (see ``models/diffusion_unet.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import LayerType, check_positive_int, check_probability, example_tensor
from .activation import get_act_layer
from .attention import MultiHeadAttention
from .basic import Conv2d, Linear
from .embedding import TimestepEmbedding
from .norm import get_norm_layer

__all__ = ["SpatialSelfAttention", "TimeClassEmbedding", "TimeResBlock"]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("time_class_embedding")
class TimeClassEmbedding(nn.Module):
    """The conditioning vector of a diffusion denoiser: ``mlp(sinusoid(t)) + E[y]``.

    ``t`` (context, ``(B,)``, integer or fractional timesteps) goes through
    :class:`~netarchitect.layers.embedding.TimestepEmbedding` (``freq_dim`` sinusoidal
    features, a two-layer MLP to ``dim``). With ``num_classes`` a learned table of
    ``num_classes + 1`` rows is added; row ``num_classes`` is the *null class* of
    classifier-free guidance, used for every sample when ``y`` is not given. The input
    ``x`` only gives the batch size and device: without ``t`` (shape inference on
    ``meta``) the embedding of ``t = 0`` is returned.

    Shapes:
        x: ``(B, *)``; t, y: ``(B,)`` -> ``(B, dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        freq_dim: int = 64,
        num_classes: int | None = None,
        max_period: float = 10000.0,
        act_layer: LayerType = "silu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
        factory = {"device": device, "dtype": dtype}
        self.dim, self.num_classes = dim, num_classes
        self.time = TimestepEmbedding(
            dim, freq_dim=freq_dim, max_period=max_period, act_layer=act_layer, **factory
        )
        self.classes = (
            nn.Embedding(num_classes + 1, dim, **factory) if num_classes is not None else None
        )

    def reset_parameters(self) -> None:
        self.time.reset_parameters()
        if self.classes is not None:
            self.classes.reset_parameters()

    @property
    def null_class(self) -> int | None:
        """The label of "no class" (``num_classes``), or ``None`` when unconditional."""
        return self.num_classes

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    @classmethod
    def examples(cls) -> list[Example]:
        """Unconditional, and class-conditional with one null-class label."""
        x = example_tensor(3, 1, 4, 4)
        t, y = torch.tensor([0, 7, 999]), torch.tensor([0, 2, 3])
        return [
            Example({"dim": 8, "freq_dim": 6}, (x, t), name="time"),
            Example({"dim": 8, "freq_dim": 6, "num_classes": 3}, (x, t, y), name="time_class"),
        ]

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        if t is None:
            t = torch.zeros(B, device=x.device, dtype=torch.long)
        elif t.dim() != 1 or t.shape[0] != B:
            raise ValueError(f"expected timesteps t of shape ({B},), got {tuple(t.shape)}")
        emb = self.time(t)  # (B, dim)
        if self.classes is None:
            if y is not None:
                raise ValueError("y was given to an unconditional embedding (num_classes=None)")
            return emb
        if y is None:
            y = torch.full((B,), self.num_classes, device=x.device, dtype=torch.long)
        elif y.shape != (B,):
            raise ValueError(f"expected class labels y of shape ({B},), got {tuple(y.shape)}")
        elif y.device.type != "meta" and not torch.compiler.is_compiling() and y.numel() and (
            int(y.min()) < 0 or int(y.max()) > self.num_classes
        ):
            raise ValueError(
                f"class labels y must be in [0, {self.num_classes}] (the null class is "
                f"{self.num_classes}), got values in [{int(y.min())}, {int(y.max())}]"
            )
        return emb + self.classes(y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}"


@register_block("time_res_block")
class TimeResBlock(nn.Module):
    """Residual block conditioned on an embedding (DDPM; scale-shift of Dhariwal & Nichol):

    ``h = conv1(act(norm1(x)))``; ``s, b = proj(act(emb))``;
    ``h = conv2(drop(act(norm2(h) · (1 + s) + b)))`` (``scale_shift``) or
    ``h = conv2(drop(act(norm2(h + b))))`` (additive); ``out = skip(x) + h`` where ``skip``
    is a 1×1 convolution when the channel count changes, else the identity.

    Shapes:
        x: ``(B, in_channels, H, W)``, emb: ``(B, emb_dim)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        emb_dim: int,
        scale_shift: bool = True,
        dropout: float = 0.0,
        norm_layer: LayerType = "groupnorm",
        act_layer: LayerType = "silu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("emb_dim", emb_dim)):
            check_positive_int(name, value)
        check_probability("dropout", dropout)
        factory = {"device": device, "dtype": dtype}
        make_norm, make_act = get_norm_layer(norm_layer), get_act_layer(act_layer)
        self.in_channels, self.out_channels, self.scale_shift = in_channels, out_channels, scale_shift
        self.norm1 = make_norm(in_channels, **factory)
        self.act = make_act(**factory)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, **factory)
        self.emb_proj = Linear(emb_dim, out_channels * (2 if scale_shift else 1), **factory)
        self.norm2 = make_norm(out_channels, **factory)
        self.drop = nn.Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, kernel_size=3, **factory)
        self.skip = (
            Conv2d(in_channels, out_channels, kernel_size=1, **factory)
            if in_channels != out_channels else nn.Identity()
        )

    def reset_parameters(self) -> None:
        for m in (self.norm1, self.conv1, self.emb_proj, self.norm2, self.conv2, self.skip):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return cls.examples()[0]

    @classmethod
    def examples(cls) -> list[Example]:
        """Scale-shift with a channel change (1×1 skip), and additive at equal width."""
        x, emb = example_tensor(2, 4, 5, 5), example_tensor(2, 6, seed=1)
        norm = {"name": "groupnorm", "num_groups": 2}
        return [
            Example({"in_channels": 4, "out_channels": 8, "emb_dim": 6, "norm_layer": norm},
                    (x, emb), name="scale_shift"),
            Example({"in_channels": 4, "emb_dim": 6, "scale_shift": False, "dropout": 0.1,
                     "norm_layer": norm}, (x, emb), name="additive"),
        ]

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if emb.dim() != 2 or emb.shape[0] != x.shape[0]:
            raise ValueError(
                f"expected emb of shape ({x.shape[0]}, emb_dim), got {tuple(emb.shape)}"
            )
        h = self.conv1(self.act(self.norm1(x)))  # (B, C_out, H, W)
        e = self.emb_proj(self.act(emb))[:, :, None, None]  # (B, C_out or 2 C_out, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(self.act(h)))
        return self.skip(x) + h

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"scale_shift={self.scale_shift}")


@register_block("spatial_self_attention")
class SpatialSelfAttention(nn.Module):
    """Self-attention over the ``H·W`` positions of a feature map, with a residual:
    ``x + attn(norm(x))`` where ``attn`` is :class:`~netarchitect.layers.attention.
    MultiHeadAttention` over tokens ``(B, H·W, C)`` (no positional code: convolutions
    around it carry position).

    Shapes:
        x: ``(B, in_channels, H, W)`` -> same shape.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_heads: int = 1,
        head_dim: int | None = None,
        norm_layer: LayerType = "groupnorm",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("num_heads", num_heads)
        if head_dim is not None:
            check_positive_int("head_dim", head_dim)
            if in_channels % head_dim:
                raise SpecError(f"head_dim={head_dim} does not divide in_channels={in_channels}",
                                path="head_dim")
            num_heads = in_channels // head_dim
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.norm = get_norm_layer(norm_layer)(in_channels, **factory)
        self.attn = MultiHeadAttention(in_channels, num_heads, **factory)

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.attn.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"in_channels": 8, "num_heads": 2}, (example_tensor(2, 8, 3, 4),))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        B, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H·W, C)
        out = self.attn(tokens).transpose(1, 2).reshape(B, C, H, W)
        return x + out

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_heads={self.attn.num_heads}"
