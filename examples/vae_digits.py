"""Train a VAE on scikit-learn's digits and measure its samples offline.

Trains the registered ``vae_conv`` (16×16, Bernoulli likelihood on grey levels in [0, 1]) or
``vae_mlp`` (8×8) by maximising the ELBO (Adam, cosine-decayed learning rate), writes a
PNG with test digits, their reconstructions and prior samples, and prints one metrics line:
held-out ELBO before/after training, the IWAE-k log-likelihood estimate, and the samples'
digits-FD and class coverage (:mod:`netarchitect.generative.digits`, the diffusion
benchmark's yardstick).

    python examples/vae_digits.py [--model vae_conv] [--epochs 40] [--out vae_digits.png]
    python examples/vae_digits.py --quick          # a few seconds: the smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import netarchitect as na
from netarchitect._io import save_png
from netarchitect.generative.digits import class_coverage, digits_fd, digits_images
from netarchitect.generative.vae import elbo, iwae_bound, vae_loss

SIZES = {"vae_conv": 16, "vae_mlp": 8}


@dataclass
class Result:
    elbo_before: float
    elbo_after: float
    iwae: float
    fd: float
    classes: int
    confident: float
    samples: torch.Tensor  # (N, 1, S, S) in [-1, 1]


def train(model_name: str, epochs: int, *, latent_dim: int = 16, batch: int = 64,
          lr: float = 2e-3, iwae_k: int = 64, num_samples: int = 1000,
          seed: int = 0) -> tuple[na.Network, Result]:
    """Train and evaluate; images are mapped to [0, 1] for the Bernoulli likelihood."""
    size = SIZES[model_name]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_train = (digits_images("train", size)[0] + 1) / 2
    x_test = (digits_images("test", size)[0] + 1) / 2
    model = na.create_model(model_name, img_size=size, latent_dim=latent_dim, seed=seed)
    with torch.no_grad():
        before = elbo(model.eval(), x_test, generator=g).elbo.mean().item()
    opt = torch.optim.Adam(model.parameters(), lr)
    batches = math.ceil(len(x_train) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs * batches, 1))
    for _ in range(epochs):
        model.train()
        for xb in x_train[torch.randperm(len(x_train), generator=g)].split(batch):
            loss = vae_loss(model, xb, generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        after = elbo(model, x_test, generator=g).elbo.mean().item()
        iwae = iwae_bound(model, x_test, iwae_k, generator=g).mean().item()
        samples = model.sample(num_samples, generator=g) * 2 - 1
    fd = digits_fd(samples)  # the judge trains on first use: outside no_grad
    coverage = class_coverage(samples)
    return model, Result(before, after, iwae, fd, coverage.classes, coverage.confident, samples)


def plot(model: na.Network, result: Result, out: Path, rows: int = 8) -> None:
    """Test digits, their reconstructions and prior samples, written atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = model.data_shape[-1]
    x = (digits_images("test", size)[0][:rows * 4] + 1) / 2
    with torch.no_grad():
        recon = model.reconstruct(x)
    panels = {"test digits": x, "reconstructions": recon,
              "samples": (result.samples[:rows * 4] + 1) / 2}
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (title, imgs) in zip(axes, panels.items(), strict=True):
        grid = imgs[: rows * 4].reshape(4, rows, size, size).permute(0, 2, 1, 3)
        ax.imshow(grid.reshape(4 * size, rows * size).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    save_png(fig, out, dpi=90, bbox_inches="tight")


def main(argv: Sequence[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SIZES), default="vae_conv")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("vae_digits.png"))
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    args = parser.parse_args(argv)
    if args.quick:
        model, result = train("vae_mlp", 1, latent_dim=4, iwae_k=4, num_samples=200)
    else:
        model, result = train(args.model, args.epochs, latent_dim=args.latent_dim)
    plot(model, result, args.out)
    print(
        f"{model.spec.name}: test ELBO {result.elbo_before:.1f} -> {result.elbo_after:.1f} "
        f"nats, IWAE {result.iwae:.1f}; digits-FD {result.fd:.2f}; classes "
        f"{result.classes}/10, confident {result.confident:.0%}; wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
