"""Train a 2-D diffusion model on a swiss roll and sample it with DDIM.

The denoiser is the registered ``diffusion_mlp_2d`` family (a spec-built residual MLP with a
sinusoidal timestep embedding), trained with the ε-prediction loss on a linear 1000-step
schedule; samples come from DDIM (η = 0, trailing spacing). Writes a PNG scatter of data,
initial noise and samples, and prints one metrics line: the MMD² (RBF, median heuristic) of
the noise and of the samples to held-out data, and k-NN precision/recall.

    python examples/swissroll_diffusion.py [--steps 4000] [--sample-steps 50] [--out swissroll.png]

About 15 s of one core (4,000 Adam steps of a 64-wide MLP at lr 1e-2; tiny models run
fastest on one thread, so the script sets it). Measured: MMD² 0.0274 (noise) -> 0.0002,
k-NN precision 0.77, recall 0.94 (held-out data: 0.97 / 0.94).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from netarchitect._io import save_png
from netarchitect.generative import (
    NoiseSchedule,
    ddim_sample,
    knn_precision_recall,
    mmd_rbf,
    swiss_roll,
    train_denoiser,
)
from netarchitect.models.diffusion_mlp import diffusion_mlp


@dataclass
class Result:
    noise_mmd: float
    sample_mmd: float
    precision: float
    recall: float
    final_loss: float


def run(
    steps: int, sample_steps: int, seed: int = 0
) -> tuple[Result, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and sample; returns the metrics, held-out data, initial noise and samples."""
    data, held_out = swiss_roll(4000, seed=seed), swiss_roll(1000, seed=seed + 1)
    schedule = NoiseSchedule.linear(1000)
    model = diffusion_mlp(hidden_dim=64, num_blocks=2, seed=seed)
    losses = train_denoiser(model, data, schedule, steps=steps, batch_size=256, lr=1e-2, seed=seed)
    x_T = torch.randn(1000, 2, generator=torch.Generator().manual_seed(seed + 2))
    samples = ddim_sample(model, schedule, x_T=x_T, steps=sample_steps)
    precision, recall = knn_precision_recall(held_out, samples)
    tail = losses[-min(100, len(losses)):]
    result = Result(mmd_rbf(x_T, held_out), mmd_rbf(samples, held_out), precision, recall,
                    sum(tail) / len(tail))
    return result, held_out, x_T, samples


def plot(panels: dict[str, torch.Tensor], out: Path) -> None:
    """Scatter plots side by side, written atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for i, (ax, (title, pts)) in enumerate(zip(axes, panels.items(), strict=True)):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, color=f"C{i}")
        ax.set_title(title)
        ax.set_xlim(-2, 2), ax.set_ylim(-2, 2), ax.set_aspect("equal")
    save_png(fig, out, dpi=80)


def main(argv: Sequence[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="training steps")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--out", type=Path, default=Path("swissroll_diffusion.png"))
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result, data, noise, samples = run(args.steps, args.sample_steps)
    finally:
        torch.set_num_threads(threads)
    plot({"data (held out)": data, "x_T ~ N(0, I)": noise,
          f"DDIM samples ({args.sample_steps} steps)": samples}, args.out)
    print(
        f"swiss roll: MMD² noise {result.noise_mmd:.5f} -> samples {result.sample_mmd:.5f} "
        f"(ratio {result.sample_mmd / result.noise_mmd:.3f}); k-NN precision "
        f"{result.precision:.3f} recall {result.recall:.3f}; loss {result.final_loss:.4f}; "
        f"wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
