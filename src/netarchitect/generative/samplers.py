"""DDPM ancestral sampling (Ho et al., 2020) and DDIM (Song et al., 2021) with η, any number of
steps and three timestep spacings, plus classifier-free guidance (Ho & Salimans, 2022).

One step from ``t`` to ``s < t`` (``ᾱ_{-1} = 1``, so the last step lands on clean data)::

    x̂₀ = x₀-prediction of the model at (x_t, t)       (optionally clamped to ``clip``)
    ε̂  = (x_t - √ᾱ_t x̂₀) / √(1-ᾱ_t)
    σ²  = η² (1-ᾱ_s)/(1-ᾱ_t) · (1 - ᾱ_t/ᾱ_s)
    x_s = √ᾱ_s x̂₀ + √(1-ᾱ_s-σ²) ε̂ + σ z

With ``s = t-1`` and ``η = 1``, ``σ²`` is DDPM's posterior variance ``β̃_t``. DDPM uses the
posterior ``q(x_{t-1} | x_t, x̂₀)`` mean with variance ``β̃_t`` (diffusers' ``fixed_small``).

Model calls: exactly one per step. With ``guidance_scale != 1`` the conditional and the null-class
(unconditional) predictions come from *one* call on a doubled batch ``2B`` (conditional first),
combined as ``ε_u + w (ε_c - ε_u)``. So ``count_flops(sampling) = steps × count_flops(model call)``
(at batch ``B``, or ``2B`` with guidance).

Unlike diffusers: the previous timestep is always the next one in the schedule (diffusers'
DDIM assumes an even stride ``T // steps``, wrong for ``linspace``); no clipping unless asked
(diffusers clips x̂₀ to [-1, 1] by default); a bad ``offset`` or ``steps`` is a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .errors import GenerativeError
from .objectives import call_denoiser, check_prediction, null_class_of, to_x0_eps, x0_to_eps
from .schedules import NoiseSchedule

__all__ = [
    "SPACINGS",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "ddpm_step",
    "guided_prediction",
]

SPACINGS = ("leading", "trailing", "linspace", "quadratic")
Clip = tuple[float, float] | None


def ddim_timesteps(T: int, steps: int, spacing: str = "trailing", offset: int = 0) -> Tensor:
    """The ``steps`` timesteps (int64, strictly decreasing, inside ``[0, T)``) a DDIM run visits.

    - ``"trailing"``: ``round(T - i·T/steps) - 1``, ``i = 0..steps-1``: first ``T-1``, last
      ``round(T/steps) - 1`` (Lin et al., 2024, "Common diffusion noise schedules ... are flawed").
    - ``"leading"``: ``i·(T // steps) + offset`` reversed: first ``(steps-1)·(T//steps) + offset``
      (980 for 50 of 1000 steps: never the pure-noise end), last ``offset``.
    - ``"linspace"``: ``round(linspace(0, T-1, steps))`` reversed: first ``T-1``, last ``0``
      (a single step is ``[T-1]``).
    - ``"quadratic"``: ``round((T-1)·(i/(steps-1))²)`` reversed (DDIM's "quad" skip, Song et
      al., 2021, here reaching ``T-1``): first ``T-1``, last ``0``, steps dense near clean data
      where few-step sampling of sharp data errs most; a value repeated by rounding is moved
      up to one past its predecessor (a single step is ``[T-1]``).

    ``offset`` (diffusers' ``steps_offset``) is only for ``"leading"``.
    """
    for name, v in (("T", T), ("steps", steps), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise GenerativeError(f"{name}: {v!r} is not an integer")
    if T < 1:
        raise GenerativeError(f"T: {T} is not a positive integer")
    if not 1 <= steps <= T:
        raise GenerativeError(f"steps: {steps} is not in [1, {T}] (the training steps T={T})")
    if spacing not in SPACINGS:
        raise GenerativeError(f"spacing: {spacing!r} is not one of {SPACINGS}")
    if offset and spacing != "leading":
        raise GenerativeError(f"offset: {offset} only applies to spacing='leading', not {spacing!r}")
    i = torch.arange(steps, dtype=torch.float64)
    if spacing == "trailing":
        ts = torch.round(T * (steps - i) / steps) - 1
    elif spacing == "leading":
        stride = T // steps
        first = (steps - 1) * stride + offset
        if offset < 0 or first >= T:
            raise GenerativeError(
                f"offset: {offset} puts the first timestep at {first}, outside [0, {T}) "
                f"with steps={steps}"
            )
        ts = (steps - 1 - i) * stride + offset
    elif steps == 1:
        ts = torch.tensor([T - 1.0], dtype=torch.float64)
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(T - 1, 0, steps, dtype=torch.float64))
    else:
        ts = _quadratic(T, steps)
    return ts.to(torch.int64)


def _quadratic(T: int, steps: int) -> Tensor:
    """Descending ``round((T-1) (i/(steps-1))²)``, made strictly increasing (ascending) by the
    least lift ``a_i = max_{j≤i}(r_j - j) + i``; ``a`` ends at ``T-1`` because
    ``(T-1)u² + (steps-1)(1-u) ≤ T-1`` for ``u ∈ [0, 1]`` when ``steps ≤ T``."""
    i = torch.arange(steps, dtype=torch.float64)
    r = torch.floor((T - 1) * (i / (steps - 1)) ** 2 + 0.5)
    return (torch.cummax(r - i, 0).values + i).flip(0)


def _prev_alpha(schedule: NoiseSchedule, s: int) -> float:
    return float(schedule.alphas_cumprod[s]) if s >= 0 else 1.0


def _clip_x0(
    schedule: NoiseSchedule, x_t: Tensor, t: int, out: Tensor, prediction: str, clip: Clip
) -> tuple[Tensor, Tensor]:
    x0, eps = to_x0_eps(schedule, x_t, t, out, prediction)
    if clip is not None:
        x0 = x0.clamp(*clip)
        eps = x0_to_eps(schedule, x_t, t, x0)
    return x0, eps


def ddim_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: int,
    t_prev: int,
    out: Tensor,
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    clip: Clip = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM update from ``t`` to ``t_prev`` (``-1``: to clean data) given the denoiser
    output ``out``; returns ``(x_{t_prev}, x̂₀)``. ``noise`` is ``z`` (drawn when ``None`` and
    ``σ > 0``). With ``clip``, ``ε̂`` is recomputed from the clamped ``x̂₀``."""
    a_t = float(schedule.alphas_cumprod[t])
    a_s = _prev_alpha(schedule, t_prev)
    x0, eps = _clip_x0(schedule, x_t, t, out, prediction, clip)
    var = eta**2 * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
    x_prev = a_s**0.5 * x0 + max(1 - a_s - var, 0.0) ** 0.5 * eps
    if var > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        x_prev = x_prev + var**0.5 * noise
    return x_prev, x0


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: int,
    out: Tensor,
    *,
    prediction: str = "eps",
    clip: Clip = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One ancestral step ``x_{t-1} ~ q(x_{t-1} | x_t, x̂₀)``: mean
    ``√ᾱ_{t-1} β_t/(1-ᾱ_t) x̂₀ + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t``, variance
    ``β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t)`` (no noise at ``t = 0``). Returns ``(x_{t-1}, x̂₀)``."""
    a_t = float(schedule.alphas_cumprod[t])
    a_s = _prev_alpha(schedule, t - 1)
    beta = float(schedule.betas[t])
    x0, _ = _clip_x0(schedule, x_t, t, out, prediction, clip)
    mean = (a_s**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t)) * x_t
    if t == 0:
        return mean, x0
    if noise is None:
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + (beta * (1 - a_s) / (1 - a_t)) ** 0.5 * noise, x0


def guided_prediction(
    model: nn.Module,
    x_t: Tensor,
    t: int,
    y: Tensor | None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
) -> Tensor:
    """The denoiser output at ``(x_t, t)``, with classifier-free guidance
    ``out_u + w (out_c - out_u)`` when ``guidance_scale = w != 1`` (one call on ``2B``)."""
    b = x_t.shape[0]
    if guidance_scale == 1.0:
        tb = torch.full((b,), t, dtype=torch.int64, device=x_t.device)
        return call_denoiser(model, x_t, tb, y)
    if y is None:
        raise GenerativeError("guidance_scale: classifier-free guidance needs class labels y")
    null = torch.full_like(y, null_class_of(model, null_class))
    tb = torch.full((2 * b,), t, dtype=torch.int64, device=x_t.device)
    both = call_denoiser(model, torch.cat([x_t, x_t]), tb, torch.cat([y, null]))
    cond, uncond = both[:b], both[b:]
    return uncond + guidance_scale * (cond - uncond)


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The first parameter's dtype and device (float32 on CPU for a parameter-free callable)."""
    params = model.parameters() if isinstance(model, nn.Module) else iter(())
    p = next(iter(params), None)
    return (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))


def _start(
    model: nn.Module,
    shape: Sequence[int],
    x_T: Tensor | None,
    y: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    if x_T is not None:
        return x_T
    if not shape or any(int(n) < 1 for n in shape):
        raise GenerativeError(f"shape: {tuple(shape)!r} needs positive sizes, batch first")
    if y is not None and y.shape[0] != shape[0]:
        raise GenerativeError(f"y: {y.shape[0]} labels for a batch of {shape[0]}")
    dtype, device = _model_dtype_device(model)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)


def _progress(ts: Sequence[int], on: bool, label: str) -> Iterator[int]:
    if not on:
        yield from ts
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=len(ts))
        for t in ts:
            yield t
            bar.advance(task)


def _check_common(prediction: str, clip: Clip, guidance_scale: float) -> None:
    check_prediction(prediction)
    if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
        raise GenerativeError(f"clip: {clip!r} is not a (low, high) pair with low < high")
    if not math.isfinite(guidance_scale):
        raise GenerativeError(f"guidance_scale: {guidance_scale!r} is not finite")


def _run(
    model: nn.Module,
    x: Tensor,
    ts: list[int],
    step: Callable[[Tensor, int, int, Tensor], Tensor],
    *,
    y: Tensor | None,
    guidance_scale: float,
    null_class: int | None,
    progress: bool,
    label: str,
) -> Tensor:
    with torch.no_grad():
        for i, t in enumerate(_progress(ts, progress, label)):
            out = guided_prediction(model, x, t, y, guidance_scale, null_class)
            x = step(x, t, ts[i + 1] if i + 1 < len(ts) else -1, out)
    return x


def ddpm_sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    shape: Sequence[int] = (),
    *,
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    prediction: str = "eps",
    clip: Clip = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """``x₀`` samples by ancestral sampling over all ``T`` steps, from ``x_T`` (standard normal
    ``shape`` draws when ``None``). ``clip=(lo, hi)`` clamps x̂₀ (off by default)."""
    _check_common(prediction, clip, guidance_scale)
    x = _start(model, shape, x_T, y, generator)

    def step(x: Tensor, t: int, _: int, out: Tensor) -> Tensor:
        return ddpm_step(
            schedule, x, t, out, prediction=prediction, clip=clip, generator=generator
        )[0]

    ts = list(range(schedule.num_steps - 1, -1, -1))
    return _run(model, x, ts, step, y=y, guidance_scale=guidance_scale, null_class=null_class,
                progress=progress, label="DDPM")


def ddim_sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    shape: Sequence[int] = (),
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "trailing",
    offset: int = 0,
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    prediction: str = "eps",
    clip: Clip = None,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """``x₀`` samples by DDIM over :func:`ddim_timesteps` ``(T, steps, spacing, offset)``;
    ``eta=0`` is deterministic given ``x_T``, ``eta=1`` with ``steps=T`` is DDPM."""
    _check_common(prediction, clip, guidance_scale)
    if not eta >= 0:
        raise GenerativeError(f"eta: {eta!r} is negative")
    ts = ddim_timesteps(schedule.num_steps, steps, spacing, offset).tolist()
    x = _start(model, shape, x_T, y, generator)

    def step(x: Tensor, t: int, s: int, out: Tensor) -> Tensor:
        return ddim_step(
            schedule, x, t, s, out, eta=eta, prediction=prediction, clip=clip, generator=generator
        )[0]

    return _run(model, x, ts, step, y=y, guidance_scale=guidance_scale, null_class=null_class,
                progress=progress, label="DDIM")
