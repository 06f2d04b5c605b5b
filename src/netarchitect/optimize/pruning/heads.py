"""Pruning rules of the Transformer blocks: attention heads (whole key/value groups under
grouped-query attention), MLP hidden units, and each MoE expert's hidden units.

The residual stream is normalised (LayerNorm / RMSNorm), so its width is kept: removing
a channel would change the others' statistics.
"""

from __future__ import annotations

from typing import Any

from .dependency import Chan, Dim, RuleContext, register_rule

__all__: list[str] = []

_HEAD_LOCKED = ("pos_bias",)  # per-head position biases (ALiBi slopes depend on the count)


def _attention(ctx: RuleContext, prefix: str, attn: Any) -> Chan:
    """Label q/k/v/out of a :class:`~netarchitect.layers.attention.MultiHeadAttention` by
    key/value group; returns the group space (``num_kv_heads`` units)."""
    rep = attn.num_heads // attn.num_kv_heads
    hd = attn.head_dim
    kv = ctx.space(attn.num_kv_heads)
    q = Dim(kv, inner=rep * hd)
    p = f"{prefix}." if prefix else ""
    for name in ("k_proj", "v_proj"):
        ctx.label_module(p + name, Dim(kv, inner=hd), None)
    ctx.label_module(p + "q_proj", q, None)
    ctx.label(p + "out_proj.weight", None, q)
    if any(getattr(attn, name, None) is not None for name in _HEAD_LOCKED):
        ctx.freeze(kv, "per-head position biases")
    return kv


def _mlp(
    ctx: RuleContext, prefix: str, mlp: Any, inp: Chan | None = None, out: Chan | None = None
) -> Chan | None:
    """Label a plain or gated MLP's hidden units (and its input / output features when
    given); ``None`` for other kinds (kept whole)."""
    p = f"{prefix}." if prefix else ""
    if hasattr(mlp, "fc1") and hasattr(mlp, "fc2"):
        first, last = ["fc1"], "fc2"
    elif all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        first, last = ["gate_proj", "up_proj"], "down_proj"
    else:
        return None
    hidden = ctx.space(getattr(mlp, first[0]).out_features)
    for name in first:
        ctx.label_module(p + name, hidden, inp)
    ctx.label(f"{p}{last}.weight", out, hidden)
    ctx.label(f"{p}{last}.bias", out)
    return hidden


@register_rule("transformer_block", "vit_block")
def _transformer_block(ctx: RuleContext, inp: Chan) -> Chan:
    m = ctx.module
    ctx.freeze(inp, "the normalised residual stream of a Transformer block")
    heads = _attention(ctx, "attn.fn", m.attn.fn)
    attn = m.attn.fn
    if m.cross_attn is not None:
        _attention(ctx, "cross_attn.fn", m.cross_attn.fn)
    ffn = m.mlp.fn
    hidden = _mlp(ctx, "mlp.fn", ffn)
    if hidden is None and hasattr(ffn, "experts"):
        hiddens = [_mlp(ctx, f"mlp.fn.experts.{i}", e) for i, e in enumerate(ffn.experts)]
        hidden = hiddens[0] if all(h is not None for h in hiddens) else None
    rep = attn.num_heads // attn.num_kv_heads
    vit = ctx.node.block == "vit_block"
    if vit:  # its head width is dim // num_heads: no head_dim parameter to keep it
        ctx.freeze(heads, "vit_block has no head_dim parameter")

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        if not vit:
            params["num_heads"] = keep(heads) * rep
            params["head_dim"] = attn.head_dim
            if attn.num_kv_heads != attn.num_heads or "num_kv_heads" in params:
                params["num_kv_heads"] = keep(heads)
        if hidden is not None:
            if vit:
                params["mlp_ratio"] = (keep(hidden) + 0.5) / attn.dim
            else:
                params["hidden_dim"] = keep(hidden)
        return params

    ctx.on_respec(respec)
    return inp


@register_rule("conformer_block")
def _conformer_block(ctx: RuleContext, inp: Chan) -> Chan:
    """Macaron feed-forwards (one ``mlp_ratio``), attention and a convolution module around
    a normalised stream: the feed-forwards' hidden units prune; heads are kept (the block
    has no ``head_dim`` parameter) and so is the convolution module (as wide as the stream)."""
    ctx.freeze(inp, "the normalised residual stream of a Conformer block")
    first, second = (_mlp(ctx, f"{ff}.fn.fn", getattr(ctx.module, ff).fn.fn) for ff in ("ff1", "ff2"))
    if first is not None and second is not None:
        dim = ctx.module.ff1.fn.fn.fc1.in_features
        ctx.on_respec(lambda keep, params: {**params, "mlp_ratio": (keep(first) + 0.5) / dim})
    return inp


@register_rule("multi_head_attention")
def _multi_head_attention(ctx: RuleContext, inp: Chan) -> Chan:
    """Heads prune; its output is as wide as its input (``dim``), so both are kept."""
    ctx.freeze(inp, "the input of attention, whose output has the same width")
    heads = _attention(ctx, "", ctx.module)
    attn = ctx.module
    rep = attn.num_heads // attn.num_kv_heads

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        params.update(num_heads=keep(heads) * rep, head_dim=attn.head_dim)
        if attn.num_kv_heads != attn.num_heads or "num_kv_heads" in params:
            params["num_kv_heads"] = keep(heads)
        return params

    ctx.on_respec(respec)
    out = ctx.space(ctx.out_size)
    ctx.freeze(out, "the output of attention, as wide as its input")
    return out


@register_rule("mlp", "gated_mlp", "swiglu", "glu", "geglu", "reglu")
def _mlp_block(ctx: RuleContext, inp: Chan) -> Chan:
    """Input features, hidden units and output features (made explicit as ``out_dim``)."""
    out = ctx.space(ctx.out_size)
    hidden = _mlp(ctx, "", ctx.module, inp, out)
    assert hidden is not None  # every registered MLP block is plain or gated

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        params.update(hidden_dim=keep(hidden), out_dim=keep(out))
        params.pop("mlp_ratio", None)
        return params

    ctx.on_respec(respec)
    return out


@register_rule("moe")
def _moe_block(ctx: RuleContext, inp: Chan) -> Chan:
    """Each expert's hidden units prune (one ``hidden_dim``); the width is kept."""
    ctx.freeze(inp, "the input of a mixture of experts, whose output has the same width")
    hiddens = [_mlp(ctx, f"experts.{i}", e) for i, e in enumerate(ctx.module.experts)]
    first = hiddens[0]
    if first is not None and all(h is not None for h in hiddens):
        ctx.on_respec(lambda keep, params: {**params, "hidden_dim": keep(first)})
    out = ctx.space(ctx.out_size)
    ctx.freeze(out, "the output of a mixture of experts, as wide as its input")
    return out
