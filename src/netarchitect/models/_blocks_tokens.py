"""Token blocks the vision transformers need in specs: class token, token pooling, token
grid reshaping, and a pre-norm encoder block whose LayerNorm epsilon is plain data.

They are thin: the attention, MLP and residual wiring come from the layer library.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..layers._factory import check_choice, check_non_negative, check_positive_int, example_tensor
from ..layers.norm import LayerNorm
from ..layers.transformer import TransformerBlock
from ..registry import Example, register_block

__all__ = ["ClassToken", "TokenGrid", "TokenPool", "ViTBlock"]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("cls_token")
class ClassToken(nn.Module):
    """Prepends ``num_tokens`` learned tokens (ViT's class token) to a token sequence.

    The tokens start as ``N(0, init_std²)`` (timm uses 1e-6; 0 gives torchvision's zeros).

    Shapes:
        input ``(B, N, dim)`` -> output ``(B, num_tokens + N, dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_tokens: int = 1,
        init_std: float = 1e-6,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_tokens", num_tokens)
        check_non_negative("init_std", init_std)
        self.init_std = float(init_std)
        self.token = nn.Parameter(torch.empty(1, num_tokens, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.token, std=self.init_std)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T + N, D)

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 8, "init_std": 0.02}, (example_tensor(2, 5, 8),))


@register_block("token_pool")
class TokenPool(nn.Module):
    """Pools a token sequence to one vector: the first token (``"cls"``) or the mean of the
    tokens after the ``num_prefix_tokens`` class/register tokens (``"avg"``).

    Shapes:
        input ``(B, N, D)`` -> output ``(B, D)``.
    """

    def __init__(
        self,
        *,
        pool_type: str = "cls",
        num_prefix_tokens: int = 0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_choice("pool_type", pool_type, ("cls", "avg"))
        if (
            isinstance(num_prefix_tokens, bool)
            or not isinstance(num_prefix_tokens, int)
            or (num_prefix_tokens < 0)
        ):
            raise SpecError(f"num_prefix_tokens={num_prefix_tokens!r} must be an integer >= 0")
        self.pool_type, self.num_prefix_tokens = pool_type, num_prefix_tokens

    def reset_parameters(self) -> None:
        """Parameter-free: nothing to initialise."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"token_pool expects (B, N, D) tokens, got shape {tuple(x.shape)}")
        if self.pool_type == "cls":
            return x[:, 0]
        return x[:, self.num_prefix_tokens :].mean(1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, num_prefix_tokens={self.num_prefix_tokens}"

    @classmethod
    def example(cls) -> Example:
        kwargs = {"pool_type": "avg", "num_prefix_tokens": 1}
        return Example(kwargs, (example_tensor(2, 5, 8),))


@register_block("token_grid")
class TokenGrid(nn.Module):
    """Lays a token sequence back out as a channels-first feature map (row-major tokens,
    the order :class:`~netarchitect.layers.embedding.PatchEmbed` produces).

    ``height`` defaults to ``sqrt(N)`` (square maps).

    Shapes:
        input ``(B, N, D)`` -> output ``(B, D, height, N / height)``.
    """

    def __init__(
        self, *, height: int | None = None, device: Device = None, dtype: Dtype = None
    ) -> None:
        super().__init__()
        if height is not None:
            check_positive_int("height", height)
        self.height = height

    def reset_parameters(self) -> None:
        """Parameter-free: nothing to initialise."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"token_grid expects (B, N, D) tokens, got shape {tuple(x.shape)}")
        n = x.shape[1]
        h = self.height or math.isqrt(n)
        if h * (n // h) != n:
            raise ValueError(f"{n} tokens do not form a grid of height {h}")
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, n // h)  # (B, D, H, W)

    def extra_repr(self) -> str:
        return f"height={self.height}"

    @classmethod
    def example(cls) -> Example:
        return Example({"height": 2}, (example_tensor(2, 6, 4),))


@register_block("vit_block")
class ViTBlock(TransformerBlock):
    """Pre-norm Transformer encoder block of ViT (Dosovitskiy et al., 2021), as torchvision:

    ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` with LayerNorm epsilon ``norm_eps``
    (1e-6), a GELU MLP of width ``mlp_ratio · dim`` and biased q/k/v projections. A
    :class:`~netarchitect.layers.transformer.TransformerBlock` whose norm is given as data.

    Shapes:
        input ``(B, N, dim)`` -> same shape.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        act_layer: str = "gelu",
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(
            dim,
            num_heads,
            mlp_ratio=mlp_ratio,
            norm_layer=functools.partial(LayerNorm, eps=norm_eps),
            act_layer=act_layer,
            drop=drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            qkv_bias=qkv_bias,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x)

    @classmethod
    def example(cls) -> Example:
        return Example({"dim": 16, "num_heads": 2, "mlp_ratio": 2.0}, (example_tensor(2, 5, 16),))
