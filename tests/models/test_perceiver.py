"""Perceiver encoder: latent bottleneck, input masking, weight sharing, Fourier features."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.perceiver import PerceiverCrossBlock, fourier_features, perceiver

TINY = {"in_features": 5, "num_latents": 4, "latent_dim": 16, "depth": 1, "num_heads": 2}


def feats(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny(**kwargs):
    torch.manual_seed(0)
    return perceiver(**{**TINY, **kwargs}).eval()


def test_latents_summarise_any_input_length() -> None:
    model = tiny()
    assert model(feats(2, 50, 5)).shape == (2, 4, 16)
    assert model(feats(2, 7, 5)).shape == (2, 4, 16)


def test_classification_head_pools_latents() -> None:
    model = tiny(num_classes=3)
    x = feats(2, 9, 5)
    latents = model.forward_features(x)
    torch.testing.assert_close(model(x), model.get_classifier()(latents.mean(1)))
    assert model.forward_head(latents, pre_logits=True).shape == (2, 16)


def test_masked_inputs_are_ignored() -> None:
    model = tiny()
    x = feats(1, 6, 5)
    padded = torch.cat((x, feats(1, 4, 5, seed=1)), dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    torch.testing.assert_close(model(padded, attention_mask=mask), model(x))


def test_weight_sharing_across_repeats() -> None:
    shared, separate = tiny(num_repeats=3), tiny(num_repeats=3, share_weights=False)
    nodes = shared.nodes
    assert nodes["cross_2"] is nodes["cross_1"] and nodes["cross_1"] is not nodes["cross_0"]
    assert nodes["r2_block_0"] is nodes["r1_block_0"] is nodes["r0_block_0"]
    assert separate.nodes["cross_2"] is not separate.nodes["cross_1"]
    count = lambda m: sum(p.numel() for p in m.parameters())
    cross, block = count(nodes["cross_0"]), count(nodes["r0_block_0"])
    assert count(separate) - count(shared) == cross + 2 * block
    x = feats(2, 8, 5)
    shared.train()(x).sum().backward()
    assert all(p.grad is not None for p in shared.parameters())
    rebuilt = na.build(shared.spec, seed=0)
    assert rebuilt.nodes["cross_2"] is rebuilt.nodes["cross_1"] and count(rebuilt) == count(shared)


def test_fourier_features() -> None:
    f = fourier_features(5, 3, 8.0)
    assert f.shape == (5, 7)
    torch.testing.assert_close(f[:, 0], torch.linspace(-1, 1, 5))
    torch.testing.assert_close(f[:, 1:4] ** 2 + f[:, 4:] ** 2, torch.ones(5, 3))
    model = tiny(num_fourier_bands=3)
    assert model.nodes["cross_0"].context_norm.normalized_shape == (12,)
    assert model(feats(1, 6, 5)).shape == (1, 4, 16)


def test_cross_block_and_errors() -> None:
    block = PerceiverCrossBlock(16, 8, num_heads=2)
    assert block(feats(2, 3, 16), feats(2, 10, 8)).shape == (2, 3, 16)
    with pytest.raises(SpecError):
        tiny(num_latents=0)
    with pytest.raises(ValueError, match="expected inputs"):
        tiny()(feats(3, 5))
