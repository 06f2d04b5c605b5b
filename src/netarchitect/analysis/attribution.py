"""Attributions for any model: which inputs (or feature-map locations) a prediction rests on.

* :func:`saliency` — the input gradient of the target score (Simonyan et al., 2014);
* :func:`smoothgrad` — saliency averaged over noisy copies of the input (Smilkov et al., 2017);
* :func:`integrated_gradients` — the path integral of gradients from a baseline (Sundararajan
  et al., 2017) by Gauss–Legendre quadrature, with its completeness gap
  ``Σ attributions − (f(x) − f(baseline))``;
* :func:`grad_cam` — Grad-CAM (Selvaraju et al., 2017) and Grad-CAM++ (Chattopadhay et al.,
  2018) on a convolutional stage, named by ``feature_info`` or by module path.

``target`` is a class index for every sample, or one per sample; the score is
``model(x)[i, target_i]``. Conventions follow Captum's (``abs=True`` saliency, Gauss–Legendre
IG, Grad-CAM at the layer's resolution) so results agree with it to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import NetArchitectError, suggest

__all__ = [
    "AttributionError",
    "IGResult",
    "grad_cam",
    "integrated_gradients",
    "resolve_layer",
    "saliency",
    "smoothgrad",
]

Target = int | Sequence[int] | Tensor


class AttributionError(NetArchitectError, ValueError):
    """A bad attribution request: unknown layer, baseline of the wrong shape, bad target."""


def _targets(target: Target, batch: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise AttributionError(f"target: {t.numel()} targets for a batch of {batch}")
    return t


def _score(model: Callable[[Tensor], Tensor], x: Tensor, target: Tensor) -> Tensor:
    out = model(x)
    if out.dim() != 2:
        raise AttributionError(f"the model output has shape {tuple(out.shape)}; expected (B, C)")
    if int(target.max()) >= out.shape[1] or int(target.min()) < 0:
        raise AttributionError(f"target: class {int(target.max())} out of range for {out.shape[1]}")
    return out.gather(1, target[:, None]).squeeze(1)  # (B,)


def _input_grad(model: Callable[[Tensor], Tensor], x: Tensor, target: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_score(model, x, target).sum(), x)
    return grad


def saliency(
    model: Callable[[Tensor], Tensor], x: Tensor, target: Target, *, abs: bool = True
) -> Tensor:
    """``|∂ score / ∂ x|`` (or the signed gradient with ``abs=False``), shaped like ``x``."""
    grad = _input_grad(model, x, _targets(target, len(x), x.device))
    return grad.abs() if abs else grad


def smoothgrad(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Target,
    *,
    samples: int = 25,
    stdev: float = 0.15,
    abs: bool = True,
    seed: int = 0,
) -> Tensor:
    """The mean saliency over ``samples`` copies of ``x`` with Gaussian noise of std ``stdev``
    (in input units), drawn from ``seed``."""
    if samples < 1 or stdev < 0:
        raise AttributionError(f"samples={samples} must be >= 1 and stdev={stdev} >= 0")
    t = _targets(target, len(x), x.device)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(samples):
        noisy = x + stdev * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        grad = _input_grad(model, noisy, t)
        total += grad.abs() if abs else grad
    return total / samples


@dataclass(frozen=True)
class IGResult:
    """Attributions shaped like the input and, per sample, the completeness gap
    ``Σ attributions − (f(x) − f(baseline))`` (→ 0 as ``steps`` grows)."""

    attributions: Tensor
    delta: Tensor


def _gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """Nodes in [0, 1] and weights (summing to 1) of ``steps``-point Gauss–Legendre."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return list(0.5 * (nodes + 1)), list(0.5 * weights)


def integrated_gradients(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Target,
    *,
    baseline: Tensor | float | None = None,
    steps: int = 50,
    internal_batch_size: int | None = None,
) -> IGResult:
    """``(x − x') ⊙ ∫₀¹ ∂f(x' + α(x − x'))/∂x dα`` by ``steps``-point Gauss–Legendre quadrature;
    ``baseline`` ``x'`` defaults to zeros (a tensor of ``x``'s shape, or of one sample's shape,
    or a number). Interpolated inputs go through the model ``internal_batch_size`` at a time
    (all ``steps × B`` at once by default)."""
    if steps < 1:
        raise AttributionError(f"steps={steps} must be >= 1")
    base = _baseline(baseline, x)
    t = _targets(target, len(x), x.device)
    alphas, weights = _gauss_legendre(steps)
    b = len(x)
    path = torch.cat([base + a * (x - base) for a in alphas])  # (steps·B, ...)
    chunk = internal_batch_size or len(path)
    grads = torch.cat(
        [
            _input_grad(model, path[i : i + chunk], t.repeat(steps)[i : i + chunk])
            for i in range(0, len(path), chunk)
        ]
    ).reshape(steps, b, *x.shape[1:])
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).reshape(steps, *[1] * x.dim())
    attributions = (x - base) * (w * grads).sum(0)
    with torch.no_grad():
        gap = _score(model, x, t) - _score(model, base, t)
    delta = attributions.reshape(b, -1).sum(1) - gap
    return IGResult(attributions, delta)


def _baseline(baseline: Tensor | float | None, x: Tensor) -> Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if not isinstance(baseline, Tensor):
        return torch.full_like(x, float(baseline))
    if baseline.shape == x.shape[1:]:
        baseline = baseline.expand_as(x)
    if baseline.shape != x.shape:
        raise AttributionError(
            f"baseline: shape {tuple(baseline.shape)}, expected {tuple(x.shape)} "
            f"or {tuple(x.shape[1:])}"
        )
    return baseline.to(x)


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The module ``layer`` names: a ``feature_info`` node id, a module path, or the module."""
    if isinstance(layer, nn.Module):
        return layer
    info = getattr(model, "feature_info", None) or []
    by_node = {f["node"]: f["module"] for f in info if "node" in f and "module" in f}
    path = by_node.get(layer, layer)
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = list(by_node) or [n for n, _ in model.named_modules() if n]
        where = "feature_info stages" if by_node else "modules"
        raise AttributionError(
            f"layer {layer!r}{suggest(layer, names)} is not in the model; "
            f"its {where}: {', '.join(names[:12])}"
        ) from None


def grad_cam(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Target,
    layer: str | nn.Module,
    *,
    plusplus: bool = False,
    relu: bool = True,
) -> Tensor:
    """Grad-CAM of the ``layer`` activation ``A`` (B, C, ...): ``relu(Σ_c w_c A_c)`` with
    ``w_c`` the spatial mean of ``∂ score/∂A_c`` — or, with ``plusplus``, Grad-CAM++'s
    weights ``Σ α ⊙ relu(∂score/∂A)``, ``α = g² / (2g² + Σ A ⊙ g³)``. Returns
    ``(B, 1, ...)`` at the layer's resolution."""
    module = resolve_layer(model if isinstance(model, nn.Module) else nn.Module(), layer)
    t = _targets(target, len(x), x.device)
    store: list[Tensor] = []

    def keep(_m: nn.Module, _inp: object, out: Tensor) -> None:
        store.append(out)

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = _score(model, x.detach().requires_grad_(True), t)
            if not store:
                raise AttributionError(f"layer {layer!r} did not run in the forward pass")
            act = store[-1]
            (grad,) = torch.autograd.grad(score.sum(), act)
    finally:
        handle.remove()
    if act.dim() < 3:
        raise AttributionError(
            f"layer {layer!r}: activation of shape {tuple(act.shape)} has no spatial dimensions"
        )
    dims = tuple(range(2, act.dim()))
    if plusplus:
        g2, g3 = grad.pow(2), grad.pow(3)
        denom = 2 * g2 + (act * g3).sum(dims, keepdim=True)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * grad.clamp_min(0)).sum(dims, keepdim=True)
    else:
        weights = grad.mean(dims, keepdim=True)
    cam = (weights * act).sum(1, keepdim=True)
    return (cam.clamp_min(0) if relu else cam).detach()
