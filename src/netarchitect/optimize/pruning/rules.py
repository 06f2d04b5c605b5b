"""Pruning rules of the convolutional blocks: how each block's channels couple and how its
spec params change when they shrink (see :mod:`.dependency`)."""

from __future__ import annotations

import math
from typing import Any

from .dependency import Chan, Dim, RuleContext, register_rule

__all__: list[str] = []

_PASS_THROUGH = (
    "relu", "relu6", "relu2", "gelu", "gelu_tanh", "silu", "hardswish", "hardsigmoid", "sigmoid",
    "tanh", "elu", "leaky_relu", "mish", "identity", "dropout", "drop_path", "maxpool2d",
    "avgpool2d", "adaptive_avgpool2d", "adaptive_maxpool2d", "global_pool", "blurpool",
    "token_pool",
)
_CHANNEL_NORMS = ("layernorm", "layernorm2d", "rmsnorm", "groupnorm", "scalenorm", "instancenorm")


@register_rule(*_PASS_THROUGH)
def _pass_through(ctx: RuleContext, inp: Chan) -> Chan:
    """Element-wise and pooling blocks: the output channels are the input channels."""
    return inp


@register_rule("flatten")
def _flatten(ctx: RuleContext, inp: Chan) -> Chan:
    """Flattening ``(C, 1, 1)`` keeps the channels; anything else mixes them with positions."""
    if ctx.out_size == ctx.in_size:
        return inp
    ctx.freeze(inp, "flattened together with spatial positions")
    out = ctx.space(ctx.out_size)
    ctx.freeze(out, "flattened together with spatial positions")
    return out


@register_rule("batchnorm1d", "batchnorm2d")
def _batchnorm(ctx: RuleContext, inp: Chan) -> Chan:
    ctx.label_module("", inp, None)
    return inp


@register_rule(*_CHANNEL_NORMS)
def _channel_norm(ctx: RuleContext, inp: Chan) -> Chan:
    """A norm over the channels mixes them: removing one changes the others' statistics."""
    ctx.freeze(inp, f"normalised by {ctx.node.block}")
    return inp


def _conv(
    ctx: RuleContext,
    inp: Chan,
    conv: Any,
    prefix: str,
    norm: str | None,
    fixed_groups: bool = False,
) -> Chan:
    """A (grouped / depthwise) convolution at ``prefix`` with an optional norm after it.
    A depthwise convolution prunes its input and output together unless its group count
    is ``fixed_groups`` (a spec param that does not follow the width)."""
    groups = conv.groups
    p = f"{prefix}." if prefix else ""
    if groups == 1:
        out = ctx.space(conv.out_channels)
        ctx.label_module(prefix, out, inp)
    elif groups == conv.in_channels == conv.out_channels and not fixed_groups:  # depthwise: one filter per channel
        out = inp
        ctx.label(p + "weight", inp, None)
        ctx.label(p + "bias", inp)
    else:
        out = ctx.space(conv.out_channels, groups=groups, multiple=groups)
        if len(inp) == 1:
            ctx.constrain(inp, groups=groups)
            ctx.label(p + "weight", out, Dim(inp, local=True))
        else:  # a concatenation split into groups: its parts are kept whole
            ctx.freeze(inp, f"concatenated into a convolution with groups={groups}")
            ctx.label(p + "weight", out, None)
        ctx.label(p + "bias", out)
    if norm is not None:
        ctx.label_module(norm, out, None)
    return out


@register_rule("conv2d", "conv1d", "conv_norm_act")
def _conv_block(ctx: RuleContext, inp: Chan) -> Chan:
    is_cna = ctx.node.block == "conv_norm_act"
    conv = ctx.module.conv if is_cna else ctx.module
    out = _conv(ctx, inp, conv, "conv" if is_cna else "", "norm" if is_cna else None)
    depthwise = out == inp and conv.groups > 1

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        params["out_channels"] = keep(out)
        if depthwise:
            params["groups"] = keep(out)
        return params

    ctx.on_respec(respec)
    return out


@register_rule("linear", "lm_head")
def _linear(ctx: RuleContext, inp: Chan) -> Chan:
    out = ctx.space(ctx.module.out_features)
    ctx.label_module("", out, inp)
    ctx.on_respec(lambda keep, params: {**params, "out_features": keep(out)})
    return out


def _shortcut(ctx: RuleContext, inp: Chan, has_identity: bool, size: int, multiple: int) -> Chan:
    """The output of a residual block: its input when the shortcut is the identity."""
    if has_identity:
        ctx.constrain(inp, multiple=multiple)
        return inp
    return ctx.space(size, multiple=multiple)


@register_rule("basic_block", "bottleneck")
def _resnet_block(ctx: RuleContext, inp: Chan) -> Chan:
    m = ctx.module
    bottleneck = ctx.node.block == "bottleneck"
    convs = ["conv1", "conv2", "conv3"] if bottleneck else ["conv1", "conv2"]
    last = getattr(m, convs[-1])
    out = _shortcut(ctx, inp, m.downsample is None, last.out_channels, m.expansion if bottleneck else 1)
    chan = inp
    for i, name in enumerate(convs, 1):
        conv = getattr(m, name)
        if name == convs[-1]:
            ctx.label_module(name, out, chan)
            ctx.label_module(f"bn{i}", out, None)
        else:
            chan = _conv(ctx, chan, conv, name, f"bn{i}", fixed_groups=True)
    if m.downsample is not None:
        ctx.label_module("downsample.0", out, inp)
        ctx.label_module("downsample.1", out, None)
    mid = chan

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        params["out_channels"] = k_out = keep(out)
        if bottleneck:  # width = int(out // expansion * base_width / 64) * groups
            q, groups = k_out // m.expansion, m.conv2.groups
            per_group = keep(mid) // groups
            if int(q * params.get("base_width", 64) / 64) != per_group:
                params["base_width"] = max(1, math.ceil(64 * per_group / max(q, 1)))
        return params

    ctx.on_respec(respec)
    return out


def _squeeze_excite(ctx: RuleContext, se: Any, chan: Chan) -> None:
    if not hasattr(se, "mlp"):
        if any(True for _ in se.parameters()):
            ctx.freeze(chan, f"squeeze-excitation {type(se).__name__} has no pruning rule")
        return
    rd = ctx.space(se.mlp.fc1.out_channels)
    ctx.label_module("se.mlp.fc1", rd, chan)
    ctx.label_module("se.mlp.fc2", chan, rd)


@register_rule("inverted_residual", "mobilenetv3_block")
def _inverted_residual(ctx: RuleContext, inp: Chan) -> Chan:
    m = ctx.module
    expands = hasattr(m.conv_pw, "conv")
    hidden = _conv(ctx, inp, m.conv_pw.conv, "conv_pw.conv", "conv_pw.norm") if expands else inp
    _conv(ctx, hidden, m.conv_dw.conv, "conv_dw.conv", "conv_dw.norm")
    _squeeze_excite(ctx, m.se, hidden)
    out = _shortcut(ctx, inp, m.has_skip, m.conv_pwl.conv.out_channels, 1)
    ctx.label_module("conv_pwl.conv", out, hidden)
    ctx.label_module("conv_pwl.norm", out, None)

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        params["out_channels"] = keep(out)
        k_in, k_hidden = keep(inp), keep(hidden)
        if expands and k_hidden == k_in:  # keep the expansion conv: one channel more
            k_hidden += 1
        if ctx.node.block == "mobilenetv3_block":
            params["hidden_channels"] = k_hidden
        elif expands:
            params["expand_ratio"] = k_hidden / k_in
        return params

    ctx.on_respec(respec)
    return out


@register_rule("convnext_block")
def _convnext_block(ctx: RuleContext, inp: Chan) -> Chan:
    """``x + ls(fc2(act(fc1(norm(dwconv(x))))))``: the stream is normalised (frozen); the
    MLP's hidden channels prune."""
    ctx.freeze(inp, "normalised by the ConvNeXt block's LayerNorm")
    hidden = ctx.space(ctx.module.fc1.out_features)
    ctx.label_module("fc1", hidden, None)
    ctx.label_module("fc2", None, hidden)
    dim = ctx.module.fc1.in_features
    ctx.on_respec(lambda keep, params: {**params, "mlp_ratio": (keep(hidden) + 0.5) / dim})
    return inp


@register_rule("dense_block")
def _dense_block(ctx: RuleContext, inp: Chan) -> Chan:
    """Layer ``i`` reads the concatenation of the input and the previous layers' outputs."""
    features = inp
    growth: Chan = ()
    for i, layer in enumerate(ctx.module.layers):
        p = f"layers.{i}"
        ctx.label_module(f"{p}.norm1", features, None)
        mid = ctx.space(layer.conv1.out_channels)
        ctx.label_module(f"{p}.conv1", mid, features)
        ctx.label_module(f"{p}.norm2", mid, None)
        growth = ctx.space(layer.conv2.out_channels)
        ctx.label_module(f"{p}.conv2", growth, mid)
        features = features + growth
    ctx.on_respec(lambda keep, params: {**params, "growth_rate": keep(growth)})
    return features


@register_rule("dense_transition")
def _dense_transition(ctx: RuleContext, inp: Chan) -> Chan:
    ctx.label_module("norm", inp, None)
    out = ctx.space(ctx.module.conv.out_channels)
    ctx.label_module("conv", out, inp)
    ctx.on_respec(lambda keep, params: {**params, "out_channels": keep(out)})
    return out


@register_rule("highway")
def _highway(ctx: RuleContext, inp: Chan) -> Chan:
    """``act(T x) · σ(G x) + x · (1 − σ(G x))``: the output is the input's channels."""
    ctx.label_module("transform", inp, inp)
    ctx.label_module("gate", inp, inp)
    return inp


@register_rule("layerscale")
def _layerscale(ctx: RuleContext, inp: Chan) -> Chan:
    ctx.label("gamma", inp)
    return inp


@register_rule("squeeze_excite")
def _squeeze_excite_block(ctx: RuleContext, inp: Chan) -> Chan:
    """``x · gate(mlp(pool(x)))``: the output is the input's channels; the bottleneck
    width follows ``rd_ratio`` (or is given as ``rd_channels``, kept)."""
    rd = ctx.space(ctx.module.mlp.fc1.out_channels)
    ctx.label_module("mlp.fc1", rd, inp)
    ctx.label_module("mlp.fc2", inp, rd)
    return inp


@register_rule("depthwise_separable_conv", "fused_mbconv")
def _separable(ctx: RuleContext, inp: Chan) -> Chan:
    """Depthwise-separable (``pw(se(dw(x)))``) and fused MBConv (``pwl(se(exp(x)))``)."""
    m = ctx.module
    out = _shortcut(ctx, inp, m.has_skip, ctx.out_size, 1)
    if ctx.node.block == "depthwise_separable_conv":
        _conv(ctx, inp, m.conv_dw.conv, "conv_dw.conv", "conv_dw.norm")
        _squeeze_excite(ctx, m.se, inp)
        ctx.label_module("conv_pw.conv", out, inp)
        ctx.label_module("conv_pw.norm", out, None)
        ctx.on_respec(lambda keep, params: {**params, "out_channels": keep(out)})
        return out
    fused = hasattr(m.conv_pwl, "conv")  # else the expansion conv is the projection
    exp = ctx.space(m.conv_exp.conv.out_channels) if fused else out
    ctx.label_module("conv_exp.conv", exp, inp)
    ctx.label_module("conv_exp.norm", exp, None)
    _squeeze_excite(ctx, m.se, exp)
    if fused:
        ctx.label_module("conv_pwl.conv", out, exp)
        ctx.label_module("conv_pwl.norm", out, None)

    def respec(keep: Any, params: dict[str, Any]) -> dict[str, Any]:
        params["out_channels"] = keep(out)
        if fused:
            k_in, k_exp = keep(inp), keep(exp)
            params["expand_ratio"] = (k_exp + 1 if k_exp == k_in else k_exp) / k_in
        return params

    ctx.on_respec(respec)
    return out


@register_rule("gcn_conv")
def _gcn_conv(ctx: RuleContext, inp: Chan) -> Chan:
    """A GCN layer's channels are its linear map's: message passing mixes nodes, not channels."""
    out = ctx.space(ctx.module.out_channels)
    ctx.label_module("lin", out, inp)
    ctx.label("bias", out)
    ctx.on_respec(lambda keep, params: {**params, "out_channels": keep(out)})
    return out
