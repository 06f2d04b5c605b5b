"""The decoder-only Transformer language model as a spec: the builder behind GPT-2, LLaMA and
the mixture-of-experts decoders (which only choose its knobs and name sizes).

The spec is ``embed`` (:class:`~netarchitect.layers.token_embedding.TokenEmbedding`) →
``block_0 … block_{depth-1}`` (pre-norm causal ``transformer_block`` s) → ``norm`` →
``head`` (``lm_head``, tied to the token table when ``tie_embeddings``), with context
``attention_mask``, ``position_ids``, ``kv_cache`` and ``logits_to_keep``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import LayerType, check_positive_int, check_probability
from ..layers.positional import RopeScaling, rope_scaling_config
from ..spec import NetworkSpec
from ._graph_builder import GraphBuilder
from ._lm_base import (
    CausalLM,
    compact_params,
    layer_params,
    per_layer,
    transformer_init,
)

__all__ = ["decoder_lm", "decoder_lm_spec", "probe_length"]

_EMBED_POSITIONS = ("learned", "sinusoidal")
_POSITIONS = (*_EMBED_POSITIONS, "rope", "alibi", "relative", None)


def probe_length(max_positions: int, seq_len: int | None) -> int:
    """The per-sample sequence length a spec declares (what ``infer_shapes`` and ``inspect``
    use; any length runs): ``seq_len``, else ``min(max_positions, 128)``."""
    if seq_len is None:
        return min(max_positions, 128)
    check_positive_int("seq_len", seq_len)
    if seq_len > max_positions:
        raise SpecError(f"seq_len={seq_len} exceeds max_positions={max_positions}", path="seq_len")
    return seq_len


def decoder_lm_spec(
    vocab_size: int,
    dim: int,
    *,
    depth: int,
    num_heads: int,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
    mlp_ratio: float = 4.0,
    hidden_dim: int | None = None,
    max_positions: int = 1024,
    pos: str | None = "learned",
    rope_base: float = 10000.0,
    rope_scaling: RopeScaling = None,
    qk_norm: LayerType = None,
    window: int | None = None,
    norm_layer: LayerType = "layernorm",
    norm_eps: float | None = None,
    mlp_layer: LayerType | Sequence[LayerType] = "mlp",
    act_layer: LayerType = None,
    bias: bool = True,
    mlp_bias: bool | None = None,
    tie_embeddings: bool = True,
    drop: float = 0.0,
    attn_drop: float = 0.0,
    drop_path: float = 0.0,
    init_std: float = 0.02,
    kind: str = "causal_lm",
    seq_len: int | None = None,
    name: str = "decoder_lm",
) -> NetworkSpec:
    """The spec of a decoder-only LM (every knob; see :func:`decoder_lm`)."""
    for key, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth)):
        check_positive_int(key, value)
    check_positive_int("max_positions", max_positions)
    if pos not in _POSITIONS:
        raise SpecError(f"pos={pos!r} must be one of {_POSITIONS}", path="pos")
    rope_scaling = rope_scaling_config(rope_scaling)  # fail before building anything
    if rope_scaling is not None and pos != "rope":
        raise SpecError(f"needs pos='rope', got pos={pos!r}", path="rope_scaling")
    check_probability("drop", drop)
    check_probability("drop_path", drop_path)
    length = probe_length(max_positions, seq_len)
    b = GraphBuilder(name, {"input_ids": ((length,), "int64")})
    embed = {
        "vocab_size": vocab_size, "dim": dim, "max_positions": max_positions,
        "pos": pos if pos in _EMBED_POSITIONS else None, "drop": drop, "init_std": init_std,
    }
    b.add("embed", "token_embedding", compact_params("token_embedding", embed),
          context=["attention_mask", "position_ids", "kv_cache"])
    norm = layer_params(norm_layer, eps=norm_eps)
    blocks = []
    for i, mlp in enumerate(per_layer(mlp_layer, depth, "mlp_layer")):
        params = {
            "num_heads": num_heads, "mlp_ratio": mlp_ratio, "hidden_dim": hidden_dim,
            "norm": "pre", "norm_layer": norm, "act_layer": act_layer,
            "mlp_layer": layer_params(mlp, bias=mlp_bias), "drop": drop, "attn_drop": attn_drop,
            "drop_path": drop_path * i / max(depth - 1, 1), "causal": True,
            "num_kv_heads": num_kv_heads, "head_dim": head_dim, "qkv_bias": bias,
            "out_bias": bias, "qk_norm": qk_norm, "window": window,
            "pos": None if pos in _EMBED_POSITIONS else pos, "rope_base": rope_base,
            "rope_scaling": rope_scaling, "max_positions": max_positions,
        }
        blocks.append(b.add(f"block_{i}", "transformer_block",
                            compact_params("transformer_block", params),
                            context=["attention_mask", "kv_cache"]))
    b.add_layer("norm", norm)
    b.add("head", "lm_head", {"out_features": vocab_size}, context=["logits_to_keep"])
    if tie_embeddings:
        b.tie["head.weight"] = "embed.token.weight"
    roles = {"kind": kind, "embedding": "embed", "blocks": blocks, "features": "norm",
             "head": "head"}
    init = transformer_init(init_std, init_std / math.sqrt(2 * depth))
    return b.make_spec(roles, init=init)


def decoder_lm(
    vocab_size: int,
    dim: int,
    *,
    depth: int,
    num_heads: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> CausalLM:
    """Decoder-only Transformer LM (GPT-2, LLaMA, Mixtral-style) as a spec-built network.

    ``logits = head(norm(blocks(drop(tok_embed(ids) [+ pos_embed]))))`` with ``depth``
    pre-norm causal Transformer blocks.

    Positions (``pos``): ``"learned"`` (GPT-2) or ``"sinusoidal"`` are added to the
    embeddings; ``"rope"`` (LLaMA), ``"alibi"`` and ``"relative"`` act inside attention.
    ``max_positions`` is the context length (the size of the learned table).
    ``rope_scaling`` rescales the RoPE frequencies (``"linear"`` or LLaMA-3's ``"llama3"``;
    see :func:`~netarchitect.layers.positional.rope_scaling_config`).
    ``mlp_layer`` is one feed-forward type or a list with one per block (MoE every k
    layers). ``qk_norm`` normalises each head's queries and keys; ``window`` makes
    attention local (sliding window, Mistral). ``norm_eps`` fixes the norms' epsilon;
    ``bias`` switches the attention biases and ``mlp_bias`` the MLP's (``None``: that MLP
    type's default). The head shares the token embedding when ``tie_embeddings``. Weights
    start as GPT-2's (``N(0, init_std)``, residual output projections
    ``init_std / sqrt(2 · depth)``). ``seq_len`` is the length the spec declares for shape
    inference and analysis (default ``min(max_positions, 128)``); any length runs.
    """
    spec = decoder_lm_spec(vocab_size, dim, depth=depth, num_heads=num_heads, **kwargs)
    return GraphBuilder.build_spec(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]
