"""Deep fully connected stacks: a 50-layer highway network trains, a plain one does not.

Both networks (``highway_net_50`` / ``plain_net_50``: a linear stem, 50 layers of width
64, a linear head) are trained side by side on scikit-learn's digits (64 features,
standardised) with the same optimiser, seed and steps. The plain stack's signal fades
through 50 ReLU layers with standard init, so its loss stays at chance (ln 10 ≈ 2.30);
the highway layers start close to the identity (transform-gate bias -2) and train.

    python examples/highway_depth.py [--depth 50] [--steps 300] [--plot highway.png]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import netarchitect as na


def load_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Standardised digits features and labels, split 75/25 (stratified)."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(digits.target)
    tr, te = train_test_split(
        range(len(y)), test_size=0.25, random_state=seed, stratify=digits.target
    )
    return x[tr], y[tr], x[te], y[te]


def train(
    layer: str, depth: int, steps: int, seed: int, data: Sequence[torch.Tensor]
) -> tuple[list[float], float]:
    """Train one stack; returns the training loss of every step and the test accuracy."""
    x_train, y_train, x_test, y_test = data
    model = na.create_model(
        "highway_net_50", depth=depth, layer=layer, in_features=64, num_classes=10, seed=seed
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        batch = torch.randint(0, len(y_train), (64,), generator=g)
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        acc = (model.eval()(x_test).argmax(1) == y_test).float().mean().item()
    return losses, acc


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[list[float], float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="write the loss curves to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny matrices: threads only add synchronisation
    data = load_data(args.seed)
    results = {
        layer: train(layer, args.depth, args.steps, args.seed, data)
        for layer in ("plain", "highway")
    }
    every = max(1, args.steps // 6)
    table = Table(title=f"{args.depth}-layer fully connected stacks on digits: training loss")
    table.add_column("step", justify="right")
    for layer in results:
        table.add_column(layer, justify="right")
    for step in sorted({*range(0, args.steps, every), args.steps - 1}):
        table.add_row(str(step), *(f"{results[layer][0][step]:.3f}" for layer in results))
    table.add_row("test acc", *(f"{100 * results[layer][1]:.1f}%" for layer in results))
    Console().print(table)
    if args.plot:
        plot(results, args.depth, args.plot)
    return results


def plot(results: dict[str, tuple[list[float], float]], depth: int, path: str) -> None:
    """Training-loss curves of both stacks, with the chance level and test accuracies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for layer, (losses, acc) in results.items():
        ax.plot(losses, label=f"{layer} (test acc {100 * acc:.1f}%)")
    ax.axhline(math.log(10), color="grey", linestyle=":", label="chance (ln 10)")
    ax.set(xlabel="step", ylabel="training loss", title=f"{depth}-layer stacks on digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
