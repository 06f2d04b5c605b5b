"""DDPM and DDIM: timestep spacings, η, exactness against an analytic denoiser, guidance,
clipping, exact FLOP counts and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from netarchitect.analysis import count_flops
from netarchitect.generative import (
    GenerativeError,
    NoiseSchedule,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    guided_prediction,
    v_target,
    x0_to_eps,
)


class GaussianOracle(nn.Module):
    """The exact ε-predictor for data N(mu, s²) per coordinate:
    E[ε | x_t] = √(1-ᾱ) (x_t - √ᾱ mu) / (ᾱ s² + 1 - ᾱ)."""

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float, prediction: str = "eps"):
        super().__init__()
        self.ac, self.mu, self.s, self.prediction = schedule.alphas_cumprod, mu, s, prediction
        self.schedule = schedule
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        a = self.ac[t].to(x.dtype)[:, None]
        eps = (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if self.prediction == "x0":
            return x0
        if self.prediction == "v":
            return v_target(self.schedule, x0, t, eps)
        return eps


# ------------------------------------------------------------------ timesteps


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        ("leading", [980, 960, 940]),
        ("trailing", [999, 979, 959]),
        ("linspace", [999, 979, 958]),
        ("quadratic", [999, 959, 919]),
    ],
)
def test_ddim_timesteps_reference_values(spacing: str, expected: list[int]) -> None:
    ts = ddim_timesteps(1000, 50, spacing)
    assert ts.dtype == torch.int64 and len(ts) == 50
    assert ts[:3].tolist() == expected
    assert int(ts[-1]) == {"leading": 0, "trailing": 19, "linspace": 0, "quadratic": 0}[spacing]


def test_quadratic_spacing_is_dense_near_clean_data() -> None:
    """``round(999 (i/49)²)`` ascending is 0, 0, 2, 4, 7: the repeated 0 moves up to 1."""
    ts = ddim_timesteps(1000, 50, "quadratic")
    assert ts[-5:].tolist() == [7, 4, 2, 1, 0]
    gaps = (ts[:-1] - ts[1:]).tolist()
    assert gaps == sorted(gaps, reverse=True)  # gaps shrink towards t = 0


def test_ddim_timesteps_small_cases_and_offset() -> None:
    assert ddim_timesteps(10, 1, "trailing").tolist() == [9]
    assert ddim_timesteps(10, 1, "linspace").tolist() == [9]
    assert ddim_timesteps(10, 1, "leading").tolist() == [0]
    assert ddim_timesteps(10, 3, "trailing").tolist() == [9, 6, 2]
    assert ddim_timesteps(10, 3, "quadratic").tolist() == [9, 2, 0]
    assert ddim_timesteps(10, 1, "quadratic").tolist() == [9]
    assert ddim_timesteps(10, 3, "leading", offset=1).tolist() == [7, 4, 1]
    for spacing in ("leading", "trailing", "linspace", "quadratic"):
        assert ddim_timesteps(7, 7, spacing).tolist() == list(range(6, -1, -1))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_ddim_timesteps_properties(T: int, data: st.DataObject) -> None:
    steps = data.draw(st.integers(1, T))
    for spacing in ("leading", "trailing", "linspace", "quadratic"):
        ts = ddim_timesteps(T, steps, spacing)
        assert len(ts) == steps
        assert (ts[1:] < ts[:-1]).all(), spacing  # strictly decreasing
        assert 0 <= int(ts[-1]) and int(ts[0]) < T
        first, last = int(ts[0]), int(ts[-1])
        if spacing == "leading":
            assert (first, last) == ((steps - 1) * (T // steps), 0)
        elif spacing == "trailing":
            assert first == T - 1 and last == round(T / steps) - 1
        else:
            assert first == T - 1 and last == (0 if steps > 1 else T - 1)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1000, 0), r"steps: 0 is not in \[1, 1000\]"),
        ((1000, 1001), r"steps: 1001 is not in \[1, 1000\]"),
        ((1000, 2.5), "steps: 2.5 is not an integer"),
        ((0, 1), "T: 0"),
        ((True, 1), "T: True"),
        ((1000, 50, "uniform"), "spacing: 'uniform'"),
        ((1000, 50, "trailing", 1), "offset: 1 only applies to spacing='leading'"),
        ((1000, 1000, "leading", 1), "offset: 1 puts the first timestep at 1000"),
        ((1000, 10, "leading", -1), "offset: -1"),
    ],
)
def test_ddim_timesteps_bad_input(args: tuple, match: str) -> None:
    with pytest.raises(GenerativeError, match=match):
        ddim_timesteps(*args)


# ------------------------------------------------------------------ single steps


def test_ddim_eta1_full_steps_is_the_ddpm_step() -> None:
    """η = 1 from t to t-1: σ² equals DDPM's posterior variance β̃_t and the mean its
    posterior mean, so given the same noise the two steps agree."""
    s = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x, out, z = (torch.randn(8, 3, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (999, 500, 10, 1, 0):
        a, _ = ddim_step(s, x, t, t - 1, out, eta=1.0, noise=z)
        b, _ = ddpm_step(s, x, t, out, noise=z)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the variance itself: zero-output model, mean subtracted
    t = 300
    mean, _ = ddim_step(s, x, t, t - 1, out, eta=1.0, noise=torch.zeros_like(x))
    with_noise, _ = ddim_step(s, x, t, t - 1, out, eta=1.0, noise=torch.ones_like(x))
    ac = s.alphas_cumprod
    posterior_var = s.betas[t] * (1 - ac[t - 1]) / (1 - ac[t])
    torch.testing.assert_close((with_noise - mean)[0, 0] ** 2, posterior_var)


def test_ddim_eta0_step_is_deterministic_and_draws_nothing() -> None:
    s = NoiseSchedule.cosine(100)
    x, out = torch.randn(4, 2), torch.randn(4, 2)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    a, _ = ddim_step(s, x, 50, 40, out, generator=g)
    assert torch.equal(g.get_state(), state)
    b, _ = ddim_step(s, x, 50, 40, out)
    assert torch.equal(a, b)
    final, x0_last = ddim_step(s, x, 5, -1, out)  # the last step lands on x̂₀
    torch.testing.assert_close(final, x0_last)


def test_clip_recomputes_eps_from_the_clamped_x0() -> None:
    s = NoiseSchedule.linear(100)
    x = torch.full((2, 2), 3.0)
    out = torch.full((2, 2), 5.0)  # x0-prediction far outside [-1, 1]
    x_prev, x0 = ddim_step(s, x, 50, 30, out, prediction="x0", clip=(-1.0, 1.0))
    assert (x0 == 1.0).all()
    eps = x0_to_eps(s, x, 50, x0)
    a = s.alphas_cumprod[30].float()
    torch.testing.assert_close(x_prev, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    _, x0 = ddpm_step(s, x, 50, out, prediction="x0", clip=(-1.0, 1.0))
    assert (x0 == 1.0).all()


# ------------------------------------------------------------------ sampling loops


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_samplers_recover_gaussian_data_with_the_exact_denoiser(prediction: str) -> None:
    """With the exact denoiser of N(2, 0.5²) data, DDPM and full-step DDIM (η = 0: the
    probability-flow ODE) reproduce the data's mean and std."""
    s = NoiseSchedule.linear(1000)
    oracle = GaussianOracle(s, mu=2.0, s=0.5, prediction=prediction)
    n = 20000
    for run in (
        lambda g: ddpm_sample(oracle, s, (n, 1), prediction=prediction, generator=g),
        lambda g: ddim_sample(oracle, s, (n, 1), steps=1000, prediction=prediction, generator=g),
    ):
        x = run(torch.Generator().manual_seed(0))
        assert float(x.mean()) == pytest.approx(2.0, abs=0.02)
        assert float(x.std()) == pytest.approx(0.5, rel=0.015)


def test_few_step_ddim_shrinks_the_spread() -> None:
    """Fewer steps end on the posterior mean E[x₀ | x_t] of a noisier t: the spread shrinks
    (a property of DDIM, not a bug: 50 steps give ≈ 0.474 here, 10 steps less)."""
    s = NoiseSchedule.linear(1000)
    oracle = GaussianOracle(s, mu=2.0, s=0.5)
    stds = [float(ddim_sample(oracle, s, (20000, 1), steps=k,
                              generator=torch.Generator().manual_seed(0)).std())
            for k in (10, 50, 1000)]
    assert stds[0] < stds[1] < stds[2]
    assert stds[1] == pytest.approx(0.474, abs=0.01)


def test_quadratic_spacing_keeps_the_spread_of_sharp_data() -> None:
    """Exact denoiser of N(2, 0.02²) (sharp, like the ring's clusters), 50 DDIM steps: the
    last coarse step ends on a posterior mean that shrinks the spread; ``quadratic`` spacing
    (short steps near t = 0) keeps most of it (≈ 0.017 vs ≈ 0.012 linspace, 0.005 trailing)."""
    s = NoiseSchedule.linear(1000)
    oracle = GaussianOracle(s, mu=2.0, s=0.02)
    std = {sp: float(ddim_sample(oracle, s, (20000, 1), steps=50, spacing=sp,
                                 generator=torch.Generator().manual_seed(0)).std())
           for sp in ("trailing", "linspace", "quadratic")}
    assert std["trailing"] < std["linspace"] < std["quadratic"] < 0.02
    assert std["quadratic"] == pytest.approx(0.0169, abs=0.001)


def test_ddim_eta1_with_every_step_equals_ddpm() -> None:
    s = NoiseSchedule.linear(50, 1e-3, 0.1)
    oracle = GaussianOracle(s, mu=-1.0, s=0.3)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(9))
    a = ddpm_sample(oracle, s, x_T=x_T, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(oracle, s, x_T=x_T, steps=50, eta=1.0,
                    generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_ddim_eta0_is_deterministic_given_x_T() -> None:
    s = NoiseSchedule.cosine(100)
    oracle = GaussianOracle(s, mu=0.5, s=0.2)
    x_T = torch.randn(8, 2)
    a = ddim_sample(oracle, s, x_T=x_T, steps=10, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(oracle, s, x_T=x_T, steps=10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = ddim_sample(oracle, s, (8, 2), steps=10, generator=torch.Generator().manual_seed(3))
    d = ddim_sample(oracle, s, (8, 2), steps=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(c, d) and not torch.equal(a, c)
    e = ddim_sample(oracle, s, x_T=x_T, steps=10, eta=0.5, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, e)


@pytest.mark.parametrize("steps", [1, 7, 100])
def test_sampling_calls_the_model_once_per_step(steps: int) -> None:
    s = NoiseSchedule.linear(100)
    oracle = GaussianOracle(s, 0.0, 1.0)
    ddim_sample(oracle, s, (2, 2), steps=steps)
    assert oracle.calls == steps
    oracle.calls = 0
    ddpm_sample(oracle, s, (2, 2))
    assert oracle.calls == 100


def test_no_silent_clipping_by_default() -> None:
    """An x₀-predictor that always says 5: the sample is 5, not 1 (diffusers clips to 1)."""

    class Five(nn.Module):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return torch.full_like(x, 5.0)

    s = NoiseSchedule.linear(100)
    for sample in (ddim_sample, ddpm_sample):
        out = sample(Five(), s, (3, 2), prediction="x0")
        torch.testing.assert_close(out, torch.full((3, 2), 5.0))
        out = sample(Five(), s, (3, 2), prediction="x0", clip=(-1.0, 1.0))
        torch.testing.assert_close(out, torch.full((3, 2), 1.0))


class Labelled(nn.Module):
    """out = x + y (as floats); null class 4; counts calls and batch sizes."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2, dtype=torch.float64)
        self.batches: list[int] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.batches.append(x.shape[0])
        assert t.shape == (x.shape[0],) and t.dtype == torch.int64
        return self.lin(x) + (0 if y is None else y[:, None].to(x.dtype))


def test_classifier_free_guidance_is_one_call_on_a_doubled_batch() -> None:
    m = Labelled()
    x, y = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0, 1, 2])
    out = guided_prediction(m, x, 5, y, guidance_scale=3.0)
    assert m.batches == [6]
    cond, uncond = m.lin(x) + y[:, None], m.lin(x) + 4
    torch.testing.assert_close(out, uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(guided_prediction(m, x, 5, y), cond)  # w = 1: plain conditional
    torch.testing.assert_close(guided_prediction(m, x, 5, y, 0.0, null_class=2), m.lin(x) + 2)
    m.batches.clear()
    s = NoiseSchedule.linear(20)
    out = ddim_sample(m, s, (3, 2), steps=4, y=y, guidance_scale=2.0)
    assert m.batches == [6] * 4 and out.shape == (3, 2) and out.dtype == torch.float64


def test_count_flops_of_sampling_is_steps_times_one_model_call() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 2))

    class Denoiser(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.net(x)

    class Run(nn.Module):
        def __init__(self, sample) -> None:
            super().__init__()
            self.den, self.sample = Denoiser(), sample

        def forward(self, x_T: Tensor) -> Tensor:
            return self.sample(self.den, S, x_T)

    S = NoiseSchedule.linear(30)
    x = torch.randn(4, 2)
    one = count_flops(Denoiser(), (x, torch.zeros(4, dtype=torch.long))).forward
    for steps in (1, 5, 30):
        run = Run(lambda m, s, x_T, k=steps: ddim_sample(m, s, x_T=x_T, steps=k))
        assert count_flops(run, (x,)).forward.macs == steps * one.macs
    ddpm = Run(lambda m, s, x_T: ddpm_sample(m, s, x_T=x_T))
    assert count_flops(ddpm, (x,)).forward.macs == 30 * one.macs


def test_progress_bar_and_model_dtype() -> None:
    s = NoiseSchedule.linear(10)
    m = Labelled()
    out = ddpm_sample(m, s, (2, 2), y=torch.tensor([0, 1]), progress=True)
    assert out.dtype == torch.float64  # follows the model's parameters
    out = ddim_sample(lambda x, t: x, s, (2, 2), steps=3, progress=True)  # no parameters
    assert out.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": ()}, "shape: .* needs positive sizes"),
        ({"shape": (0, 2)}, "shape"),
        ({"eta": -0.1}, "eta: -0.1"),
        ({"steps": 0}, "steps: 0"),
        ({"steps": 11}, r"steps: 11 is not in \[1, 10\]"),
        ({"clip": (1.0, -1.0)}, "clip"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"guidance_scale": 2.0}, "guidance_scale: classifier-free guidance needs class labels"),
        ({"y": torch.tensor([0, 1, 2])}, "y: 3 labels for a batch of 2"),
        ({"prediction": "mu"}, "prediction"),
    ],
)
def test_sampling_bad_input(kwargs: dict, match: str) -> None:
    s = NoiseSchedule.linear(10)
    kwargs = {"shape": (2, 2), "steps": 5, **kwargs}
    with pytest.raises(GenerativeError, match=match):
        ddim_sample(Labelled(), s, **kwargs)
