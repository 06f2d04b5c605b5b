"""Rational (safe Padé) activation: the init fit, the safe form, groups, stability, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import ShapeError, SpecError
from netarchitect.init import initialize, materialize
from netarchitect.layers.activation import get_act_layer
from netarchitect.layers.rational import Rational, fit_rational

TARGETS = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}
# Max |f - target| on [-3, 3] after the init fit (measured in float32 on 6001 points:
# relu 0.038, leaky_relu 0.037, gelu 7.7e-4, silu/tanh ~3e-6, identity ~5e-7).
TOLERANCE = {
    "relu": 0.05,
    "leaky_relu": 0.05,
    "gelu": 2e-3,
    "silu": 1e-4,
    "tanh": 1e-4,
    "identity": 1e-5,
}


def _safe_reference(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Textbook safe PAU ``P(x) / (1 + |b_1 x + ... + b_n x^n|)`` with explicit powers."""
    p = sum(a[j] * x**j for j in range(a.numel()))
    q = sum(b[k - 1] * x**k for k in range(1, b.numel() + 1))
    return p / (1 + q.abs())


@pytest.mark.parametrize("init", sorted(TARGETS))
def test_init_approximates_target_on_interval(init: str) -> None:
    act = Rational(init=init)
    x = torch.linspace(-3, 3, 6001)
    err = (act(x) - TARGETS[init](x)).abs().max().item()
    assert err < TOLERANCE[init], f"{init}: max error {err:.3g}"


def test_forward_is_the_safe_pau_formula() -> None:
    act = Rational(numerator_degree=3, denominator_degree=2, num_groups=1)
    with torch.no_grad():  # a denominator that changes sign inside the range: |.| matters
        act.numerator.copy_(torch.tensor([[0.1, 1.0, -0.5, 0.2]]))
        act.denominator.copy_(torch.tensor([[-0.8, 0.3]]))
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    act = act.double()
    assert_close(act(x), _safe_reference(x, act.numerator[0], act.denominator[0]))


def test_fit_handles_the_absolute_value() -> None:
    """The returned coefficients are scored in the safe form (not the linearised one)."""
    a, b = fit_rational("leaky_relu", 5, 4, (-3.0, 3.0))
    x = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    got = _safe_reference(x, torch.tensor(a), torch.tensor(b))
    assert (got - F.leaky_relu(x, 0.01)).abs().max() < 0.04
    assert fit_rational("leaky_relu", 5, 4, (-3.0, 3.0)) == (a, b)  # deterministic (cached)


def test_fit_over_a_custom_interval_and_degrees() -> None:
    act = Rational(numerator_degree=4, denominator_degree=3, init="silu", interval=[-6, 2])
    x = torch.linspace(-6, 2, 801)
    assert (act(x) - F.silu(x)).abs().max() < 5e-3  # measured 2.1e-3
    assert act.interval == (-6.0, 2.0)


def test_reset_parameters_restores_the_fit() -> None:
    act = Rational(init="gelu", num_groups=3)
    fitted = {k: v.clone() for k, v in act.state_dict().items()}
    assert act.numerator.shape == (3, 6) and act.denominator.shape == (3, 4)
    assert_close(act.numerator[1], act.numerator[0], rtol=0, atol=0)  # every group starts equal
    with torch.no_grad():
        for p in act.parameters():
            p.normal_()
    act.reset_parameters()
    for k, v in act.state_dict().items():
        assert_close(v, fitted[k], rtol=0, atol=0)


def test_meta_then_materialise_is_bit_identical() -> None:
    cpu = initialize(Rational(init="silu", num_groups=2), seed=3)
    meta = Rational(init="silu", num_groups=2, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    meta = materialize(meta, "cpu", seed=11)
    for key, value in cpu.state_dict().items():
        assert_close(meta.state_dict()[key], value, rtol=0, atol=0)
    wide = Rational(dtype=torch.float64)
    assert {p.dtype for p in wide.parameters()} == {torch.float64}
    assert wide(torch.zeros(3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("init", ["leaky_relu", "identity", "tanh"])
def test_gradients_reach_every_coefficient_and_the_input(init: str) -> None:
    act = Rational(init=init, num_groups=2)
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)).mul(2).requires_grad_()
    (act(x) * torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert x.grad is not None and bool(x.grad.isfinite().all()) and bool(x.grad.abs().sum() > 0)
    for name, p in act.named_parameters():
        assert p.grad is not None and bool(p.grad.isfinite().all()), name
        assert bool((p.grad != 0).all()), f"{init}: zero gradient in {name}: {p.grad}"


def test_gradcheck_in_float64_including_large_inputs() -> None:
    act = Rational(numerator_degree=3, denominator_degree=2).double()
    with torch.no_grad():
        act.numerator.copy_(torch.tensor([[0.1, 1.0, -0.5, 0.2]]))
        act.denominator.copy_(torch.tensor([[0.8, 0.3]]))
    x = torch.tensor([-50.0, -3.0, -1.5, -0.7, 0.3, 0.9, 1.2, 2.5, 40.0], dtype=torch.float64)
    x.requires_grad_()
    params = (act.numerator, act.denominator)

    def fn(inp, a, b):
        return torch.func.functional_call(act, {"numerator": a, "denominator": b}, (inp,))

    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_large_inputs_stay_finite(dtype: torch.dtype) -> None:
    act = Rational(init="gelu").to(dtype)
    big = {torch.float16: 6e4, torch.float32: 1e30, torch.bfloat16: 1e30}[dtype]
    x = torch.tensor([-big, -1e3, -20.0, -1.0, 0.0, 1.0, 20.0, 1e3, big], dtype=dtype)
    x.requires_grad_()
    y = act(x)
    y.sum().backward()
    assert bool(y.isfinite().all()), y
    assert bool(x.grad.isfinite().all()), x.grad
    assert all(bool(p.grad.isfinite().all()) for p in act.parameters())


def test_large_inputs_match_the_formula_where_it_is_representable() -> None:
    act = Rational(init="leaky_relu").double()
    x = torch.tensor([-1e4, -37.0, -1.0001, 1.0001, 5.0, 1e4], dtype=torch.float64)
    ref = _safe_reference(x, act.numerator[0], act.denominator[0])
    assert_close(act(x), ref)
    # float32 evaluates x^5 = 1e50 out of range in the naive form; ours stays close to float64
    assert_close(act.float()(x.float()), ref.float(), rtol=1e-5, atol=1e-5)


def test_groups_apply_to_the_right_channels() -> None:
    act = Rational(num_groups=3, init="silu")
    with torch.no_grad():  # make every group different
        act.numerator.add_(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)) * 0.1)
        act.denominator.add_(torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) * 0.1)
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(2))
    expected = torch.cat(
        [
            _safe_reference(x[:, 2 * g : 2 * g + 2], act.numerator[g], act.denominator[g])
            for g in range(3)
        ],
        dim=1,
    )
    assert_close(act(x), expected)
    # channels last (tokens): groups along the last dimension
    last = Rational(num_groups=3, channel_dim=-1)
    with torch.no_grad():
        last.numerator.copy_(act.numerator)
        last.denominator.copy_(act.denominator)
    tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    assert_close(last(tokens), expected.permute(0, 2, 3, 1))


def test_shared_coefficients_accept_any_shape() -> None:
    act = Rational()
    for shape in [(), (7,), (2, 3, 4, 5)]:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        assert act(x).shape == x.shape


def test_example_builds_and_runs() -> None:
    ex = Rational.example()
    act = Rational(**ex.kwargs)
    assert act(*ex.inputs).shape == ex.inputs[0].shape


def test_factory_and_repr() -> None:
    assert get_act_layer("rational") is Rational
    act = get_act_layer({"name": "rational", "init": "gelu"})(device="cpu")
    assert isinstance(act, Rational) and act.init == "gelu"
    text = repr(Rational(num_groups=2, init="tanh"))
    assert "numerator_degree=5" in text and "num_groups=2" in text and "init='tanh'" in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"numerator_degree": 0}, "numerator_degree=0"),
        ({"denominator_degree": 0}, "denominator_degree=0"),
        ({"denominator_degree": 1.5}, "denominator_degree=1.5"),
        ({"num_groups": 0}, "num_groups=0"),
        ({"init": "sigmoidal"}, "init='sigmoidal'"),
        ({"interval": (3, -3)}, "interval"),
        ({"interval": (0, float("inf"))}, "interval"),
        ({"interval": (1, 2, 3)}, "interval"),
        ({"channel_dim": 1.0}, "channel_dim=1.0"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        Rational(**kwargs)


def test_forward_rejects_channels_that_groups_do_not_divide() -> None:
    act = Rational(num_groups=4)
    with pytest.raises(ShapeError, match="num_groups=4 does not divide .*6"):
        act(torch.zeros(2, 6, 3))
    with pytest.raises(ShapeError, match="channel_dim=1"):
        act(torch.zeros(5))


def test_tiny_mlp_with_rational_overfits_a_regression() -> None:
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 32).unsqueeze(1)
    y = torch.sin(3 * x) + 0.5 * x
    model = nn.Sequential(nn.Linear(1, 8), Rational(num_groups=2, channel_dim=-1), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    assert all(torch.isfinite(torch.tensor(losses)))
