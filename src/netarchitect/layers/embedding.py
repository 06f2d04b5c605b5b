"""Token embeddings: image patches, absolute positions, diffusion timesteps."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import LayerType, check_positive_int, example_tensor
from .activation import get_act_layer
from .norm import get_norm_layer

__all__ = [
    "LearnedPositionalEmbedding",
    "PatchEmbed",
    "SinusoidalPositionalEmbedding",
    "TimestepEmbedding",
    "sinusoidal_embedding",
    "timestep_embedding",
]

Device = torch.device | str | None
Dtype = torch.dtype | None


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise SpecError(f"{name}={value!r} must be an int or a pair of ints", path=name)
    for v in pair:
        check_positive_int(name, v)
    return pair  # type: ignore[return-value]


def _check_even(dim: int) -> None:
    check_positive_int("dim", dim)
    if dim % 2:
        raise SpecError(f"sinusoidal features need an even dim, got dim={dim}", path="dim")


def sinusoidal_embedding(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Vaswani et al. 2017: ``pe[p, 2i] = sin(p / base^(2i/dim))``, ``pe[p, 2i+1] = cos(...)``.

    Computed in float32 (float64 for float64 positions). Shapes: (T,) -> (T, dim).
    """
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    i = torch.arange(0, dim, 2, device=positions.device, dtype=dtype)
    angles = positions.to(dtype)[:, None] * torch.exp(i * (-math.log(base) / dim))  # (T, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # interleaved


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Diffusion timestep features ``[cos(t·f), sin(t·f)]``, ``f_i = max_period^(-i/half)``.

    As in OpenAI guided-diffusion / DiT (``half = dim // 2``; an odd ``dim`` gets a
    zero last column). Shapes: (B,) -> (B, dim).
    """
    half = dim // 2
    dtype = t.dtype if t.is_floating_point() and t.dtype != torch.bfloat16 else torch.float32
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half
    )
    args = t.to(dtype)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat((args.cos(), args.sin()), dim=-1)
    if dim % 2:
        emb = torch.cat((emb, torch.zeros_like(emb[:, :1])), dim=-1)
    return emb


@register_block("patch_embed")
class PatchEmbed(nn.Module):
    """Image to patch tokens (ViT, Dosovitskiy et al. 2021): a ``patch_size``-strided conv.

    Each non-overlapping ``patch_size`` patch becomes one token ``W·patch + b``,
    row-major over the patch grid, then ``norm_layer`` (none by default). With
    ``img_size`` the input size is checked and :attr:`grid_size` / :attr:`num_patches`
    are known in advance; without it any size divisible by the patch works.

    Shapes:
        input (B, in_channels, H, W) -> (B, (H/p)·(W/p), dim).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        *,
        patch_size: int | tuple[int, int] = 16,
        img_size: int | tuple[int, int] | None = None,
        norm_layer: LayerType = None,
        bias: bool = True,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("dim", dim)
        self.patch_size = _pair(patch_size, "patch_size")
        self.img_size = None if img_size is None else _pair(img_size, "img_size")
        self.grid_size: tuple[int, int] | None = None
        self.num_patches: int | None = None
        if self.img_size is not None:
            self._check_size(*self.img_size, error=SpecError)
            self.grid_size = (
                self.img_size[0] // self.patch_size[0],
                self.img_size[1] // self.patch_size[1],
            )
            self.num_patches = self.grid_size[0] * self.grid_size[1]
        factory = {"device": device, "dtype": dtype}
        self.proj = nn.Conv2d(
            in_channels, dim, self.patch_size, stride=self.patch_size, bias=bias, **factory
        )
        self.norm = get_norm_layer(norm_layer)(dim, **factory)

    def _check_size(self, H: int, W: int, error: type[Exception] = ValueError) -> None:
        if H % self.patch_size[0] or W % self.patch_size[1]:
            raise error(f"image size {(H, W)} is not divisible by patch_size={self.patch_size}")

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()
        if hasattr(self.norm, "reset_parameters"):
            self.norm.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 3, "dim": 8, "patch_size": 4, "norm_layer": "layernorm"}
        return Example(kwargs, (example_tensor(2, 3, 8, 12),))

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if self.img_size is not None and (H, W) != self.img_size:
            raise ValueError(f"expected images of size {self.img_size}, got {(H, W)}")
        self._check_size(H, W)
        x = self.proj(x)  # (B, dim, H/p, W/p)
        return self.norm(x.flatten(2).transpose(1, 2))  # (B, N, dim)


@register_block("sinusoidal_pos_embed")
class SinusoidalPositionalEmbedding(nn.Module):
    """Adds the fixed sinusoidal position code (:func:`sinusoidal_embedding`) to tokens.

    ``forward(x, offset=0)`` returns ``x + pe[offset : offset + T]``. No parameters;
    the code is computed for the positions it needs.

    Shapes:
        x: (B, T, dim) -> (B, T, dim).
    """

    def __init__(
        self, dim: int, *, base: float = 10000.0, device: Device = None, dtype: Dtype = None
    ) -> None:
        super().__init__()
        _check_even(dim)
        self.dim, self.base = dim, float(base)

    def reset_parameters(self) -> None:
        """Parameter-free: nothing to initialise."""

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8}, (example_tensor(2, 5, 8),))

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.shape[1]
        positions = torch.arange(offset, offset + T, device=x.device, dtype=torch.float64)
        if x.dtype != torch.float64:
            positions = positions.float()
        return x + sinusoidal_embedding(positions, self.dim, self.base).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}"


@register_block("learned_pos_embed")
class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per absolute position (BERT, GPT-2, ViT).

    ``forward(x, offset=0)`` returns ``x + weight[offset : offset + T]``; positions
    past ``max_positions`` raise.

    Shapes:
        x: (B, T, dim) -> (B, T, dim); weight: (max_positions, dim).
    """

    def __init__(
        self, dim: int, *, max_positions: int, device: Device = None, dtype: Dtype = None
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("max_positions", max_positions)
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(max_positions, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=0.02)

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "max_positions": 6}, (example_tensor(2, 5, 8),))

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.shape[1]
        if offset + T > self.max_positions:
            raise ValueError(
                f"positions {offset}..{offset + T - 1} exceed max_positions={self.max_positions}"
            )
        return x + self.weight[offset : offset + T]

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, dim={self.weight.shape[1]}"


@register_block("timestep_embedding")
class TimestepEmbedding(nn.Module):
    """Diffusion timestep embedding (DDPM/DiT): ``linear_2(act(linear_1(timestep_embedding(t))))``.

    ``t`` may be integer or fractional; its sinusoidal features
    (:func:`timestep_embedding`, ``freq_dim`` wide) go through a two-layer MLP.

    Shapes:
        t: (B,) -> (B, dim).
    """

    def __init__(
        self,
        dim: int,
        *,
        freq_dim: int = 256,
        max_period: float = 10000.0,
        act_layer: LayerType = "silu",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("freq_dim", freq_dim)
        factory = {"device": device, "dtype": dtype}
        self.freq_dim, self.max_period = freq_dim, float(max_period)
        self.linear_1 = nn.Linear(freq_dim, dim, **factory)
        self.act = get_act_layer(act_layer)(**factory)
        self.linear_2 = nn.Linear(dim, dim, **factory)

    def reset_parameters(self) -> None:
        self.linear_1.reset_parameters()
        self.linear_2.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "freq_dim": 6}, (torch.tensor([0.0, 10.0, 999.0]),))

    def forward(self, t: Tensor) -> Tensor:
        if t.dim() != 1:
            raise ValueError(f"expected timesteps of shape (B,), got {tuple(t.shape)}")
        emb = timestep_embedding(t, self.freq_dim, self.max_period)
        return self.linear_2(self.act(self.linear_1(emb.to(self.linear_1.weight.dtype))))
