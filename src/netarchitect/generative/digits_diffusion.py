"""Train a class-conditional diffusion UNet on scikit-learn's digits and sample from it: the
recipe the example, the benchmark and the slow test share.

The recipe (DDPM's, scaled down): ε-prediction under a linear ``T``-step schedule, Adam with a
short warm-up, an exponential moving average of the weights (used for sampling), and class
dropout to the null class with probability ``p_uncond`` so classifier-free guidance works.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .digits import digits_images
from .errors import GenerativeError
from .objectives import diffusion_loss
from .samplers import Clip, ddim_sample, ddpm_sample
from .schedules import NoiseSchedule

__all__ = ["DigitsDiffusion", "DigitsDiffusionConfig", "image_grid", "save_image_grid",
           "train_digits_diffusion"]


@dataclass(frozen=True)
class DigitsDiffusionConfig:
    """What :func:`train_digits_diffusion` trains: the model (a registered name and its
    overrides), the schedule (``T`` linear steps) and the optimisation."""

    model: str = "diffusion_unet_digits"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int = 8
    timesteps: int = 1000
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.995
    p_uncond: float = 0.1
    seed: int = 0


@dataclass
class DigitsDiffusion:
    """A trained model (``ema``: the averaged weights, used to sample), its schedule, the
    loss per step and the training time."""

    model: nn.Module
    ema: nn.Module
    schedule: NoiseSchedule
    losses: list[float]
    seconds: float
    config: DigitsDiffusionConfig

    def sample(self, n: int, *, sampler: str = "ddim", steps: int = 50, eta: float = 0.0,
               spacing: str = "trailing", clip: Clip = None, guidance_scale: float = 1.0,
               seed: int = 0, batch: int = 500) -> tuple[Tensor, Tensor]:
        """``n`` samples (labels ``i % 10``, balanced) by DDIM (``steps``, ``eta``,
        ``spacing``) or DDPM (all ``T``), in batches of ``batch``; ``clip=(lo, hi)`` clamps
        x̂₀ at every step (both samplers; off by default); returns ``(images in [-1, 1]
        (clamped), labels)``."""
        if sampler not in ("ddim", "ddpm"):
            raise GenerativeError(f"sampler: {sampler!r} is not 'ddim' or 'ddpm'")
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 10
        size = self.config.img_size
        out = []
        for y in labels.split(batch):
            options: dict[str, Any] = {"y": y, "guidance_scale": guidance_scale, "generator": g,
                                       "clip": clip}
            shape = (len(y), 1, size, size)
            if sampler == "ddim":
                x = ddim_sample(self.ema, self.schedule, shape, steps=steps, eta=eta,
                                spacing=spacing, **options)
            else:
                x = ddpm_sample(self.ema, self.schedule, shape, **options)
            out.append(x.clamp(-1, 1))
        return torch.cat(out), labels


def train_digits_diffusion(config: DigitsDiffusionConfig | None = None,
                           **overrides: Any) -> DigitsDiffusion:
    """Train on the ``train`` split of :func:`~netarchitect.generative.digits.digits_images`
    at ``img_size`` (seeded: the same config gives the same weights)."""
    from ..factory import create_model

    config = config or DigitsDiffusionConfig()
    if overrides:
        config = DigitsDiffusionConfig(**{**config.__dict__, **overrides})
    x, y = digits_images("train", config.img_size)
    model = create_model(config.model, seed=config.seed, **config.model_kwargs)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    schedule = NoiseSchedule.linear(config.timesteps)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    warm = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / max(1, config.warmup)))
    g = torch.Generator().manual_seed(config.seed)
    losses, start = [], time.perf_counter()
    model.train()
    for _ in range(config.steps):
        idx = torch.randint(0, len(y), (config.batch_size,), generator=g)
        loss = diffusion_loss(model, x[idx], schedule, y=y[idx], p_uncond=config.p_uncond,
                              generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        warm.step()
        ema.update_parameters(model)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    return DigitsDiffusion(model.eval(), ema.module.eval(), schedule, losses, seconds, config)


def image_grid(images: Tensor, cols: int = 10, pad: int = 1) -> Tensor:
    """Tile ``(N, 1, S, S)`` images in ``[-1, 1]`` into one ``(rows·(S+pad), cols·(S+pad))``
    array in ``[0, 1]`` (white gaps)."""
    if images.dim() != 4 or images.shape[1] != 1 or len(images) == 0:
        raise GenerativeError(f"images: expected (N >= 1, 1, S, S), got {tuple(images.shape)}")
    n, _, s, _ = images.shape
    rows = -(-n // cols)
    grid = torch.ones(rows * (s + pad), cols * (s + pad))
    for i, img in enumerate(((images[:, 0].detach().float().cpu() + 1) / 2).clamp(0, 1)):
        r, c = divmod(i, cols)
        grid[r * (s + pad) : r * (s + pad) + s, c * (s + pad) : c * (s + pad) + s] = img
    return grid


def save_image_grid(images: Tensor, path: str | Path, cols: int = 10, scale: int = 4) -> Path:
    """Write :func:`image_grid` as a grayscale PNG (each pixel ``scale``×``scale``, atomically)."""
    import matplotlib.image

    from .._io import atomic_write

    grid = image_grid(images, cols).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return atomic_write(path, lambda tmp: matplotlib.image.imsave(
        tmp, grid.numpy(), cmap="gray", vmin=0, vmax=1, format="png"))
