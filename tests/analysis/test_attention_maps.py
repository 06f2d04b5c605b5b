"""attention_maps on registered models (ViT, GPT-2, BERT, LLaMA) and attention rollout against a
hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import netarchitect as na
from netarchitect.analysis.attention_maps import (
    attention_maps,
    attention_modules,
    attention_rollout,
    recording_attention,
)
from netarchitect.analysis.attribution import AttributionError
from netarchitect.layers.attention import MultiHeadAttention


def _vit() -> nn.Module:
    return na.create_model("vit_ti_16", img_size=16, patch_size=4, embed_dim=16, num_heads=2,
                           depth=2, num_classes=3, seed=0).eval()


def _images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_vit_maps_are_softmax_of_block_logits():
    model = _vit()
    x = _images()
    inputs: dict[str, torch.Tensor] = {}
    mods = attention_modules(model)
    handles = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0]))
               for n, m in mods.items()]
    before = model(x)
    for h in handles:
        h.remove()
    maps = attention_maps(model, x)
    assert list(maps) == list(mods)
    for name, attn in maps.items():
        m, h = mods[name], inputs[name]
        assert attn.shape == (2, 2, 17, 17)
        q = (h @ m.q_proj.weight.T + m.q_proj.bias).view(2, 17, 2, 8).transpose(1, 2)
        k = (h @ m.k_proj.weight.T + m.k_proj.bias).view(2, 17, 2, 8).transpose(1, 2)
        assert_close(attn, (q @ k.transpose(-2, -1) / 8**0.5).softmax(-1))
        assert_close(attn.sum(-1), torch.ones(2, 2, 17))
    assert torch.equal(model(x), before)  # recording leaves the outputs and the model alone
    assert all("attention_store" not in m.__dict__ for m in mods.values())


@pytest.mark.parametrize(
    "name,kwargs",
    [("gpt2-tiny", {"vocab_size": 50, "dim": 16}),
     ("llama-tiny", {"vocab_size": 50, "dim": 24, "depth": 2, "num_heads": 4, "num_kv_heads": 2,
                     "hidden_dim": 32})],
)
def test_causal_language_models_respect_the_causal_mask(name, kwargs):
    model = na.create_model(name, seed=0, **kwargs).eval()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    maps = attention_maps(model, ids)
    assert len(maps) == 2
    upper = torch.ones(6, 6, dtype=torch.bool).triu(1)
    for attn in maps.values():
        assert attn.shape[-2:] == (6, 6)
        assert attn[..., upper].abs().max() == 0
        assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))


def test_bert_padding_keys_get_no_attention():
    model = na.create_model("bert-tiny", vocab_size=50, dim=16, num_heads=2, seed=0).eval()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    maps = attention_maps(model, {"input_ids": ids, "attention_mask": mask})
    for attn in maps.values():
        assert attn[1, :, :, 4:].abs().max() == 0
        assert attn[0, :, :, 4:].min() > 0


def test_repeated_calls_get_numbered_keys():
    attn = MultiHeadAttention(8, 2)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = attn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(self.attn(x))

    maps = attention_maps(Twice(), (torch.randn(1, 3, 8),))
    assert list(maps) == ["attn", "attn#1"]


def test_recording_restores_a_user_store_and_refuses_models_without_attention():
    m = MultiHeadAttention(8, 2)
    mine: list[torch.Tensor] = []
    m.attention_store = mine
    with recording_attention(m) as log:
        m(torch.randn(1, 3, 8))
    assert len(log) == 1 and m.attention_store is mine and not mine
    with pytest.raises(AttributionError, match="no attention modules"):
        attention_maps(nn.Linear(2, 2), torch.randn(1, 2))


def _rollout_by_hand(maps, fusion="mean", discard=0.0):
    maps = [a.double().numpy() for a in maps]
    B, _, T, _ = maps[0].shape
    out = []
    for b in range(B):
        r = np.eye(T)
        for a in maps:
            f = getattr(a[b], fusion)(axis=0)
            flat = f.flatten()
            k = int(flat.size * discard)
            if k:
                idx = np.argsort(flat, kind="stable")[:k]
                idx = idx[idx != 0]
                flat[idx] = 0
            f = (flat.reshape(T, T) + np.eye(T)) / 2
            f = f / f.sum(-1, keepdims=True)
            r = f @ r
        out.append(r)
    return np.stack(out)


def _random_maps(layers=3, b=2, h=3, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, t, generator=g).softmax(-1) for _ in range(layers)]


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5])
def test_rollout_matches_hand_computation(fusion, discard):
    maps = _random_maps()
    got = attention_rollout(maps, head_fusion=fusion, discard_ratio=discard)
    row = _rollout_by_hand(maps, fusion, discard)[:, 0, 1:]
    want = row / row.max(1, keepdims=True)
    assert got.shape == (2, 2, 2)
    assert_close(got, torch.tensor(want, dtype=torch.float32).view(2, 2, 2))


def test_rollout_without_class_token_uses_the_mean_row():
    maps = _random_maps(t=6)
    got = attention_rollout(dict(enumerate(maps)), num_prefix_tokens=0, grid=(2, 3))
    row = _rollout_by_hand(maps).mean(1)
    want = row / row.max(1, keepdims=True)
    assert_close(got, torch.tensor(want, dtype=torch.float32).view(2, 2, 3))


def test_rollout_on_a_vit():
    model = _vit()
    mask = attention_rollout(attention_maps(model, _images()), discard_ratio=0.9)
    assert mask.shape == (2, 4, 4)
    assert_close(mask.flatten(1).amax(1), torch.ones(2))


@pytest.mark.parametrize(
    "maps,kwargs,match",
    [(_random_maps(), {"head_fusion": "median"}, "head_fusion"),
     (_random_maps(), {"discard_ratio": 1.0}, "discard_ratio"),
     ([], {}, "at least one"),
     ([torch.rand(1, 2, 3, 4)], {}, "self-attention"),
     (_random_maps(t=6), {}, "grid"),
     (_random_maps(), {"num_prefix_tokens": -1}, "grid")],
)
def test_rollout_bad_requests(maps, kwargs, match):
    with pytest.raises(AttributionError, match=match):
        attention_rollout(maps, **kwargs)


def _meta_maps(name: str) -> tuple[dict[str, MultiHeadAttention], dict[str, torch.Tensor]]:
    from netarchitect.network import sample_inputs

    model = na.create_model(name, device="meta").eval()
    inputs = sample_inputs(model.spec, batch=1, device="meta")
    if "t" in getattr(model.spec, "context", ()):  # diffusion: model(x_t, t)
        inputs = (*inputs, torch.zeros(1, dtype=torch.long, device="meta"))
    return attention_modules(model), attention_maps(model, inputs)


@pytest.mark.parametrize(
    "name",
    ["bert-tiny", "gpt2-tiny", "perceiver", "coatnet_lite_nano",
     pytest.param("conformer-s", marks=pytest.mark.slow),
     pytest.param("t5-small", marks=pytest.mark.slow),
     pytest.param("diffusion_unet_tiny", marks=pytest.mark.slow)],
)
def test_every_attention_module_of_registered_models_is_read(name):
    """On the meta device (shapes only): one (B, heads, Lq, Lk) map per attention module."""
    modules, maps = _meta_maps(name)
    assert modules and set(maps) >= set(modules)
    for key, attn in maps.items():
        assert attn.dim() == 4 and attn.shape[1] == modules[key.split("#")[0]].num_heads
