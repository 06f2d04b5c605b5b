"""Key/value cache for incremental (token-by-token) decoding."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import SpecError

__all__ = ["EncoderDecoderCache", "KVCache", "ModelCache", "check_cache"]


def check_cache(cache: object) -> None:
    """Raise ``TypeError`` unless ``cache`` is one of this module's caches (or ``None``)."""
    if cache is not None and not isinstance(cache, KVCache | EncoderDecoderCache | ModelCache):
        raise TypeError(
            f"kv_cache must be the cache from model.new_cache() (a KVCache, "
            f"EncoderDecoderCache or ModelCache), got {type(cache).__name__}"
        )


class KVCache:
    """Keys and values already computed by one attention layer.

    :class:`~netarchitect.layers.attention.MultiHeadAttention` appends the new
    keys/values of each call (after RoPE, before grouped-query expansion) and
    attends over everything stored; the positions of new queries start at
    :attr:`length`. Decoding one token at a time therefore gives the same outputs
    as recomputing the whole causal sequence. For cross-attention the cache holds
    the projected context after the first call and reuses it afterwards (a decoder
    block with both keeps them in an :class:`EncoderDecoderCache`).

    With ``max_length`` the storage is allocated once and filled in place
    (appending past it raises); without it every append concatenates.
    Use one cache per layer: ``caches = KVCache.create(num_layers)``.

    Shapes:
        update(k, v): (B, H_kv, T_new, D) each -> all keys, values (B, H_kv, length, D)
    """

    def __init__(self, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise SpecError(f"max_length must be >= 1, got {max_length}", path="max_length")
        self.max_length = max_length
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._length = 0

    @classmethod
    def create(cls, num_layers: int, max_length: int | None = None) -> list[KVCache]:
        """One empty cache per layer."""
        return [cls(max_length) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Number of positions stored."""
        return self._length

    def __len__(self) -> int:
        return self._length

    @property
    def keys(self) -> Tensor | None:
        """Stored keys (B, H_kv, length, D), or ``None`` when empty."""
        return None if self._k is None else self._k[:, :, : self._length]

    @property
    def values(self) -> Tensor | None:
        """Stored values (B, H_kv, length, D), or ``None`` when empty."""
        return None if self._v is None else self._v[:, :, : self._length]

    def reset(self) -> None:
        """Forget everything (the preallocated storage is dropped too)."""
        self._k = self._v = None
        self._length = 0

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k``, ``v`` and return all stored keys and values."""
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(
                f"KVCache.update expects k and v of equal shape (B, H, T, D), "
                f"got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        new = k.shape[2]
        if (
            self._k is not None
            and k.shape[:2] + k.shape[3:] != self._k.shape[:2] + self._k.shape[3:]
        ):
            raise ValueError(
                f"KVCache holds (B, H, D) = {tuple(self._k.shape[:2] + self._k.shape[3:])}, "
                f"got {tuple(k.shape[:2] + k.shape[3:])}; call reset() before a new batch"
            )
        end = self._length + new
        if self.max_length is None:
            if self._k is None:
                self._k, self._v = k, v
            else:
                assert self._v is not None
                self._k = torch.cat((self._k, k), dim=2)
                self._v = torch.cat((self._v, v), dim=2)
        else:
            if end > self.max_length:
                raise ValueError(
                    f"KVCache is full: {self._length} + {new} positions > max_length={self.max_length}"
                )
            if self._k is None:  # positions past `length` are never read: no need to zero
                shape = (*k.shape[:2], self.max_length, k.shape[3])
                self._k = k.new_empty(shape)
                self._v = v.new_empty(shape)
            assert self._v is not None
            self._k[:, :, self._length : end] = k
            self._v[:, :, self._length : end] = v
        self._length = end
        return self._k[:, :, :end], self._v[:, :, :end]

    def __repr__(self) -> str:
        return f"KVCache(length={self._length}, max_length={self.max_length})"


class EncoderDecoderCache:
    """The caches of one decoder block that has self- and cross-attention.

    :attr:`self_attn` (a :class:`KVCache` of ``max_length``) grows by the new target
    positions of each call. :attr:`cross_attn` holds the context (encoder output)
    projected to keys/values by the cross-attention: computed on the first call and
    reused by every later one, since the context is fixed while decoding. :attr:`length`
    is the number of target positions decoded. ``reset()`` before a new context.
    Use one per decoder block: ``caches = EncoderDecoderCache.create(num_layers)``.
    """

    def __init__(self, max_length: int | None = None) -> None:
        self.self_attn = KVCache(max_length)
        self.cross_attn = KVCache()

    @classmethod
    def create(cls, num_layers: int, max_length: int | None = None) -> list[EncoderDecoderCache]:
        """One empty cache per decoder block."""
        return [cls(max_length) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Number of target positions stored (those of :attr:`self_attn`)."""
        return self.self_attn.length

    def __len__(self) -> int:
        return self.length

    def reset(self) -> None:
        """Forget the target positions and the projected context."""
        self.self_attn.reset()
        self.cross_attn.reset()

    def __repr__(self) -> str:
        return (
            f"EncoderDecoderCache(length={self.length}, context_length={self.cross_attn.length}, "
            f"max_length={self.self_attn.max_length})"
        )


class ModelCache:
    """The decoding state of a whole network: one cache per node that keeps one.

    Made by :meth:`netarchitect.network.Network.new_cache` and passed as the ``kv_cache``
    context of a forward call. The executor hands each node its own entry
    (:meth:`scope`); a node without an entry (a token embedding that only needs the
    number of positions already processed) gets the model cache itself, whose
    :attr:`length` is that number. Index it by position (``cache[0]``) or node id.
    """

    def __init__(self, caches: dict[str, KVCache | EncoderDecoderCache]) -> None:
        self._caches = dict(caches)
        self._order = list(self._caches)

    def scope(self, node_id: str) -> KVCache | EncoderDecoderCache | ModelCache:
        """The cache of node ``node_id``, or this model cache if the node keeps none."""
        return self._caches.get(node_id, self)

    @property
    def length(self) -> int:
        """Number of positions processed so far (0 for a network that caches nothing)."""
        return self._caches[self._order[0]].length if self._order else 0

    @property
    def nodes(self) -> list[str]:
        """Ids of the nodes with a cache, in execution order."""
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, key: int | str) -> KVCache | EncoderDecoderCache:
        return self._caches[self._order[key] if isinstance(key, int) else key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self._caches[n] for n in self._order)

    def reset(self) -> None:
        """Forget everything cached (before a new batch or a new context)."""
        for cache in self._caches.values():
            cache.reset()

    def __repr__(self) -> str:
        return f"ModelCache(nodes={len(self._order)}, length={self.length})"
