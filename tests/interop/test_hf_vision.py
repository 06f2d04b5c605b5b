"""Hugging Face vision interop: transformers ResNet, ConvNeXt and ViT load into our
classifiers with equal outputs (eval mode), BatchNorm statistics and clear errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

tf = pytest.importorskip("transformers")

from netarchitect.interop import from_hf, from_hf_vision
from netarchitect.interop.hf_vision import is_hf_vision
from netarchitect.models._classifier import ClassifierNetwork

TOL = {"atol": 1e-5, "rtol": 1e-5}


def resnet_config(**kw: Any) -> Any:
    base = {"layer_type": "basic", "hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8}
    return tf.ResNetConfig(**{**base, "num_labels": 5, **kw})


def convnext_config(**kw: Any) -> Any:
    base = {"hidden_sizes": [8, 16], "depths": [1, 2], "num_stages": 2, "image_size": 32}
    return tf.ConvNextConfig(**{**base, "num_labels": 5, **kw})


def vit_config(**kw: Any) -> Any:
    base = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
    }
    return tf.ViTConfig(**{**base, "num_labels": 5, **kw})


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random weights and BatchNorm statistics, larger than any init, so parity is a real test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
    return model.eval()


def image(size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hf_output(hf_model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what our ``forward`` returns, what our ``forward_features`` returns)."""
    out = hf_model(x)
    hidden = hf_model.base_model(x).last_hidden_state
    if hasattr(out, "logits"):
        return out.logits, hidden
    pooled = out.pooler_output
    return (hidden[:, 0] if pooled is None else pooled.flatten(1)), hidden


CLASSIFIERS = {
    "resnet_basic": lambda: tf.ResNetForImageClassification(resnet_config()),
    "resnet_bottleneck": lambda: tf.ResNetForImageClassification(
        resnet_config(layer_type="bottleneck", depths=[2, 2], hidden_sizes=[16, 32])
    ),
    "convnext": lambda: tf.ConvNextForImageClassification(convnext_config()),
    "convnext_no_layerscale_patch2": lambda: tf.ConvNextForImageClassification(
        convnext_config(layer_scale_init_value=0.0, patch_size=2, layer_norm_eps=1e-5)
    ),
    "vit": lambda: tf.ViTForImageClassification(vit_config()),
    "vit_eps_1e-6_tuple_size": lambda: tf.ViTForImageClassification(
        vit_config(layer_norm_eps=1e-6, image_size=(32, 32), patch_size=[8, 8])
    ),
}
BASES = {
    "resnet": lambda: tf.ResNetModel(resnet_config()),
    "convnext": lambda: tf.ConvNextModel(convnext_config()),
    "vit": lambda: tf.ViTModel(vit_config(), add_pooling_layer=False),
}


@pytest.mark.parametrize("make", CLASSIFIERS.values(), ids=CLASSIFIERS.keys())
def test_classifier_logits_match(make: Any) -> None:
    hf = randomize(make())
    ours = from_hf_vision(hf)
    assert isinstance(ours, ClassifierNetwork) and not ours.training
    assert ours.num_classes == 5
    x = image()
    with torch.no_grad():
        logits, hidden = hf_output(hf, x)
        torch.testing.assert_close(ours(x), logits, **TOL)
        torch.testing.assert_close(ours.forward_features(x), hidden, **TOL)


@pytest.mark.parametrize("make", BASES.values(), ids=BASES.keys())
def test_base_model_pooled_features_match(make: Any) -> None:
    hf = randomize(make())
    ours = from_hf_vision(hf)
    assert ours.num_classes == 0
    x = image()
    with torch.no_grad():
        pooled, hidden = hf_output(hf, x)
        torch.testing.assert_close(ours(x), pooled, **TOL)
        torch.testing.assert_close(ours.forward_features(x), hidden, **TOL)


def test_batchnorm_running_stats_are_carried() -> None:
    hf = randomize(tf.ResNetForImageClassification(resnet_config()))
    ours = from_hf_vision(hf)
    stem_hf = hf.resnet.embedder.embedder.normalization
    stem = ours.nodes["stem"].norm
    torch.testing.assert_close(stem.running_mean, stem_hf.running_mean)
    torch.testing.assert_close(stem.running_var, stem_hf.running_var)
    short_hf = hf.resnet.encoder.stages[1].layers[0].shortcut.normalization
    short = ours.nodes["s2_b0"].downsample[1]
    torch.testing.assert_close(short.running_var, short_hf.running_var)
    assert int(short.num_batches_tracked) == 7
    stats = {n: b for n, b in ours.named_buffers() if "running" in n}
    assert len(stats) == sum(1 for n, _ in hf.named_buffers() if "running" in n) == 12


def test_from_hf_delegates_and_keeps_mode_and_dtype() -> None:
    hf = randomize(tf.ViTForImageClassification(vit_config())).double().train()
    assert is_hf_vision(hf) and not is_hf_vision(nn.Linear(2, 2))
    assert not is_hf_vision(tf.GPT2Model(tf.GPT2Config(n_embd=8, n_layer=1, n_head=2)))
    ours = from_hf(hf)
    assert isinstance(ours, ClassifierNetwork) and ours.training
    assert next(ours.parameters()).dtype == torch.float64
    hf.eval(), ours.eval()
    x = image().double()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits)


def test_converted_model_is_independent_and_trainable() -> None:
    hf = randomize(tf.ConvNextForImageClassification(convnext_config()))
    ours = from_hf_vision(hf).train()
    ours(image()).sum().backward()
    assert all(p.grad is not None for p in ours.parameters())
    with torch.no_grad():
        ours.nodes["head"].weight.zero_()
    assert hf.classifier.weight.abs().sum() > 0  # copies, not shared storage


# --- errors ------------------------------------------------------------------------------


def test_unsupported_classes_raise_type_error() -> None:
    with pytest.raises(TypeError, match="supported transformers vision classes"):
        from_hf_vision(nn.Linear(2, 2))
    config = tf.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280)
    with torch.device("meta"):
        effnet = tf.EfficientNetForImageClassification(config)
        mobilenet = tf.MobileNetV2Model(tf.MobileNetV2Config())
    with pytest.raises(TypeError, match="EfficientNetForImageClassification: .*SAME' padding"):
        from_hf_vision(effnet)
    with pytest.raises(TypeError, match="MobileNetV2Model: .*tf_padding"):
        from_hf(mobilenet)


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: tf.ResNetModel(resnet_config(hidden_act="gelu")),
            "hidden_act='gelu' is not supported",
        ),
        (
            lambda: tf.ResNetModel(resnet_config(downsample_in_first_stage=True)),
            "downsample_in_first_stage=True",
        ),
        (
            lambda: tf.ResNetModel(
                resnet_config(layer_type="bottleneck", downsample_in_bottleneck=True)
            ),
            "downsample_in_bottleneck=True",
        ),
        (
            lambda: tf.ResNetModel(resnet_config(layer_type="bottleneck", hidden_sizes=[8, 18])),
            "multiples of 4",
        ),
        (
            lambda: tf.ConvNextModel(convnext_config(hidden_act="relu")),
            "ConvNeXt config hidden_act='relu'",
        ),
        (lambda: tf.ViTModel(vit_config(qkv_bias=False), False), "qkv_bias=False"),
        (lambda: tf.ViTModel(vit_config(image_size=(32, 48)), False), r"only square sizes"),
        (lambda: tf.ViTModel(vit_config()), "add_pooling_layer=False"),
    ],
)
def test_configs_without_equivalent_raise_value_error(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_hf_vision(make())


def test_unmatched_weights_are_named() -> None:
    extra = tf.ResNetForImageClassification(resnet_config())
    extra.resnet.register_buffer("extra", torch.zeros(2))
    with pytest.raises(ValueError, match="'resnet.extra' has no netarchitect counterpart"):
        from_hf_vision(extra)

    missing = tf.ViTForImageClassification(vit_config())
    missing.classifier.bias = None
    with pytest.raises(ValueError, match=r"\['nodes.head.bias'\] have no transformers"):
        from_hf_vision(missing)

    reshaped = tf.ConvNextForImageClassification(convnext_config())
    reshaped.classifier.weight = nn.Parameter(torch.zeros(5, 8))
    with pytest.raises(ValueError, match=r"'classifier.weight' has shape \(5, 8\) but .*\(5, 16\)"):
        from_hf_vision(reshaped)

    deeper = tf.ViTForImageClassification(vit_config())
    deeper.vit.layers.append(copy.deepcopy(deeper.vit.layers[1]))  # config still says 2
    with pytest.raises(ValueError, match=r"'vit.layers.2.attention.q_proj.weight' .*looked for"):
        from_hf_vision(deeper)
