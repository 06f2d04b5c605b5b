"""Highway and plain fully connected stacks."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.highway import highway_net


def test_highway_and_plain_layouts() -> None:
    hw = na.create_model("highway_net_50", device="meta")
    plain = na.create_model("plain_net_50", device="meta")
    assert sum(1 for n in hw.spec.nodes if n.block == "highway") == 50
    assert sum(1 for n in plain.spec.nodes if n.block == "linear") == 52
    assert hw.num_features == 64 and [i["node"] for i in hw.feature_info] == ["stem_act", "l49"]
    assert na.count_params(hw).total == 64 * 64 + 64 + 50 * 2 * (64 * 64 + 64) + 65 * 10


def test_gate_bias_and_carry() -> None:
    model = highway_net(
        in_features=6, depth=3, width=6, gate_bias=-30.0, num_classes=2, seed=0
    ).eval()
    assert model.nodes["l0"].gate.bias.eq(-30.0).all()
    h = torch.randn(4, 6)
    torch.testing.assert_close(model.nodes["l2"](h), h)  # the gate is shut: pure carry


def test_forward_and_dropout() -> None:
    model = highway_net(
        in_features=5,
        depth=2,
        width=4,
        num_classes=3,
        drop_rate=0.5,
        layer="plain",
        act_layer="tanh",
        seed=0,
    )
    assert model.eval()(torch.randn(2, 5)).shape == (2, 3)
    assert model.spec.node("l0").block == "tanh"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer": "dense"}, "layer='dense'"),
        ({"depth": 0}, "depth"),
        ({"in_features": 0}, "in_features=0"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(SpecError, match=match):
        highway_net(**kwargs, device="meta")
