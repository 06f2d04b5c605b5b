"""Side by side with diffusers 0.42's schedulers (the dev extra): the same betas give the same
``alphas_cumprod``; DDPM and DDIM steps give the same outputs on the same inputs wherever
diffusers is right; and each known diffusers bug is pinned here, with ours shown right.

Known diffusers problems (0.42), each tested below:
- DDIM assumes the previous timestep is ``t - T // steps``: wrong for ``linspace`` spacing
  (huggingface/diffusers#12633, #11347) and for ``trailing`` when ``steps`` does not divide ``T``;
- ``steps_offset=1`` with ``steps == T`` indexes ``alphas_cumprod[T]``: ``IndexError`` (#10003);
- the default ``leading`` spacing starts at 980 of 1000, never at pure noise (#2585);
- ``clip_sample=True`` by default clips x̂₀ to [-1, 1], silently ruining other data;
- DDPM's ``1 - ᾱ_t / ᾱ_{t-1}`` in float32 cancels catastrophically at small ``t``;
- cosine + ``trailing`` + ε-prediction blowing up is ill-conditioning (ᾱ_999 ≈ 2e-9), not
  arithmetic: shown, with v-prediction and ``clip`` as the cures.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from netarchitect.generative import (
    GenerativeError,
    NoiseSchedule,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    q_sample,
)

diffusers = pytest.importorskip("diffusers")
warnings.filterwarnings("ignore", module="diffusers")

PRED = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
OURS = {
    "linear": NoiseSchedule.linear(1000),
    "squaredcos_cap_v2": NoiseSchedule.cosine(1000),
    "scaled_linear": NoiseSchedule.scaled_linear(1000, 1e-4, 0.02),
}


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(4, 2, generator=g, dtype=dtype) for _ in range(3))  # type: ignore[return-value]


def _ddim(spacing: str = "leading", prediction: str = "eps", **kw):
    kw = {"clip_sample": False, "timestep_spacing": spacing,
          "prediction_type": PRED[prediction], **kw}
    return diffusers.DDIMScheduler(**kw)


def _ddpm(prediction: str = "eps", **kw):
    return diffusers.DDPMScheduler(**{"clip_sample": False, "prediction_type": PRED[prediction],
                                      **kw})


def _float64_tables(sched, ours: NoiseSchedule) -> None:
    """Give diffusers our float64 tables: what is left to compare is the step arithmetic."""
    sched.betas, sched.alphas, sched.alphas_cumprod = ours.betas, ours.alphas, ours.alphas_cumprod


@pytest.mark.parametrize("name", sorted(OURS))
def test_same_betas_same_alphas_cumprod(name: str) -> None:
    theirs = diffusers.DDPMScheduler(beta_schedule=name)
    ours = OURS[name]
    torch.testing.assert_close(ours.betas.float(), theirs.betas, rtol=1e-6, atol=1e-7)
    # identical up to float32 rounding (diffusers multiplies 1000 factors in float32)
    torch.testing.assert_close(ours.alphas_cumprod.float(), theirs.alphas_cumprod,
                               rtol=1e-6, atol=1e-6)
    given = diffusers.DDPMScheduler(trained_betas=ours.betas.numpy())
    torch.testing.assert_close(ours.alphas_cumprod.float(), given.alphas_cumprod,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_same_timesteps_for_each_spacing(spacing: str, steps: int) -> None:
    d = _ddim(spacing)
    d.set_timesteps(steps)
    assert d.timesteps.tolist() == ddim_timesteps(1000, steps, spacing).tolist() or (
        spacing == "linspace" and steps == 1  # diffusers: [0], a single step from t = 0
    )


def _prev_diffusers(t: int, steps: int, T: int = 1000) -> int:
    return t - T // steps  # DDIMScheduler.step's previous timestep


def _ddim_cases(spacing: str, steps: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(t, next t) pairs where diffusers' previous timestep is right, and where it is wrong."""
    ts = ddim_timesteps(1000, steps, spacing).tolist()
    pairs = list(zip(ts, [*ts[1:], -1]))
    right = [(t, s) for t, s in pairs if _prev_diffusers(t, steps) == s
             or (s == -1 and _prev_diffusers(t, steps) < 0)]
    wrong = [p for p in pairs if p not in right]
    return right, wrong


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize(("spacing", "steps"),
                         [("leading", 50), ("trailing", 50), ("linspace", 50), ("trailing", 30),
                          ("leading", 1000)])
def test_ddim_step_matches_where_diffusers_is_right(prediction: str, spacing: str,
                                                    steps: int) -> None:
    ours = OURS["linear"]
    right, _ = _ddim_cases(spacing, steps)
    assert len(right) >= 10
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-10)):
        d = _ddim(spacing, prediction)
        if dtype == torch.float64:
            _float64_tables(d, ours)
        d.set_timesteps(steps)
        x, out, z = _inputs(dtype)
        for t, s in right:
            if dtype == torch.float32 and (steps == 1000 or prediction == "x0") and t < 100:
                # float32 near t = 0: ε from x̂₀ multiplies rounding by 1/√(1-ᾱ) (both);
                # diffusers' 1 - ᾱ_t/ᾱ_s cancels for adjacent steps (test below)
                continue
            ref = d.step(out, t, x, eta=0.5, variance_noise=z)
            mine, x0 = ddim_step(ours, x, t, s, out, eta=0.5, noise=z, prediction=prediction)
            torch.testing.assert_close(mine, ref.prev_sample, rtol=tol, atol=tol)
            torch.testing.assert_close(x0, ref.pred_original_sample, rtol=tol, atol=tol)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_step_matches(prediction: str) -> None:
    ours = OURS["linear"]
    x, out, _ = _inputs()
    d = _ddpm(prediction)
    for t in (999, 700, 300, 100, 50, 0):
        ref = d.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        mine, _ = ddpm_step(ours, x, t, out, noise=z, prediction=prediction)
        tol = 1e-6 if prediction != "x0" else 1e-5
        torch.testing.assert_close(mine, ref, rtol=tol, atol=tol)
    # every t, with the same float64 tables: the arithmetic is the same
    d = _ddpm(prediction)
    _float64_tables(d, ours)
    x, out, _ = _inputs(torch.float64)
    for t in range(0, 1000, 37):
        ref = d.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        mine, _ = ddpm_step(ours, x, t, out, noise=z, prediction=prediction)
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-10)


def test_diffusers_ddpm_float32_cancellation_at_small_t() -> None:
    """At t = 1 diffusers' float32 ``1 - ᾱ_1/ᾱ_0`` (β ≈ 1.2e-4) loses ~3 digits; ours (float64
    coefficients) stays within float32 rounding of the float64 truth."""
    ours = OURS["linear"]
    x, out, _ = _inputs()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    theirs = _ddpm().step(out, 1, x, generator=torch.Generator().manual_seed(1)).prev_sample
    mine, _ = ddpm_step(ours, x, 1, out, noise=z)
    truth, _ = ddpm_step(ours, x.double(), 1, out.double(), noise=z.double())
    assert (mine.double() - truth).abs().max() < 1e-6
    assert (theirs.double() - truth).abs().max() > 1e-5


@pytest.mark.parametrize(("spacing", "steps"), [("linspace", 50), ("linspace", 7),
                                                ("trailing", 30), ("trailing", 7)])
def test_diffusers_ddim_wrong_previous_timestep(spacing: str, steps: int) -> None:
    """diffusers#12633/#11347: with the exact ε, one DDIM step (η = 0) must land exactly on
    ``q(x_s | x₀)`` at the *next* timestep ``s`` the model will be called with. Ours does;
    diffusers lands at ``t - T // steps`` instead wherever that is not ``s``."""
    ours = OURS["linear"]
    _, wrong = _ddim_cases(spacing, steps)
    assert wrong, "diffusers is right here: nothing to document"
    d = _ddim(spacing)
    _float64_tables(d, ours)
    d.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(4, 2, generator=g, dtype=torch.float64) for _ in range(2))
    for t, s in wrong:
        x_t = q_sample(ours, x0, torch.full((4,), t), eps)
        target = q_sample(ours, x0, torch.full((4,), s), eps) if s >= 0 else x0
        mine, _ = ddim_step(ours, x_t, t, s, eps)
        torch.testing.assert_close(mine, target, rtol=1e-9, atol=1e-9)
        theirs = d.step(eps, t, x_t).prev_sample
        assert (theirs - target).abs().max() > 1e-4


def test_diffusers_steps_offset_index_error() -> None:
    """diffusers#10003: ``steps_offset=1`` with as many steps as training steps indexes
    ``alphas_cumprod[1000]``. Ours refuses the offset by name before sampling."""
    d = _ddim("leading", steps_offset=1)
    d.set_timesteps(1000)
    x, out, _ = _inputs()
    with pytest.raises(IndexError):
        d.step(out, int(d.timesteps[0]), x)
    with pytest.raises(GenerativeError, match="offset: 1 puts the first timestep at 1000"):
        ddim_timesteps(1000, 1000, "leading", offset=1)
    assert ddim_timesteps(1000, 999, "leading", offset=1)[0] == 999  # in range: allowed


def test_diffusers_default_leading_spacing_skips_pure_noise() -> None:
    """diffusers#2585: the default ``leading`` spacing starts at t = 980 (10 steps: 900), so
    the first model call is told a noise level the N(0, I) start does not have. Our samplers
    default to ``trailing``: the first step is at t = T - 1."""
    d = diffusers.DDIMScheduler()
    assert d.config.timestep_spacing == "leading"
    d.set_timesteps(50)
    assert int(d.timesteps[0]) == 980
    d.set_timesteps(10)
    assert int(d.timesteps[0]) == 900
    cos = OURS["squaredcos_cap_v2"]
    # signal fraction √ᾱ that x_T ~ N(0, I) is wrongly assumed to carry at the first step
    assert float(cos.alphas_cumprod[900].sqrt()) > 0.15
    assert float(cos.alphas_cumprod[999].sqrt()) < 1e-3
    seen: list[int] = []
    ddim_sample(lambda x, t: seen.append(int(t[0])) or x * 0, cos, (2, 2), steps=10)
    assert seen[0] == 999


def test_diffusers_clips_sample_by_default() -> None:
    """``clip_sample=True`` is diffusers' default for DDPM and DDIM: an x̂₀ of 5 becomes 1.
    Ours never clips unless asked (``clip=(lo, hi)``)."""
    x = torch.full((2, 2), 3.0)
    five = torch.full((2, 2), 5.0)
    for sched in (diffusers.DDPMScheduler(prediction_type="sample"),
                  diffusers.DDIMScheduler(prediction_type="sample")):
        assert sched.config.clip_sample is True
        if isinstance(sched, diffusers.DDIMScheduler):
            sched.set_timesteps(50)
        assert (sched.step(five, 500, x).pred_original_sample == 1.0).all()
    s = OURS["linear"]
    assert (ddim_step(s, x, 500, 480, five, prediction="x0")[1] == 5.0).all()
    assert (ddpm_step(s, x, 500, five, prediction="x0", noise=torch.zeros(2, 2))[1] == 5.0).all()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_cosine_trailing_first_step_conditioning(prediction: str) -> None:
    """Why cosine + ``trailing`` + ε-prediction blew up on 2-D data (in diffusers and in any
    exact implementation): the cosine schedule's ᾱ_999 ≈ 2e-9, so the first step from t = 999
    turns an ε error δ into an x error ≈ δ·√(ᾱ_979/ᾱ_999) ≈ 670 δ. The arithmetic is right
    (ours equals diffusers' step there); the cure is v- (or x₀-) prediction, whose first-step
    error stays below δ, or a ``clip``."""
    cos = OURS["squaredcos_cap_v2"]
    assert float(cos.alphas_cumprod[999]) < 1e-8
    t, s = ddim_timesteps(1000, 50, "trailing")[:2].tolist()
    x, out, _ = _inputs(torch.float64)
    delta = 1e-3 * torch.ones_like(out)
    a, _ = ddim_step(cos, x, t, s, out, prediction=prediction)
    b, _ = ddim_step(cos, x, t, s, out + delta, prediction=prediction)
    gain = float((b - a).abs().max() / 1e-3)
    if prediction == "eps":
        assert gain > 500
        d = _ddim("trailing", "eps", beta_schedule="squaredcos_cap_v2")
        _float64_tables(d, cos)
        d.set_timesteps(50)
        torch.testing.assert_close(a, d.step(out, t, x).prev_sample, rtol=1e-9, atol=1e-9)
    else:
        assert gain < 1
    # with x̂₀ clamped to [-1, 1], ε̂ is recomputed from it: the δ is absorbed
    c1, _ = ddim_step(cos, x, t, s, out, prediction=prediction, clip=(-1.0, 1.0))
    c2, _ = ddim_step(cos, x, t, s, out + delta, prediction=prediction, clip=(-1.0, 1.0))
    assert float((c2 - c1).abs().max()) < 1e-3
