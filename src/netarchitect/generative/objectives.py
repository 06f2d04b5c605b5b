"""Diffusion training objectives and the ε / x₀ / v parameterisations.

With ``x_t = √ᾱ_t x₀ + √(1-ᾱ_t) ε`` (see :mod:`.schedules`), a denoiser predicts one of

- ``ε`` (Ho et al., 2020), - ``x₀``, - ``v = √ᾱ_t ε - √(1-ᾱ_t) x₀`` (Salimans & Ho, 2022),

and each determines the other two given ``x_t``. :func:`diffusion_loss` is the "simple" MSE
loss on the chosen target, with class dropout for classifier-free guidance (Ho & Salimans,
2022): labels are replaced by the null class ``num_classes`` with probability ``p_uncond``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import GenerativeError
from .schedules import NoiseSchedule, extract, q_sample

__all__ = [
    "PREDICTIONS",
    "call_denoiser",
    "diffusion_loss",
    "eps_to_x0",
    "null_class_of",
    "prediction_target",
    "to_x0_eps",
    "train_denoiser",
    "v_target",
    "v_to_eps",
    "v_to_x0",
    "x0_to_eps",
]

PREDICTIONS = ("eps", "x0", "v")

IntOrTensor = int | Tensor


def _coefs(schedule: NoiseSchedule, t: IntOrTensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(√ᾱ_t, √(1-ᾱ_t))`` broadcastable against ``like``."""
    ac = schedule.alphas_cumprod
    t = torch.as_tensor(t)
    return extract(ac.sqrt(), t, like), extract((1.0 - ac).sqrt(), t, like)


def eps_to_x0(schedule: NoiseSchedule, x_t: Tensor, t: IntOrTensor, eps: Tensor) -> Tensor:
    """``x₀ = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t``."""
    a, s = _coefs(schedule, t, x_t)
    return (x_t - s * eps) / a


def x0_to_eps(schedule: NoiseSchedule, x_t: Tensor, t: IntOrTensor, x0: Tensor) -> Tensor:
    """``ε = (x_t - √ᾱ_t x₀) / √(1-ᾱ_t)``."""
    a, s = _coefs(schedule, t, x_t)
    return (x_t - a * x0) / s


def v_target(schedule: NoiseSchedule, x0: Tensor, t: IntOrTensor, eps: Tensor) -> Tensor:
    """``v = √ᾱ_t ε - √(1-ᾱ_t) x₀``."""
    a, s = _coefs(schedule, t, x0)
    return a * eps - s * x0


def v_to_x0(schedule: NoiseSchedule, x_t: Tensor, t: IntOrTensor, v: Tensor) -> Tensor:
    """``x₀ = √ᾱ_t x_t - √(1-ᾱ_t) v``."""
    a, s = _coefs(schedule, t, x_t)
    return a * x_t - s * v


def v_to_eps(schedule: NoiseSchedule, x_t: Tensor, t: IntOrTensor, v: Tensor) -> Tensor:
    """``ε = √(1-ᾱ_t) x_t + √ᾱ_t v``."""
    a, s = _coefs(schedule, t, x_t)
    return s * x_t + a * v


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise GenerativeError(f"prediction: {prediction!r} is not one of {PREDICTIONS}")
    return prediction


def to_x0_eps(
    schedule: NoiseSchedule, x_t: Tensor, t: IntOrTensor, out: Tensor, prediction: str = "eps"
) -> tuple[Tensor, Tensor]:
    """``(x₀, ε)`` implied by a denoiser output ``out`` that predicts ``prediction``."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps_to_x0(schedule, x_t, t, out), out
    if prediction == "x0":
        return out, x0_to_eps(schedule, x_t, t, out)
    return v_to_x0(schedule, x_t, t, out), v_to_eps(schedule, x_t, t, out)


def prediction_target(
    schedule: NoiseSchedule, x0: Tensor, t: IntOrTensor, eps: Tensor, prediction: str = "eps"
) -> Tensor:
    """What a denoiser predicting ``prediction`` should output for ``x₀`` noised with ``eps``."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return v_target(schedule, x0, t, eps)


def null_class_of(model: nn.Module, null_class: int | None = None) -> int:
    """The null label of a class-conditional denoiser: ``null_class`` if given, else the
    model's ``num_classes`` attribute (its class embedding has ``num_classes + 1`` rows)."""
    if null_class is not None:
        return int(null_class)
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or n < 1:
        raise GenerativeError(
            "null_class: the model has no positive `num_classes` attribute; pass null_class="
        )
    return n


def call_denoiser(model: nn.Module, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
    """``model(x_t, t)`` or ``model(x_t, t, y)``: the denoiser call convention."""
    return model(x_t, t) if y is None else model(x_t, t, y)


def diffusion_loss(
    model: nn.Module,
    x0: Tensor,
    schedule: NoiseSchedule,
    *,
    prediction: str = "eps",
    y: Tensor | None = None,
    p_uncond: float = 0.0,
    null_class: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The simple diffusion loss ``E_{t, ε} ‖target - model(x_t, t[, y])‖²`` (mean over every
    element) with ``t`` uniform in ``[0, T)`` and ``ε ~ N(0, I)``; ``target`` is ``ε``, ``x₀``
    or ``v`` by ``prediction``. With labels ``y`` and ``p_uncond > 0`` each label becomes the
    null class (:func:`null_class_of`) with probability ``p_uncond``.

    Shapes:
        x0: ``(B, ...)``; y: ``(B,)`` int64 -> scalar.
    """
    check_prediction(prediction)
    if not 0.0 <= p_uncond <= 1.0:
        raise GenerativeError(f"p_uncond: {p_uncond!r} is not in [0, 1]")
    if y is None and p_uncond > 0:
        raise GenerativeError("p_uncond: class dropout needs labels y")
    b, dev = x0.shape[0], x0.device
    t = torch.randint(0, schedule.num_steps, (b,), generator=generator, device=dev)
    eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, t, eps)
    if y is not None and p_uncond > 0:
        drop = torch.rand(b, generator=generator, device=dev) < p_uncond
        y = torch.where(drop, torch.full_like(y, null_class_of(model, null_class)), y)
    out = call_denoiser(model, x_t, t, y)
    return F.mse_loss(out, prediction_target(schedule, x0, t, eps, prediction))




def train_denoiser(
    model: nn.Module,
    data: Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    prediction: str = "eps",
    labels: Tensor | None = None,
    p_uncond: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Fit ``model`` to ``data`` with :func:`diffusion_loss` and Adam (cosine-decayed ``lr``)
    for ``steps`` minibatches drawn with replacement; returns the loss of every step. Seeded:
    the same call gives the same model. For small in-memory data (2-D toys, digits)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise GenerativeError(f"steps: {steps!r} is not a positive integer")
    g = torch.Generator(device=data.device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=g,
                            device=data.device)
        y = labels[idx] if labels is not None else None
        loss = diffusion_loss(model, data[idx], schedule, prediction=prediction, y=y,
                              p_uncond=p_uncond, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
