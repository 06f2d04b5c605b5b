"""Hugging Face ``transformers`` vision models -> netarchitect classifiers.

``from_hf_vision(hf_model)`` builds the :class:`ClassifierNetwork` of the same shape with our
family builder and copies every weight and BatchNorm statistic; in eval mode both compute
the same logits (float32: ~1e-6). Supported:

======================================================  ============================
transformers                                            netarchitect
======================================================  ============================
``ResNetForImageClassification`` / ``ResNetModel``      :func:`.resnet` classifier
``ConvNextForImageClassification`` / ``ConvNextModel``  :func:`.convnext` classifier
``ViTForImageClassification`` / ``ViTModel``            :func:`.vit` classifier
======================================================  ============================

A base model (no head) becomes a ``num_classes=0`` classifier: ``forward`` returns the
pooled features (ResNet/ConvNeXt ``pooler_output``; ViT's normalised class token) and
``forward_features`` the last hidden state. ``ViTModel`` must be built without its pooler
(``add_pooling_layer=False``): its tanh-dense pooler has no counterpart.

Weights map through one table of key patterns per family. Every transformers tensor must
name a netarchitect tensor of the same shape (ViT's ``(1, N, D)`` position table drops its
batch axis) and every netarchitect tensor must be filled, else ``ValueError`` names the key.
Dropout rates are carried; our ViT also drops before its classifier where transformers does
not (training only).

Not supported (``TypeError``): transformers' EfficientNet and MobileNetV2 are ports of the
TensorFlow models: same parameter counts as torchvision's (tests/models/
test_vision_hf_reference.py) but TensorFlow "SAME" padding (asymmetric zero padding before
strided convolutions) and TensorFlow BatchNorm settings, so their outputs differ from our
torchvision-layout models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..models._classifier import ClassifierNetwork
from ..models.convnext import convnext
from ..models.resnet import resnet
from ..models.vit import vit

__all__ = ["from_hf_vision", "is_hf_vision"]

#: transformers class name -> (family, has a classification head).
_HF_VISION_CLASSES = {
    "ResNetForImageClassification": ("resnet", True),
    "ResNetModel": ("resnet", False),
    "ConvNextForImageClassification": ("convnext", True),
    "ConvNextModel": ("convnext", False),
    "ViTForImageClassification": ("vit", True),
    "ViTModel": ("vit", False),
}
#: transformers class-name prefix -> why it is not converted.
_UNSUPPORTED = {
    "EfficientNet": "it is a port of the Keras model (TensorFlow 'SAME' padding, BatchNorm eps "
    "1e-3 everywhere) while netarchitect's EfficientNet has torchvision's layout",
    "MobileNetV2": "it is a port of the TensorFlow model (tf_padding, BatchNorm eps 1e-3) while "
    "netarchitect's MobileNetV2 has torchvision's layout",
}

#: (regex over the transformers key, our key as a format string of its named groups). Groups
#: ``s`` (stage) and ``k`` (conv in a block) count from 0 in transformers, from 1 here.
Pattern = tuple[str, str]

_T = r"(?P<t>\w+)"
_RESNET_BLOCK = r"(?:resnet\.)?encoder\.stages\.(?P<s>\d+)\.layers\.(?P<b>\d+)\."
_RESNET: Sequence[Pattern] = (
    (rf"(?:resnet\.)?embedder\.embedder\.convolution\.{_T}", "stem.conv.{t}"),
    (rf"(?:resnet\.)?embedder\.embedder\.normalization\.{_T}", "stem.norm.{t}"),
    (rf"{_RESNET_BLOCK}shortcut\.convolution\.{_T}", "s{s}_b{b}.downsample.0.{t}"),
    (rf"{_RESNET_BLOCK}shortcut\.normalization\.{_T}", "s{s}_b{b}.downsample.1.{t}"),
    (rf"{_RESNET_BLOCK}layer\.(?P<k>\d+)\.convolution\.{_T}", "s{s}_b{b}.conv{k}.{t}"),
    (rf"{_RESNET_BLOCK}layer\.(?P<k>\d+)\.normalization\.{_T}", "s{s}_b{b}.bn{k}.{t}"),
    (rf"classifier\.1\.{_T}", "head.{t}"),
)

_CONVNEXT_STAGE = r"(?:convnext\.)?encoder\.stages\.(?P<s>\d+)\."
_CONVNEXT_BLOCK = rf"{_CONVNEXT_STAGE}layers\.(?P<b>\d+)\."
_CONVNEXT: Sequence[Pattern] = (
    (rf"(?:convnext\.)?embeddings\.patch_embeddings\.{_T}", "stem_conv.{t}"),
    (rf"(?:convnext\.)?embeddings\.layernorm\.{_T}", "stem_norm.{t}"),
    (rf"{_CONVNEXT_STAGE}downsampling_layer\.0\.{_T}", "s{s}_norm.{t}"),
    (rf"{_CONVNEXT_STAGE}downsampling_layer\.1\.{_T}", "s{s}_down.{t}"),
    (rf"{_CONVNEXT_BLOCK}dwconv\.{_T}", "s{s}_b{b}.conv_dw.{t}"),
    (rf"{_CONVNEXT_BLOCK}layernorm\.{_T}", "s{s}_b{b}.norm.{t}"),
    (rf"{_CONVNEXT_BLOCK}pwconv(?P<f>[12])\.{_T}", "s{s}_b{b}.fc{f}.{t}"),
    (rf"{_CONVNEXT_BLOCK}layer_scale_parameter", "s{s}_b{b}.ls.gamma"),
    (rf"(?:convnext\.)?layernorm\.{_T}", "head_norm.{t}"),
    (rf"classifier\.{_T}", "head.{t}"),
)

_VIT_BLOCK = r"(?:vit\.)?layers\.(?P<b>\d+)\."
_VIT: Sequence[Pattern] = (
    (r"(?:vit\.)?embeddings\.cls_token", "cls_token.token"),
    (r"(?:vit\.)?embeddings\.position_embeddings", "pos_embed.weight"),
    (rf"(?:vit\.)?embeddings\.patch_embeddings\.projection\.{_T}", "patch_embed.proj.{t}"),
    (rf"{_VIT_BLOCK}attention\.(?P<x>[qkv])_proj\.{_T}", "s1_b{b}.attn.fn.{x}_proj.{t}"),
    (rf"{_VIT_BLOCK}attention\.o_proj\.{_T}", "s1_b{b}.attn.fn.out_proj.{t}"),
    (rf"{_VIT_BLOCK}layernorm_before\.{_T}", "s1_b{b}.attn.norm.{t}"),
    (rf"{_VIT_BLOCK}layernorm_after\.{_T}", "s1_b{b}.mlp.norm.{t}"),
    (rf"{_VIT_BLOCK}mlp\.fc(?P<f>[12])\.{_T}", "s1_b{b}.mlp.fn.fc{f}.{t}"),
    (rf"(?:vit\.)?layernorm\.{_T}", "norm.{t}"),
    (rf"classifier\.{_T}", "head.{t}"),
)


def _our_key(hf_key: str, patterns: Sequence[Pattern]) -> str | None:
    """Our state-dict key for a transformers key (``None``: no pattern matches)."""
    for regex, template in patterns:
        m = re.fullmatch(regex, hf_key)
        if m is not None:
            groups = m.groupdict()
            for name in ("s", "k"):
                if name in groups:
                    groups[name] = int(groups[name]) + 1
            return "nodes." + template.format(**groups)
    return None


def convert_vision_state(
    hf_state: Mapping[str, Tensor], patterns: Sequence[Pattern], ours: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename a transformers state dict to ours (``ours``: our state dict, for names and
    shapes), checking that every tensor on both sides is used exactly once."""
    out: dict[str, Tensor] = {}
    for hf_key, tensor in hf_state.items():
        key = _our_key(hf_key, patterns)
        if key is None or key not in ours:
            hint = "" if key is None else f" (looked for {key!r})"
            raise ValueError(
                f"transformers weight {hf_key!r} has no netarchitect counterpart{hint}: "
                "the models do not match"
            )
        shape = tuple(ours[key].shape)
        if tuple(tensor.shape) == (1, *shape):  # ViT's (1, N, D) position table
            tensor = tensor[0]
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"transformers weight {hf_key!r} has shape {tuple(tensor.shape)} but "
                f"netarchitect's {key!r} has shape {shape}"
            )
        out[key] = tensor.detach().cpu()
    unset = sorted(set(ours) - set(out))
    if unset:
        raise ValueError(f"netarchitect weights {unset} have no transformers counterpart")
    return out


# --- config -> our builder ---------------------------------------------------------------


def _square(name: str, value: Any) -> int:
    """An ``int`` image or patch size from a config value (int or an equal pair)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name}={value!r}: only square sizes are supported")
        value = value[0]
    return int(value)


def _require(family: str, config: Any, name: str, allowed: tuple[Any, ...]) -> None:
    value = getattr(config, name)
    if value not in allowed:
        only = ", ".join(map(repr, allowed))
        raise ValueError(f"{family} config {name}={value!r} is not supported (only {only})")


def _resnet(config: Any, num_classes: int, factory: dict[str, Any]) -> ClassifierNetwork:
    # Inner convolutions of transformers' ResNet always use ReLU, only the stem and the
    # residual sums use hidden_act: any other value has no single-activation equivalent.
    _require("ResNet", config, "hidden_act", ("relu",))
    _require("ResNet", config, "downsample_in_first_stage", (False,))
    _require("ResNet", config, "downsample_in_bottleneck", (False,))
    block = "bottleneck" if config.layer_type == "bottleneck" else "basic_block"
    expansion = 4 if block == "bottleneck" else 1
    sizes = tuple(config.hidden_sizes)
    if any(size % expansion for size in sizes):
        raise ValueError(f"bottleneck ResNet hidden_sizes={list(sizes)} must be multiples of 4")
    return resnet(
        block=block,
        layers=tuple(config.depths),
        widths=tuple(size // expansion for size in sizes),
        stem_width=config.embedding_size,
        in_chans=config.num_channels,
        num_classes=num_classes,
        **factory,
    )


def _convnext(config: Any, num_classes: int, factory: dict[str, Any]) -> ClassifierNetwork:
    _require("ConvNeXt", config, "hidden_act", ("gelu",))
    stages = config.num_stages
    scale = config.layer_scale_init_value
    return convnext(
        depths=tuple(config.depths[:stages]),
        dims=tuple(config.hidden_sizes[:stages]),
        layerscale_init=scale if scale > 0 else None,
        patch_size=_square("patch_size", config.patch_size),
        head_norm_eps=config.layer_norm_eps,
        in_chans=config.num_channels,
        num_classes=num_classes,
        img_size=_square("image_size", config.image_size),
        drop_path_rate=config.drop_path_rate,
        **factory,
    )


def _vit(config: Any, num_classes: int, factory: dict[str, Any]) -> ClassifierNetwork:
    _require("ViT", config, "hidden_act", ("gelu",))
    _require("ViT", config, "qkv_bias", (True,))
    return vit(
        patch_size=_square("patch_size", config.patch_size),
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size,
        norm_eps=config.layer_norm_eps,
        in_chans=config.num_channels,
        num_classes=num_classes,
        img_size=_square("image_size", config.image_size),
        drop_rate=config.hidden_dropout_prob,
        attn_drop_rate=config.attention_probs_dropout_prob,
        **factory,
    )


_BUILDERS: dict[str, tuple[Callable[..., ClassifierNetwork], Sequence[Pattern]]] = {
    "resnet": (_resnet, _RESNET),
    "convnext": (_convnext, _CONVNEXT),
    "vit": (_vit, _VIT),
}


def _family_of(hf_model: nn.Module) -> tuple[str, bool] | None:
    for cls in type(hf_model).__mro__:
        if cls.__name__ in _HF_VISION_CLASSES:
            return _HF_VISION_CLASSES[cls.__name__]
    return None


def _unsupported_reason(hf_model: nn.Module) -> str | None:
    name = type(hf_model).__name__
    return next((why for prefix, why in _UNSUPPORTED.items() if name.startswith(prefix)), None)


def is_hf_vision(hf_model: nn.Module) -> bool:
    """Whether :func:`from_hf_vision` handles ``hf_model``: converts it, or (EfficientNet,
    MobileNetV2) raises a ``TypeError`` saying why it cannot."""
    return _family_of(hf_model) is not None or _unsupported_reason(hf_model) is not None


def from_hf_vision(hf_model: nn.Module) -> ClassifierNetwork:
    """The netarchitect classifier equivalent to a transformers ResNet, ConvNeXt or ViT.

    Built from ``hf_model.config`` with our family builder, in the dtype of its weights, on
    the CPU, holding copies of its weights and BatchNorm running statistics, in the same
    train/eval mode. Raises ``TypeError`` for unsupported classes and ``ValueError`` for
    configs with no equivalent or weights that do not map one to one.
    """
    found = _family_of(hf_model)
    if found is None:
        why = _unsupported_reason(hf_model)
        raise TypeError(
            f"cannot convert {type(hf_model).__name__}"
            + (f": {why}" if why else "")
            + f"; supported transformers vision classes are {', '.join(_HF_VISION_CLASSES)}"
        )
    family, has_head = found
    if family == "vit" and getattr(hf_model, "pooler", None) is not None:
        raise ValueError(
            "ViTModel's pooler (dense + tanh on the class token) has no netarchitect "
            "counterpart: build it with add_pooling_layer=False "
            "(from_pretrained(..., add_pooling_layer=False)) or convert "
            "ViTForImageClassification"
        )
    config: Any = hf_model.config
    builder, patterns = _BUILDERS[family]
    num_classes = config.num_labels if has_head else 0
    model = builder(config, num_classes, {"dtype": next(hf_model.parameters()).dtype})
    state = convert_vision_state(hf_model.state_dict(), patterns, model.state_dict())
    model.load_state_dict(state, strict=True)
    return model.train(hf_model.training)
