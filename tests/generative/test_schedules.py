"""Noise schedules: constructors, invariants, bad betas, and the forward process q(x_t|x_0)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netarchitect.errors import NetArchitectError
from netarchitect.generative import (
    GenerativeError,
    NoiseSchedule,
    get_schedule,
    q_mean_var,
    q_sample,
)
from netarchitect.generative.schedules import extract


def _ok(s: NoiseSchedule) -> None:
    ac = s.alphas_cumprod
    assert ac.dtype == s.betas.dtype == s.alphas.dtype == torch.float64
    assert ((ac > 0) & (ac < 1)).all()
    assert (ac[1:] < ac[:-1]).all()
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(ac, torch.cumprod(s.alphas, 0))


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("T", [1, 2, 10, 1000, 4000])
def test_named_schedules_are_valid(name: str, T: int) -> None:
    s = get_schedule(name, T)
    assert s.num_steps == len(s) == T
    _ok(s)


def test_linear_endpoints_and_repr() -> None:
    s = NoiseSchedule.linear(1000)
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)
    assert "T=1000" in repr(s)
    assert float(s.alphas_cumprod[-1]) == pytest.approx(4.0358e-05, rel=1e-3)  # DDPM's ᾱ_T


def test_cosine_follows_the_closed_form() -> None:
    T, s = 1000, 0.008
    sch = NoiseSchedule.cosine(T, s=s)

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    # before the max_beta cap bites, ᾱ_t = f(t+1)/f(0)
    for t in (0, 10, 500, 900):
        assert float(sch.alphas_cumprod[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert float(sch.betas[-1]) == 0.999  # capped


def test_scaled_linear_is_squared_linear_in_sqrt() -> None:
    s = NoiseSchedule.scaled_linear(10, 0.01, 0.04)
    torch.testing.assert_close(s.betas.sqrt(), torch.linspace(0.1, 0.2, 10, dtype=torch.float64))


def test_from_betas_and_get_schedule_passthrough() -> None:
    s = NoiseSchedule.from_betas([0.1, 0.2, 0.3])
    assert get_schedule(s) is s
    assert get_schedule([0.1, 0.2, 0.3]).betas.tolist() == pytest.approx([0.1, 0.2, 0.3])
    torch.testing.assert_close(s.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64))
    src = torch.tensor([0.1, 0.2])
    s2 = NoiseSchedule.from_betas(src)
    src[0] = 0.5  # a copy: the schedule is immutable
    assert float(s2.betas[0]) == pytest.approx(0.1)
    with pytest.raises(AttributeError):
        s2.betas = src  # type: ignore[misc]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(1e-6, 0.999, allow_nan=False), min_size=1, max_size=300))
def test_any_betas_in_open_interval_give_decreasing_alphas_cumprod(betas: list[float]) -> None:
    try:
        s = NoiseSchedule.from_betas(betas)
    except GenerativeError as e:  # only possible by float64 underflow of the product
        assert "alphas_cumprod" in str(e)
        return
    _ok(s)


@pytest.mark.parametrize(
    ("betas", "match"),
    [
        ([0.1, 0.0], r"betas\[1\]: 0.0 is not in \(0, 1\)"),
        ([1.0], r"betas\[0\]: 1.0"),
        ([0.1, -0.2], r"betas\[1\]"),
        ([0.1, float("nan")], "non-finite"),
        ([], "non-empty"),
        ([[0.1, 0.2]], "1-D"),
        (["a"], "not a sequence of numbers"),
        ([0.5, 1e-18], "not strictly decreasing .* at step 1"),  # rounds ᾱ to equal
        ([0.999] * 200, "not strictly decreasing"),  # underflows to 0
    ],
)
def test_bad_betas_name_the_argument(betas: list, match: str) -> None:
    with pytest.raises(GenerativeError, match=match) as info:
        NoiseSchedule.from_betas(betas)
    assert isinstance(info.value, NetArchitectError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: NoiseSchedule.linear(0), "T: 0"),
        (lambda: NoiseSchedule.linear(True), "T: True"),
        (lambda: NoiseSchedule.scaled_linear(-1), "T: -1"),
        (lambda: NoiseSchedule.cosine(0), "T: 0"),
        (lambda: NoiseSchedule.cosine(10, max_beta=1.0), "max_beta"),
        (lambda: NoiseSchedule.cosine(10, s=-0.1), "s: -0.1"),
        (lambda: NoiseSchedule.linear(10, 0.1, 1.5), r"betas\[\d+\]"),
        (lambda: get_schedule("cosin"), "did you mean 'cosine'"),
    ],
)
def test_bad_constructor_arguments(call, match: str) -> None:
    with pytest.raises(GenerativeError, match=match):
        call()


# ---------------------------------------------------------------- q(x_t | x_0)


def test_extract_broadcasts_and_casts() -> None:
    s = NoiseSchedule.linear(10)
    like = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    v = extract(s.alphas_cumprod, torch.tensor([0, 5, 9]), like)
    assert v.shape == (3, 1, 1, 1) and v.dtype == torch.float32
    assert extract(s.alphas_cumprod, torch.tensor(5), like).shape == (1, 1, 1, 1)


def test_q_mean_var_closed_form_equals_iterated_one_step_noising() -> None:
    """Chaining q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t) from x_0 gives mean m_t x_0 and
    variance v_t with m_t = √α_t m_{t-1}, v_t = α_t v_{t-1} + β_t: the closed form's."""
    for s in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000), NoiseSchedule.from_betas([0.3] * 7)):
        x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        m, v = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        for t in range(s.num_steps):
            m, v = s.alphas[t].sqrt() * m, s.alphas[t] * v + s.betas[t]
            if t % 97 == 0 or t == s.num_steps - 1:
                mean, var = q_mean_var(s, x0, torch.full((4,), t))
                torch.testing.assert_close(mean, m * x0, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(var.expand(4, 1), v.expand(4, 1), rtol=1e-12, atol=1e-12)


def test_q_sample_matches_iterated_noising_in_distribution() -> None:
    """Monte Carlo: 20,000 chains of one-step noising to t=50 vs q_sample's closed form."""
    s = NoiseSchedule.from_betas(torch.linspace(0.01, 0.1, 50))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    for t in range(50):
        x = s.alphas[t].sqrt() * x + s.betas[t].sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    xt = q_sample(s, x0, torch.full((20000,), 49), torch.randn(x.shape, generator=g, dtype=x.dtype))
    mean, var = q_mean_var(s, x0[:1], torch.tensor([49]))
    for sample in (x, xt):
        assert float(sample.mean()) == pytest.approx(float(mean), abs=0.03)
        assert float(sample.var()) == pytest.approx(float(var), rel=0.05)


def test_q_sample_given_noise_and_dtype() -> None:
    s = NoiseSchedule.linear(100)
    x0, eps, t = torch.randn(5, 2), torch.randn(5, 2), torch.tensor([0, 1, 50, 98, 99])
    xt = q_sample(s, x0, t, eps)
    ac = s.alphas_cumprod[t].float()[:, None]
    torch.testing.assert_close(xt, ac.sqrt() * x0 + (1 - ac).sqrt() * eps)
    assert xt.dtype == torch.float32
    torch.manual_seed(0)
    assert q_sample(s, x0, t).shape == (5, 2)


@pytest.mark.parametrize("t", [[-1, 0], [0, 100]])
def test_q_sample_refuses_timesteps_out_of_range(t: list[int]) -> None:
    s = NoiseSchedule.linear(100)
    with pytest.raises(GenerativeError, match=r"t: timesteps must lie in \[0, 100\)"):
        q_sample(s, torch.zeros(2, 2), torch.tensor(t))
