"""Fit a continuous normalising flow (FFJORD) to a 2-D ring of eight Gaussians.

Trains :class:`netarchitect.models.cnf.CNF` (exact trace: 2 dimensions) by maximum
likelihood on samples drawn with numpy, then writes a PNG of the training data, the
learned density on a grid and samples from the flow, and prints the mean negative
log-likelihood before/after training, the grid integral of the density (≈ 1) and the
number of function evaluations (NFE) per solve.

    python examples/cnf_density.py [--steps 300] [--out cnf_density.png]

300 steps take about a minute on 2 cores (fixed-step RK4; dopri5 at 1e-3 needed ~44 NFE
and three minutes: NLL 3.82 -> 1.78 nats, grid integral 1.0007).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netarchitect._io import save_png
from netarchitect.models.cnf import CNF


def eight_gaussians(num: int, rng: np.random.Generator) -> torch.Tensor:
    """``num`` points from eight Gaussians (std 0.2) on a circle of radius 2."""
    angles = rng.integers(0, 8, num) * (np.pi / 4)
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return torch.tensor(centres + 0.2 * rng.standard_normal((num, 2)), dtype=torch.float32)


@dataclass
class Result:
    nll_before: float
    nll_after: float
    integral: float
    nfe: int


def density_grid(flow: CNF, lim: float = 4.0, n: int = 81) -> tuple[torch.Tensor, float]:
    """The flow's density on an ``n × n`` grid over ``[-lim, lim]²`` and its integral."""
    side = torch.linspace(-lim, lim, n)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        density = flow.log_prob(grid).exp().view(n, n)
    return density, float(density.sum() * (side[1] - side[0]) ** 2)


def train(steps: int, batch: int = 256, seed: int = 0) -> tuple[CNF, Result, torch.Tensor]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    flow = CNF(2, hidden_dim=32, solver="rk4", step_size=0.25)  # 16 NFE per solve
    test = eight_gaussians(1024, rng)
    with torch.no_grad():
        before = -float(flow.log_prob(test).mean())
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    for _ in range(steps):
        loss = -flow.log_prob(eight_gaussians(batch, rng)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -float(flow.log_prob(test).mean())
    nfe = flow.nfe
    _, integral = density_grid(flow)
    return flow, Result(before, after, integral, nfe), test


def plot(flow: CNF, data: torch.Tensor, out: Path) -> None:
    """Data, learned density and flow samples side by side, written atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    density, _ = density_grid(flow)
    samples = flow.sample(1024, generator=torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].scatter(data[:, 0], data[:, 1], s=2)
    axes[0].set_title("data")
    axes[1].imshow(density.T.numpy(), origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
    axes[1].set_title("CNF density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, color="C1")
    axes[2].set_title("CNF samples")
    for ax in axes:
        ax.set_xlim(-4, 4), ax.set_ylim(-4, 4), ax.set_aspect("equal")
    save_png(fig, out, dpi=80)


def main(argv: Sequence[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("cnf_density.png"))
    args = parser.parse_args(argv)
    flow, result, data = train(args.steps)
    plot(flow, data, args.out)
    print(
        f"NLL {result.nll_before:.3f} -> {result.nll_after:.3f} nats; density integral "
        f"{result.integral:.4f}; NFE {result.nfe}; wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
