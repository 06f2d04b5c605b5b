"""The diffusion UNet (Ho et al. 2020; Dhariwal & Nichol 2021) as a spec, and its variants.

Spec (``roles: {kind: diffusion_unet, num_classes, num_train_timesteps}``), context
``[t]`` or ``[t, y]``:

- ``emb``: :class:`~netarchitect.layers.diffusion.TimeClassEmbedding` of the context ``t``
  (and ``y``; a class-conditional model called without ``y`` uses the null class
  ``num_classes``);
- ``conv_in``; per level ``i`` (channels ``base_channels · channel_mult[i]``)
  ``num_res_blocks`` × ``down{i}_res{j}`` (+ ``down{i}_attn{j}`` when the level's
  resolution is in ``attn_resolutions``), then ``down{i}_down`` (stride-2 conv) except
  at the last level;
- ``mid_res0``, ``mid_attn``, ``mid_res1``;
- per level, deepest first, ``num_res_blocks + 1`` × (``up{i}_cat{j}``: the skip from the
  matching down node concatenated on channels, ``up{i}_res{j}``, ``up{i}_attn{j}``), then
  ``up{i}_upsample`` + ``up{i}_upconv`` except at the top level;
- ``out_norm``, ``out_act``, ``out`` (3×3 conv to ``out_channels``).

Every residual node takes ``[h, emb]`` (``merge: args``). The call convention is the
denoiser's: ``model(x_t, t)`` or ``model(x_t, t, y)`` (see ``notes/gen_contract.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import SpecError
from ..layers._factory import example_tensor
from ..network import build
from ..registry import Example, register_model, register_network_kind
from ._denoiser import DenoiserNetwork
from ._graph_builder import GraphBuilder
from ._stages import check_positive

__all__ = ["DiffusionUNet", "diffusion_unet"]

Params = Mapping[str, Any]


@register_network_kind("diffusion_unet")
class DiffusionUNet(DenoiserNetwork):
    """A spec-built diffusion UNet, called as every denoiser: ``model(x_t, t[, y])``.

    Shapes:
        x_t: ``(B, C, H, W)``, t: ``(B,)`` int64 (or float), y: ``(B,)`` int64 ->
        ``(B, out_channels, H, W)``.
    """


def _check_levels(img_size: int, levels: int) -> None:
    factor = 2 ** (levels - 1)
    if img_size % factor:
        raise SpecError(
            f"img_size={img_size} cannot be downsampled {levels - 1} times by 2 "
            f"(len(channel_mult)={levels} levels): it must be a multiple of {factor}",
            path="img_size",
        )


def _check_args(in_channels: Any, img_size: Any, base_channels: Any, channel_mult: Any,
                num_res_blocks: Any, num_classes: Any, num_train_timesteps: Any) -> None:
    for key, value in (("in_channels", in_channels), ("img_size", img_size),
                       ("base_channels", base_channels), ("num_res_blocks", num_res_blocks),
                       ("num_train_timesteps", num_train_timesteps)):
        check_positive(key, value)
    if num_classes is not None:
        check_positive("num_classes", num_classes)
    if not channel_mult:
        raise SpecError("channel_mult must list at least one level", path="channel_mult")
    for m in channel_mult:
        check_positive("channel_mult", m)
    _check_levels(img_size, len(channel_mult))


class _UNetBuilder:
    """Adds the UNet's nodes to a :class:`GraphBuilder`, remembering skip sources."""

    def __init__(self, b: GraphBuilder, emb_dim: int, res: Params, attn: Params,
                 attn_resolutions: Sequence[int]) -> None:
        self.b, self.emb_dim, self.res, self.attn = b, emb_dim, dict(res), dict(attn)
        self.attn_resolutions = set(attn_resolutions)

    def res_block(self, prefix: str, channels: int, resolution: int) -> str:
        self.b.add(f"{prefix}res", "time_res_block",
                   {"out_channels": channels, "emb_dim": self.emb_dim, **self.res},
                   inputs=[self.b.last, "emb"], merge="args")
        if resolution in self.attn_resolutions:
            self.b.add(f"{prefix}attn", "spatial_self_attention", self.attn)
        return self.b.last


def diffusion_unet(
    *,
    in_channels: int = 1,
    out_channels: int | None = None,
    img_size: int = 16,
    base_channels: int = 32,
    channel_mult: Sequence[int] = (1, 2, 2),
    num_res_blocks: int = 2,
    attn_resolutions: Sequence[int] = (8,),
    num_heads: int = 1,
    emb_dim: int | None = None,
    num_classes: int | None = None,
    num_train_timesteps: int = 1000,
    dropout: float = 0.0,
    scale_shift: bool = True,
    norm_layer: str | Params = "groupnorm",
    act_layer: str = "silu",
    name: str = "diffusion_unet",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> DiffusionUNet:
    """The UNet family builder (see the module docstring); returns a :class:`DiffusionUNet`.

    ``img_size`` must be divisible by ``2 ** (len(channel_mult) - 1)``; ``attn_resolutions``
    lists the feature-map sizes (``img_size``, ``img_size / 2``, ...) that get
    self-attention (the middle block always has it). ``emb_dim`` defaults to
    ``4 · base_channels``; ``num_classes`` adds a class embedding of ``num_classes + 1`` rows.
    """
    _check_args(in_channels, img_size, base_channels, channel_mult, num_res_blocks,
                num_classes, num_train_timesteps)
    out_channels = in_channels if out_channels is None else out_channels
    check_positive("out_channels", out_channels)
    emb_dim = 4 * base_channels if emb_dim is None else emb_dim
    check_positive("emb_dim", emb_dim)
    b = GraphBuilder(name, {"x": (in_channels, img_size, img_size)})
    b.add("emb", "time_class_embedding",
          {"dim": emb_dim, "freq_dim": base_channels, "num_classes": num_classes},
          context=["t", "y"] if num_classes is not None else ["t"])
    res = {"scale_shift": scale_shift, "dropout": dropout, "norm_layer": norm_layer,
           "act_layer": act_layer}
    u = _UNetBuilder(b, emb_dim, res, {"num_heads": num_heads, "norm_layer": norm_layer},
                     attn_resolutions)
    skips = [b.add("conv_in", "conv2d", {"out_channels": base_channels, "kernel_size": 3},
                   inputs=["x"])]
    channels, resolution = [base_channels], img_size
    last = len(channel_mult) - 1
    for i, mult in enumerate(channel_mult):
        width = base_channels * mult
        for j in range(num_res_blocks):
            skips.append(u.res_block(f"down{i}_{j}_", width, resolution))
            channels.append(width)
        if i != last:
            skips.append(b.add(f"down{i}_down", "conv2d",
                               {"out_channels": width, "kernel_size": 3, "stride": 2}))
            channels.append(width)
            resolution //= 2
    u.res_block("mid0_", width, -1)
    b.add("mid_attn", "spatial_self_attention", u.attn)
    u.res_block("mid1_", width, -1)
    for i in reversed(range(len(channel_mult))):
        width = base_channels * channel_mult[i]
        for j in range(num_res_blocks + 1):
            b.add(f"up{i}_{j}_cat", "identity", inputs=[b.last, skips.pop()], merge="concat")
            u.res_block(f"up{i}_{j}_", width, resolution)
        if i != 0:
            b.add(f"up{i}_upsample", "upsample", {"scale_factor": 2.0, "mode": "nearest"})
            b.add(f"up{i}_upconv", "conv2d", {"out_channels": width, "kernel_size": 3})
            resolution *= 2
    b.add_layer("out_norm", norm_layer)
    b.add("out_act", act_layer)
    b.add("out", "conv2d", {"out_channels": out_channels, "kernel_size": 3})
    spec = b.make_spec({"kind": "diffusion_unet", "num_classes": num_classes,
                        "num_train_timesteps": num_train_timesteps})
    return build(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def _example(**overrides: Any) -> Example:
    """A 1×8×8 UNet of two levels with attention at 4×4 (and classes when asked)."""
    kwargs = {"in_channels": 1, "img_size": 8, "base_channels": 8, "channel_mult": (1, 2),
              "num_res_blocks": 1, "attn_resolutions": (4,),
              "norm_layer": {"name": "groupnorm", "num_groups": 4}, **overrides}
    x, t = example_tensor(2, 1, 8, 8), torch.tensor([3, 900])
    inputs: tuple[Any, ...] = (x, t)
    if kwargs.get("num_classes"):
        inputs = (x, t, torch.tensor([1, kwargs["num_classes"]]))  # a class and the null class
    return Example(kwargs, inputs)


def _variant(defaults: dict[str, Any], overrides: dict[str, Any]) -> DiffusionUNet:
    return diffusion_unet(**{**defaults, **overrides})


@register_model("diffusion_unet_tiny", example=_example)
def diffusion_unet_tiny(**kwargs: Any) -> DiffusionUNet:
    """A tiny UNet for tests: 1×8×8, 2 levels (8, 16 channels), attention at 4×4."""
    return _variant({"img_size": 8, "base_channels": 8, "channel_mult": (1, 2),
                     "num_res_blocks": 1, "attn_resolutions": (4,), "name": "diffusion_unet_tiny",
                     "norm_layer": {"name": "groupnorm", "num_groups": 4}}, kwargs)


@register_model("diffusion_unet_digits", example=lambda: _example(num_classes=3))
def diffusion_unet_digits(**kwargs: Any) -> DiffusionUNet:
    """Class-conditional UNet for scikit-learn digits at their native 1×8×8: 2 levels (32, 64
    channels), 2 residual blocks per level, attention at 4×4, 10 classes (+ null)."""
    return _variant({"img_size": 8, "base_channels": 32, "channel_mult": (1, 2),
                     "num_res_blocks": 2, "attn_resolutions": (4,), "num_classes": 10,
                     "name": "diffusion_unet_digits",
                     "norm_layer": {"name": "groupnorm", "num_groups": 8}}, kwargs)


@register_model("diffusion_unet_digits16", example=lambda: _example(num_classes=2))
def diffusion_unet_digits16(**kwargs: Any) -> DiffusionUNet:
    """Class-conditional UNet for digits upsampled to 1×16×16: 3 levels (32, 64, 64
    channels), 2 residual blocks per level, attention at 8×8 and 4×4, 10 classes (+ null)."""
    return _variant({"img_size": 16, "base_channels": 32, "channel_mult": (1, 2, 2),
                     "num_res_blocks": 2, "attn_resolutions": (8, 4), "num_classes": 10,
                     "name": "diffusion_unet_digits16",
                     "norm_layer": {"name": "groupnorm", "num_groups": 8}}, kwargs)
