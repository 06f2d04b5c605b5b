"""Train reduced-width vision models on scikit-learn's digits and compare them in one table.

Each 8×8 digit is scaled to [0, 1] and upsampled to 32×32 (one channel). Every model is
a registered family at reduced width/depth, trained on 75% of the data (random shifts of
up to 3 pixels; AdamW, warm-up + cosine decay that ends at the epoch count or the time
budget, whichever comes first; BatchNorm statistics recomputed at the end) and tested
on the rest. The table lists test accuracy, parameters, multiply-accumulates per image
(our ``count_flops``) and training time.

    python examples/train_digits.py            # full budget (each model < 60 s)
    python examples/train_digits.py --quick    # a smoke run of a few seconds
    python examples/train_digits.py --plot digits.png   # accuracy against MACs and parameters
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import netarchitect as na
from netarchitect.analysis import count_flops

IMG = 32


@dataclass(frozen=True)
class Recipe:
    """A registered model at reduced size and how to train it."""

    model: str
    overrides: dict[str, Any]
    lr: float
    epochs: int
    label_smoothing: float = 0.0


#: MobileNetV2 at half depth with expansion 4 (the paper's table: t, c, n, s).
_MOBILENET_V2_REDUCED = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 2, 2),
    (4, 64, 2, 2),
    (4, 96, 1, 1),
    (4, 160, 1, 2),
    (4, 320, 1, 1),
)

MODELS: dict[str, Recipe] = {
    "ResNet": Recipe("resnet18", {"widths": (16, 32, 64, 128), "stem_width": 16}, 3e-3, 6),
    "MobileNetV2": Recipe(
        "mobilenet_v2",
        {"width_mult": 0.5, "settings": _MOBILENET_V2_REDUCED, "drop_rate": 0.1},
        6e-3,
        10,
    ),
    "EfficientNet": Recipe(
        "efficientnet_b0",
        {"width_mult": 0.5, "depth_mult": 0.3, "drop_rate": 0.1, "drop_path_rate": 0.0},
        4e-3,
        9,
    ),
    "ConvNeXt": Recipe(
        "convnext_tiny",
        {"depths": (1, 1, 2, 1), "dims": (32, 64, 128, 256), "kernel_size": 3},
        2e-3,
        12,
    ),
    "ViT": Recipe(
        "vit_s_16",
        {
            "patch_size": 8,
            "embed_dim": 128,
            "depth": 2,
            "num_heads": 4,
            "mlp_ratio": 2.0,
            "global_pool": "avg",
        },
        2e-3,
        36,
        0.1,
    ),
}


@dataclass
class Result:
    name: str
    model: str
    accuracy: float
    params: int
    macs: int
    seconds: float


def load_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as ``(N, 1, 32, 32)`` floats in [0, 1] with labels, split 75/25 (stratified)."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(IMG, IMG), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target)
    idx_train, idx_test = train_test_split(
        range(len(y)), test_size=0.25, random_state=seed, stratify=digits.target
    )
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def shift(x: torch.Tensor, g: torch.Generator, pixels: int = 3) -> torch.Tensor:
    """Translate each image by up to ``pixels`` in each direction (the only augmentation)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    return padded[
        torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[:, None, None], rows, cols
    ]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        (model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(256), y.split(256))
    )
    return correct / len(y)


def lr_factor(progress: float, warmup: float = 0.1) -> float:
    """Linear warm-up then cosine decay, as a function of training progress in [0, 1]."""
    return min(1.0, progress / warmup) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Replace BatchNorm running statistics by their average over batches of ``x`` ("precise
    BN"), so evaluation uses the statistics of the final weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    if norms:
        model.train()
        for xb in x.split(256):
            model(xb)


def train(
    model: nn.Module,
    data: Sequence[torch.Tensor],
    recipe: Recipe,
    *,
    epochs: int,
    budget_s: float,
    seed: int,
    batch_size: int = 32,
) -> float:
    """AdamW with warm-up + cosine decay over ``epochs`` or ``budget_s`` seconds, whichever
    ends first (progress is the larger of the two fractions); returns the seconds spent."""
    x_train, y_train = data[0], data[1]
    g = torch.Generator().manual_seed(seed)
    per_epoch = len(y_train) // batch_size
    total = epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    start = time.perf_counter()
    step = 0
    while step < total:
        model.train()
        order = torch.randperm(len(y_train), generator=g)[: per_epoch * batch_size]
        for batch in order.split(batch_size):
            progress = max(step / total, (time.perf_counter() - start) / budget_s)
            if progress >= 1:
                step = total
                break
            for group in opt.param_groups:
                group["lr"] = recipe.lr * lr_factor(progress)
            loss = F.cross_entropy(
                model(shift(x_train[batch], g)),
                y_train[batch],
                label_smoothing=recipe.label_smoothing,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    recalibrate_batchnorm(model, x_train)
    return time.perf_counter() - start


def run(
    names: Sequence[str],
    *,
    quick: bool = False,
    seed: int = 0,
    budget_s: float = 50.0,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Train each model of ``names`` (keys of :data:`MODELS`) and return the results."""
    data = load_data(seed)
    data = (data[0].contiguous(memory_format=torch.channels_last), *data[1:])
    results = []
    for name in names:
        recipe = MODELS[name]
        kwargs = {"in_chans": 1, "num_classes": 10, "img_size": IMG, **recipe.overrides}
        model = na.create_model(recipe.model, seed=seed, **kwargs)
        macs = count_flops(model.eval(), torch.zeros(1, 1, IMG, IMG)).macs
        model = model.to(memory_format=torch.channels_last)  # faster (depthwise) convolutions
        seconds = train(
            model,
            data,
            recipe,
            epochs=1 if quick else recipe.epochs,
            budget_s=2.0 if quick else budget_s,
            seed=seed,
        )
        acc = accuracy(model, data[2], data[3])
        results.append(Result(name, recipe.model, acc, na.count_params(model).total, macs, seconds))
        log(f"{name}: test accuracy {acc:.3f} after {seconds:.1f} s")
    return results


def table(results: Sequence[Result]) -> Table:
    out = Table(title=f"sklearn digits ({IMG}×{IMG}), reduced-width models")
    for column in ("model", "registered as", "test acc", "params", "MACs / image", "train s"):
        out.add_column(column, justify="left" if column in ("model", "registered as") else "right")
    for r in results:
        out.add_row(
            r.name,
            r.model,
            f"{100 * r.accuracy:.1f}%",
            f"{r.params:,}",
            f"{r.macs / 1e6:.2f} M",
            f"{r.seconds:.1f}",
        )
    return out


def main(argv: Sequence[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short epoch per model")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="small convolutions gain little from more threads, and an "
        "oversubscribed machine makes OpenMP threads spin",
    )
    parser.add_argument("--plot", metavar="PNG", help="write accuracy vs MACs to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results = run(args.models, quick=args.quick, seed=args.seed)
    Console(width=120).print(table(results))
    if args.plot:
        plot(results, args.plot)
    return results


def plot(results: Sequence[Result], path: str) -> None:
    """Test accuracy against MACs per image (log scale), marker area ∝ parameters."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    largest = max(r.params for r in results)
    for r in results:
        ax.scatter(r.macs / 1e6, 100 * r.accuracy, s=40 + 400 * r.params / largest, alpha=0.7)
        ax.annotate(
            f"{r.name}\n{r.params / 1e3:.0f}k params",
            (r.macs / 1e6, 100 * r.accuracy),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
        )
    ax.set(
        xscale="log",
        xlabel="MACs per image (M)",
        ylabel="test accuracy (%)",
        title=f"digits {IMG}×{IMG}: reduced-width models",
    )
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.margins(x=0.25, y=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
