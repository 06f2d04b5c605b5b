"""Activations: closed forms vs torch.nn.functional, the learnable Swish, the factory."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import activation as A
from netarchitect.layers.basic import Identity

X = torch.linspace(-5, 5, 41)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("relu", F.relu),
        ("relu6", F.relu6),
        ("leaky_relu", lambda x: torch.where(x > 0, x, 0.01 * x)),
        ("gelu", lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))),
        (
            "gelu_tanh",
            lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        ),
        ("silu", lambda x: x * torch.sigmoid(x)),
        ("swish", lambda x: x * torch.sigmoid(x)),
        ("mish", lambda x: x * torch.tanh(torch.log1p(torch.exp(x)))),
        ("hardswish", lambda x: x * torch.clamp(x + 3, 0, 6) / 6),
        ("hard_sigmoid", lambda x: torch.clamp(x + 3, 0, 6) / 6),
        ("relu2", lambda x: torch.clamp(x, min=0) ** 2),
        ("squared_relu", lambda x: torch.clamp(x, min=0) ** 2),
        ("elu", lambda x: torch.where(x > 0, x, torch.exp(x) - 1)),
        ("tanh", torch.tanh),
        ("sigmoid", torch.sigmoid),
        ("prelu", lambda x: torch.where(x > 0, x, 0.25 * x)),
        ("learnable_swish", lambda x: x * torch.sigmoid(x)),
        ("identity", lambda x: x),
        ("none", lambda x: x),
        (None, lambda x: x),
    ],
)
def test_named_activations_closed_forms(name: str | None, reference) -> None:
    act = A.get_act_layer(name)(device="cpu", dtype=torch.float32)
    assert_close(act(X), reference(X), atol=1e-6, rtol=1e-5)


def test_factory_returns_registered_classes() -> None:
    assert A.get_act_layer("GELU") is A.GELU
    assert A.get_act_layer("Swish") is A.SiLU
    assert A.get_act_layer(None) is Identity
    assert A.get_act_layer(A.Mish) is A.Mish


def test_kwargs_pass_through() -> None:
    act = A.get_act_layer("leaky_relu")(negative_slope=0.2)
    assert_close(act(torch.tensor([-1.0, 2.0])), torch.tensor([-0.2, 2.0]))
    elu = A.get_act_layer("elu")(alpha=2.0)
    assert_close(elu(torch.tensor([-1.0])), 2.0 * (torch.exp(torch.tensor([-1.0])) - 1))
    assert A.GELU(approximate="tanh").approximate == "tanh"
    assert A.get_act_layer("relu")(inplace=True).inplace


def test_partial_and_foreign_classes() -> None:
    act = A.get_act_layer(functools.partial(A.LeakyReLU, negative_slope=0.5))()
    assert act.negative_slope == 0.5
    # torch classes do not take device/dtype: the factory drops them
    relu = A.get_act_layer(nn.ReLU)(device="meta", dtype=torch.float16)
    assert isinstance(relu, nn.ReLU)
    prelu = A.get_act_layer(nn.PReLU)(device="meta")
    assert prelu.weight.device.type == "meta"


def test_unknown_activation_suggests() -> None:
    with pytest.raises(ValueError, match=r"unknown activation layer 'gelo' \(did you mean 'gelu'"):
        A.get_act_layer("gelo")


def test_bad_arguments() -> None:
    with pytest.raises(SpecError, match="approximate='fast'"):
        A.GELU(approximate="fast")
    with pytest.raises(SpecError, match="num_channels=0"):
        A.LearnableSwish(num_channels=0)
    with pytest.raises(SpecError, match="num_parameters=0"):
        A.PReLU(num_parameters=0)


def test_parameter_free_activations_build_on_meta() -> None:
    for name in A.ACT_LAYERS:
        act = A.get_act_layer(name)(device="meta")
        act.reset_parameters()
        assert all(p.device.type == "meta" for p in act.parameters())


# --- learnable Swish -----------------------------------------------------------------------------


def test_learnable_swish_equals_silu_at_beta_one_and_gets_gradient() -> None:
    act = A.LearnableSwish()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert_close(act(x), F.silu(x))
    act(x).sum().backward()
    expected = (x * x * torch.sigmoid(x) * (1 - torch.sigmoid(x))).sum()  # d/dβ of x·σ(βx)
    assert_close(act.beta.grad, expected)


def test_learnable_swish_per_channel() -> None:
    act = A.LearnableSwish(num_channels=3, beta_init=2.0)
    with torch.no_grad():
        act.beta.copy_(torch.tensor([0.5, 1.0, 4.0]))
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    beta = torch.tensor([0.5, 1.0, 4.0]).view(1, 3, 1, 1)
    assert_close(act(x), x * torch.sigmoid(beta * x))
    act(x).square().sum().backward()
    assert act.beta.grad is not None and bool((act.beta.grad != 0).all())
    act.reset_parameters()
    assert_close(act.beta.detach(), torch.full((3,), 2.0))
    # channels-last usage (tokens)
    last = A.LearnableSwish(num_channels=5, channel_dim=-1)
    assert last(torch.randn(2, 4, 5)).shape == (2, 4, 5)
    assert "channel_dim=-1" in repr(last)


def test_learnable_swish_large_beta_approaches_relu() -> None:
    act = A.LearnableSwish(beta_init=200.0)
    assert_close(act(X), F.relu(X), atol=1e-3, rtol=0)
