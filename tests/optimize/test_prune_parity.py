"""Parity with Torch-Pruning 1.6: the same L1 criterion at the same ratio picks the same
channels, so the two pruned networks have equal parameter counts and equal outputs.

Torch-Pruning leaves depthwise filters out of a group's magnitude (they are in ours), so
with depthwise convolutions only the counts are compared."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.optimize.pruning import prune
from netarchitect.registry import model_example

tp = pytest.importorskip("torch_pruning")


def _torch_pruning(name: str):
    ex = model_example(name)
    peer = na.create_model(name, seed=0, **ex.kwargs).eval()
    pruner = tp.pruner.MagnitudePruner(
        peer, ex.inputs[0], importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5, ignored_layers=[peer.nodes["head"]],
    )
    pruner.step()
    return peer


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "wide_resnet50_2", "densenet121"])
def test_l1_channel_pruning_matches_torch_pruning(name: str) -> None:
    ex = model_example(name)
    model = na.create_model(name, seed=0, **ex.kwargs).eval()
    ours = prune(model, 0.5).model
    peer = _torch_pruning(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in peer.parameters())
    with torch.no_grad():
        torch.testing.assert_close(ours(*ex.inputs), peer(*ex.inputs))


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_depthwise_models_prune_to_the_same_size(name: str) -> None:
    ex = model_example(name)
    ours = prune(na.create_model(name, seed=0, **ex.kwargs), 0.5).model
    peer = _torch_pruning(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in peer.parameters())
