"""Less common paths of surgery: meta models, nested matches, odd layers, refusals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from torch import nn

from netarchitect import build
from netarchitect.errors import ShapeError, SpecError
from netarchitect.extend import (
    insert_after,
    remove_layers,
    replace_head,
    swap_modules,
    trainable_summary,
)
from netarchitect.extend._edit import carry_state
from netarchitect.models.vit import vit


def tiny_vit(**kw) -> nn.Module:
    return vit(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32, num_classes=10,
               **kw)


def test_surgery_on_a_meta_model_allocates_nothing() -> None:
    model = tiny_vit(device="meta")
    new = replace_head(model, 3)
    assert new.nodes.head.weight.is_meta and new.num_classes == 3


def test_carry_state_refuses_tensors_that_do_not_fit() -> None:
    with pytest.raises(ShapeError, match=r"'weight': the original \(3, 2\) does not fit"):
        carry_state(nn.Linear(2, 3), nn.Linear(2, 4))
    with pytest.raises(ShapeError, match="no counterpart"):
        carry_state(nn.Linear(2, 3, bias=False), nn.Linear(2, 3))


def test_inserted_ids_are_unique_and_vit_blocks_join_stages_and_reductions() -> None:
    model = tiny_vit(seed=0)
    once = insert_after(model, "s1_b0", "identity")
    twice = insert_after(once, "s1_b0", "identity")
    thrice = insert_after(twice, "s1_b0", "identity")
    assert {"s1_b0_identity_1", "s1_b0_identity_2"} <= {n.id for n in thrice.spec.nodes}
    block = insert_after(model, "s1_b0", {"block": "vit_block",
                                          "params": dict(model.spec.node("s1_b0").params)})
    roles = block.spec.roles
    assert roles["stages"][1] == "s1_b0_vit_block"
    assert roles["reductions"]["s1_b0_vit_block"] == 8
    assert block.feature_info[1]["reduction"] == 8


def test_swap_refuses_layers_a_spec_cannot_name() -> None:
    with pytest.raises(SpecError, match="built inside blocks without a norm_layer argument"):
        swap_modules(tiny_vit(seed=0), "layernorm", "rmsnorm", weights="init")


def test_swap_skips_none_layers_in_specs() -> None:
    model = build({"inputs": {"x": [3, 8, 8]}, "nodes": [
        {"id": "c", "block": "conv_norm_act", "params": {"out_channels": 4, "norm_layer": None}},
        {"id": "n", "block": "batchnorm2d"}]}, seed=0)
    new = swap_modules(model, "batchnorm2d", "groupnorm")
    assert new.spec.node("n").block == "groupnorm"
    assert new.spec.node("c").params["norm_layer"] is None


def test_swap_plain_module_odds() -> None:
    nested = nn.Sequential(nn.Sequential(nn.Sequential(nn.ReLU())), nn.ReLU())
    new = swap_modules(nested, nn.Sequential, lambda old: nn.Tanh())
    assert isinstance(new[0], nn.Tanh) and isinstance(new[1], nn.ReLU)
    with pytest.raises(SpecError, match="no LayerNorm/GELU module to swap"):
        swap_modules(nested, (nn.LayerNorm, nn.GELU), "silu")
    with pytest.raises(SpecError, match="`to` must be a layer name"):
        swap_modules(nested, nn.ReLU, 3)
    with pytest.raises(SpecError, match="cannot build 'layernorm' for"):
        swap_modules(nn.Sequential(nn.LayerNorm(4)), nn.LayerNorm, {"name": "layernorm", "foo": 1})

    class Affine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.full((5,), 2.0))

        def forward(self, x):
            return x * self.weight

    swapped = swap_modules(nn.Sequential(Affine()), Affine, "layernorm")
    assert swapped[0].normalized_shape == (5,) and torch.all(swapped[0].weight == 2)


def test_replace_head_in_a_nested_transformers_style_classifier() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(num_labels=2)
            self.body = nn.Linear(4, 4)
            self.classifier = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))

    new = replace_head(Model(), 6)
    assert new.classifier[2].out_features == 6 and new.config.num_labels == 6


def test_remove_checks_norm_neighbours() -> None:
    seq = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6), nn.LayerNorm(6))
    with pytest.raises(ShapeError, match="'0' gives 8 features but '2' takes 6"):
        remove_layers(seq, "1")
    cnn = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6))
    with pytest.raises(ShapeError, match="'0' gives 8 features but '2' takes 6"):
        remove_layers(cnn, "1")


def test_summary_prints_with_rich() -> None:
    console = Console(record=True, width=100)
    console.print(trainable_summary(nn.Linear(3, 2)))
    assert "trainable parameters" in console.export_text()
