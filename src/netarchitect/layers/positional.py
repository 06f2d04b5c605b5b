"""Relative positional schemes used inside attention: RoPE, ALiBi and learned relative bias.

These are helpers of :class:`~netarchitect.layers.attention.MultiHeadAttention`
(they transform queries/keys or produce an additive score bias), not stand-alone
token blocks, so they are not registered. Absolute (added-to-tokens) positional
embeddings live in :mod:`netarchitect.layers.embedding`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError, suggest

__all__ = [
    "ROPE_SCALING_KEYS",
    "ALiBiBias",
    "RelativePositionBias",
    "RopeScaling",
    "RotaryEmbedding",
    "alibi_slopes",
    "apply_rotary",
    "rope_scaling_config",
    "rotate_half",
    "scale_inv_freq",
    "t5_relative_bucket",
]

#: RoPE frequency rescalings and the keys each takes besides ``type``.
ROPE_SCALING_KEYS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_positions"),
}

#: ``None``, a linear factor, or a mapping ``{"type": ..., <its keys>}``.
RopeScaling = float | Mapping[str, Any] | None


def _buffer_dtype(dtype: torch.dtype | None) -> torch.dtype:
    # Frequencies and slopes stay in float32 (float64 if asked) for precision.
    return torch.float64 if dtype == torch.float64 else torch.float32


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (the LLaMA / HF "half" layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (..., T, D) by the angles whose ``cos``/``sin`` (T, D) are given."""
    return x * cos + rotate_half(x) * sin


def _positive(key: str, value: Any, *, integer: bool = False) -> float | int:
    types = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, types) or not value > 0:
        what = "an integer" if integer else "a number"
        raise SpecError(f"must be {what} > 0, got {value!r}", path=f"rope_scaling.{key}")
    return value


def rope_scaling_config(scaling: RopeScaling) -> dict[str, Any] | None:
    """The validated plain-dict form of a RoPE ``scaling`` (a copy; ``None`` stays ``None``).

    A number ``f`` means ``{"type": "linear", "factor": f}``. The keys of each type are
    :data:`ROPE_SCALING_KEYS`; a missing, unknown or out-of-range key raises
    :class:`SpecError` whose path names it (``rope_scaling.low_freq_factor``).
    """
    if scaling is None:
        return None
    if isinstance(scaling, int | float) and not isinstance(scaling, bool):
        scaling = {"type": "linear", "factor": scaling}
    if not isinstance(scaling, Mapping):
        raise SpecError(
            f"must be None, a number or a mapping with a 'type', got {scaling!r}",
            path="rope_scaling",
        )
    kind = scaling.get("type")
    if kind not in ROPE_SCALING_KEYS:
        raise SpecError(
            f"unknown RoPE scaling {kind!r}{suggest(str(kind), ROPE_SCALING_KEYS)}; "
            f"choose one of {tuple(ROPE_SCALING_KEYS)}",
            path="rope_scaling.type",
        )
    keys = ROPE_SCALING_KEYS[kind]
    missing = [key for key in keys if key not in scaling]
    if missing:
        raise SpecError(f"{kind!r} scaling needs {missing}", path=f"rope_scaling.{missing[0]}")
    unknown = [key for key in scaling if key != "type" and key not in keys]
    if unknown:
        raise SpecError(
            f"{kind!r} scaling takes only {list(keys)}, not {unknown}",
            path=f"rope_scaling.{unknown[0]}",
        )
    config: dict[str, Any] = {"type": kind}
    for key in keys:
        value = scaling[key]
        if key == "original_max_positions":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            config[key] = _positive(key, value, integer=True)
        else:
            config[key] = float(_positive(key, value))
    if kind == "llama3" and config["low_freq_factor"] >= config["high_freq_factor"]:
        raise SpecError(
            f"must be < high_freq_factor={config['high_freq_factor']}, "
            f"got {config['low_freq_factor']}",
            path="rope_scaling.low_freq_factor",
        )
    return config


def scale_inv_freq(inv_freq: Tensor, scaling: Mapping[str, Any]) -> Tensor:
    """RoPE inverse frequencies ``f`` rescaled by a :func:`rope_scaling_config` result.

    ``linear`` (position interpolation, Chen et al. 2023): ``f / factor``.
    ``llama3`` (LLaMA 3.1): with wavelength ``λ = 2π / f`` and ``L = original_max_positions``,
    ``f`` is kept where ``λ < L / high_freq_factor``, divided by ``factor`` where
    ``λ > L / low_freq_factor`` and blended in between, ``(1 - s) f / factor + s f`` with
    ``s = (L / λ - low_freq_factor) / (high_freq_factor - low_freq_factor)`` — as
    transformers' ``rope_type="llama3"``.
    """
    factor = scaling["factor"]
    if scaling["type"] == "linear":
        return inv_freq / factor
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelength = 2 * math.pi / inv_freq
    # s >= 1 keeps f (high frequencies), s <= 0 gives f / factor (low frequencies)
    smooth = ((scaling["original_max_positions"] / wavelength - low) / (high - low)).clamp(0, 1)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021, "RoFormer").

    Feature pairs ``(i, i + D/2)`` of a query/key at position ``p`` are rotated by
    the angle ``p · f_i`` with ``f_i = base^(-2i/D)`` (the half-rotation layout of
    LLaMA / Hugging Face ``rotate_half``). ``scaling`` rescales the frequencies for
    longer contexts (:func:`scale_inv_freq`): ``None``, a number (linear position
    interpolation) or plain data such as ``{"type": "llama3", "factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_positions": 8192}``.
    ``cos``/``sin`` tables are cached and grown on demand; ``forward(offset, length)``
    returns the rows for positions ``offset .. offset+length-1``.

    Shapes:
        forward -> cos, sin: (length, head_dim), in ``dtype`` (default float32).
    """

    inv_freq: Tensor

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 10000.0,
        scaling: RopeScaling = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise SpecError(
                f"rotary embedding needs an even head_dim, got {head_dim}", path="head_dim"
            )
        if base <= 1.0:
            raise SpecError(f"rope base must be > 1, got {base}", path="rope_base")
        self.head_dim = head_dim
        self.base = float(base)
        self.scaling = rope_scaling_config(scaling)
        inv = torch.empty(head_dim // 2, device=device, dtype=_buffer_dtype(dtype))
        self.register_buffer("inv_freq", inv, persistent=False)
        self._cache: tuple[Tensor, Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Computed on the CPU in float64 and copied, so building on "meta" stays cheap.
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        inv_freq = 1.0 / (self.base**exponent)
        if self.scaling is not None:
            inv_freq = scale_inv_freq(inv_freq, self.scaling)
        with torch.no_grad():
            self.inv_freq.copy_(inv_freq)
        self._cache = None

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._cache = None  # device/dtype moves invalidate the tables
        return super()._apply(fn, recurse)

    def _tables(self, length: int) -> tuple[Tensor, Tensor]:
        cache = self._cache
        if cache is None or cache[0].shape[0] < length:
            size = max(length, 2 * cache[0].shape[0] if cache is not None else 256)
            inv = self.inv_freq.to(_buffer_dtype(self.inv_freq.dtype))
            pos = torch.arange(size, device=inv.device, dtype=inv.dtype)
            freqs = torch.outer(pos, inv)  # (T, D/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
            cache = (emb.cos(), emb.sin())
            if not torch.compiler.is_compiling():
                self._cache = cache
        return cache

    def forward(
        self, offset: int, length: int, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        cos, sin = self._tables(offset + length)
        cos, sin = cos[offset : offset + length], sin[offset : offset + length]
        if dtype is not None:
            cos, sin = cos.to(dtype), sin.to(dtype)
        return cos, sin

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, scaling={self.scaling}"


def alibi_slopes(num_heads: int) -> list[float]:
    """Head slopes of ALiBi (Press et al. 2022), as in the paper's code and HF BLOOM.

    For ``n`` a power of two the slopes are ``2^(-8i/n)``, ``i = 1..n``; otherwise the
    slopes of the closest lower power of two ``m`` followed by every other slope
    of ``2m`` (``[0::2]``), up to ``n`` heads.
    """
    if num_heads <= 0:
        raise SpecError(f"num_heads must be positive, got {num_heads}", path="num_heads")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    if closest == num_heads:
        return power_of_two(num_heads)
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


class ALiBiBias(nn.Module):
    """Attention with Linear Biases: score bias ``-slope_h * |i - j|`` (Press et al. 2022).

    Under a causal mask this equals the paper's ``-slope_h * (i - j)`` (and BLOOM's
    ``slope_h * j``, which differs by a per-row constant that softmax ignores); without
    one, the symmetric distance is used.

    Shapes:
        forward(q_pos (Tq,), k_pos (Tk,)) -> (num_heads, Tq, Tk)
    """

    slopes: Tensor

    def __init__(
        self,
        num_heads: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        slopes = torch.empty(num_heads, device=device, dtype=_buffer_dtype(dtype))
        self.register_buffer("slopes", slopes, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.slopes.copy_(torch.tensor(alibi_slopes(self.num_heads)))

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        dist = (q_pos[:, None] - k_pos[None, :]).abs().to(self.slopes.dtype)  # (Tq, Tk)
        return -self.slopes[:, None, None] * dist  # (H, Tq, Tk)


def t5_relative_bucket(
    relative_position: Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's bucket of ``relative_position = key_pos - query_pos`` (Raffel et al. 2020).

    Half the buckets hold exact small distances, the rest grow logarithmically up
    to ``max_distance``; a bidirectional bias keeps separate buckets for each sign.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    large = (
        max_exact
        + (
            torch.log(distance.float().clamp(min=1) / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """Learned per-head scalar bias of the relative distance ``j - i`` added to attention scores.

    Two bucketings:

    * ``num_buckets=None`` (default): *clipped* distances (Shaw et al. 2018), one
      learned bias per distance in ``[-(max_distance-1), max_distance-1]``;
      farther pairs share the end buckets (``2*max_distance - 1`` rows).
    * ``num_buckets=n``: T5's log-spaced buckets (:func:`t5_relative_bucket`,
      bidirectional), ``n`` rows — the layout of Hugging Face T5 weights.

    Shapes:
        forward(q_pos (Tq,), k_pos (Tk,)) -> (num_heads, Tq, Tk)
    """

    def __init__(
        self,
        num_heads: int,
        *,
        max_distance: int = 128,
        num_buckets: int | None = None,
        bidirectional: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if max_distance < 1:
            raise SpecError(f"max_positions must be >= 1, got {max_distance}", path="max_positions")
        if num_buckets is not None and (num_buckets < 4 or 2 * max_distance < num_buckets):
            raise SpecError(
                f"num_buckets={num_buckets} must be >= 4 and <= 2 * max_positions={max_distance}",
                path="num_buckets",
            )
        self.num_heads = num_heads
        self.max_distance = max_distance
        self.num_buckets = num_buckets
        self.bidirectional = bidirectional
        rows = num_buckets if num_buckets is not None else 2 * max_distance - 1
        self.bias = nn.Parameter(torch.empty(rows, num_heads, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.bias, std=0.02)

    def bucket(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """Row of the bias table for each (query, key) pair, (Tq, Tk) long."""
        rel = k_pos[None, :] - q_pos[:, None]  # (Tq, Tk)
        if self.num_buckets is None:
            m = self.max_distance - 1
            return rel.clamp(-m, m) + m
        return t5_relative_bucket(
            rel,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return self.bias[self.bucket(q_pos, k_pos)].permute(2, 0, 1)  # (H, Tq, Tk)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, max_distance={self.max_distance}, "
            f"num_buckets={self.num_buckets}"
        )
