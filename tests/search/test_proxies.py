"""Zero-cost proxies: SynFlow and NASWOT against closed forms, ranking and the proxy filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netarchitect import NetArchitectError, build
from netarchitect.search import naswot, synflow
from netarchitect.search.proxies import ProxyFilter, rank, score


def linear_net(width: int, bias: bool = False):
    return build(
        {
            "inputs": {"x": [3]},
            "nodes": [
                {"id": "a", "block": "linear", "params": {"out_features": width, "bias": bias}},
                {"id": "b", "block": "linear", "params": {"out_features": 2, "bias": bias}},
            ],
        },
        seed=0,
    )


def test_synflow_of_a_two_layer_linear_net_is_twice_the_synaptic_flow():
    model = linear_net(5)
    w1, w2 = model.nodes["a"].weight.detach().double(), model.nodes["b"].weight.detach().double()
    flow = float(
        torch.ones(2, dtype=torch.float64)
        @ w2.abs()
        @ w1.abs()
        @ torch.ones(3, dtype=torch.float64)
    )
    assert synflow(model, (3,)) == pytest.approx(
        2 * flow, rel=1e-9
    )  # each layer contributes R (Euler)
    assert (model.nodes["a"].weight < 0).any()  # the model itself is untouched
    assert model.nodes["a"].weight.grad is None


def test_naswot_matches_the_kernel_definition():
    model = build({"inputs": {"x": [6]}, "nodes": [{"id": "act", "block": "relu"}]})
    x = torch.tensor([[1, -1, 1, -1, 1, 1], [1, 1, -1, -1, 1, -1], [-1, 1, 1, 1, -1, -1.0]])
    c = (x.numpy() > 0).astype(float)
    k = c @ c.T + (1 - c) @ (1 - c).T
    assert naswot(model, x) == pytest.approx(np.linalg.slogdet(k + np.eye(3))[1])
    no_units = build(
        {
            "inputs": {"x": [6]},
            "nodes": [{"id": "fc", "block": "linear", "params": {"out_features": 2}}],
        }
    )
    assert naswot(no_units, x) == float("-inf")
    model.eval()
    naswot(model, x)
    assert not model.training  # its mode is restored


def test_score_and_rank():
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    small, large = linear_net(2), linear_net(64)
    assert score("synflow", large, x) > score("synflow", small, x)
    assert rank([small, large], "synflow", x) == [1, 0]
    relu_net = build(
        {
            "inputs": {"x": [3]},
            "nodes": [
                {"id": "a", "block": "linear", "params": {"out_features": 16}},
                {"id": "r", "block": "relu"},
                {"id": "b", "block": "linear", "params": {"out_features": 2}},
            ],
        },
        seed=0,
    )
    assert np.isfinite(score("naswot", relu_net, x))
    with pytest.raises(NetArchitectError, match="unknown proxy 'grasp'"):
        score("grasp", small, x)


def test_proxy_filter_keeps_the_top_fraction_after_warmup():
    keep_half = ProxyFilter(keep=0.5, warmup=3)
    assert keep_half.accept(-100.0, [1.0, 2.0])  # warm-up: always kept
    previous = [float(v) for v in range(1, 11)]
    assert keep_half.accept(6.0, previous) and not keep_half.accept(5.0, previous)
    assert ProxyFilter(keep=1.0).accept(-1e9, previous)
    assert not ProxyFilter(keep=0.1, warmup=0).accept(9.0, previous)
    with pytest.raises(NetArchitectError, match="keep fraction"):
        ProxyFilter(keep=0.0)
