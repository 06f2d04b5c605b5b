"""The few-shot benchmark: data, fixed evaluation episodes, the raw-pixel baseline, and one
meta-training recipe per method (ProtoNet, MAML, first-order MAML, Meta-SGD, ANIL).

Data (no download, :func:`benchmark_data`): 1,000 procedural glyph classes of 20 images
(classes ``0 .. 999``), scikit-learn's digits as ``1000 + d`` and the 40 rotated /
transposed variants of digits 0-4 (:func:`~netarchitect.meta.augment.rotated_classes`) as
``2000 ..``; all ``(1, 16, 16)``. Meta-training sees glyph classes ``0 .. 799`` and the
digit 0-4 variants; evaluation (:func:`eval_sets`) is 600 fixed-seed 5-way episodes on the
held-out glyph classes ``800 .. 999`` and, cross-domain, on digits 5-9.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from netarchitect.meta.augment import rotated_classes
from netarchitect.meta.digits import load_digits_images
from netarchitect.meta.episodes import Episode, EpisodeMixture, EpisodeSampler
from netarchitect.meta.errors import FewShotError
from netarchitect.meta.evaluate import FewShotResult, evaluate_episodes
from netarchitect.meta.glyphs import make_glyphs
from netarchitect.meta.maml import MAML, train_maml
from netarchitect.meta.protonet import ProtoNet, train_protonet

__all__ = [
    "METHODS",
    "RECIPES",
    "Recipe",
    "benchmark_data",
    "conv_net",
    "eval_sets",
    "meta_train",
    "pixel_baseline",
    "train_sampler",
]

GLYPHS, TRAIN_GLYPHS, PER_CLASS, SIZE = 1000, 800, 20, 16
DIGITS, ROTATED = 1000, 2000  # label offsets
EVAL_SEEDS = {"digits": 1, "glyphs": 2}
METHODS = ("protonet", "maml", "fomaml", "metasgd", "anil")


@functools.lru_cache(maxsize=1)
def benchmark_data() -> tuple[Tensor, Tensor]:
    """Glyphs, digits and rotated digits 0-4: ``x (N, 1, 16, 16)``, ``y (N,)``."""
    gx, gy = make_glyphs(GLYPHS, PER_CLASS, size=SIZE, seed=0)
    dx, dy = load_digits_images(SIZE)
    dy = dy + DIGITS
    rx, ry = rotated_classes(dx, dy, [DIGITS + d for d in range(5)], offset=ROTATED)
    return torch.cat([gx, dx, rx]), torch.cat([gy, dy, ry])


def eval_sets(
    x: Tensor, y: Tensor, *, episodes: int = 600, k_shot: int = 5, n_query: int = 15
) -> dict[str, list[Episode]]:
    """The fixed 5-way evaluation episodes on digits 5-9 and held-out glyph classes."""
    classes = {
        "digits": [DIGITS + d for d in range(5, 10)],
        "glyphs": list(range(TRAIN_GLYPHS, GLYPHS)),
    }
    return {
        name: EpisodeSampler(x, y, n_way=5, k_shot=k_shot, n_query=n_query, classes=c).episodes(
            episodes, seed=EVAL_SEEDS[name]
        )
        for name, c in classes.items()
    }


def pixel_baseline(support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
    """The no-learning baseline: negative Euclidean distance to each class's mean raw image."""
    protos = torch.stack([support_x[support_y == c].flatten(1).mean(0) for c in range(n_way)])
    return -torch.cdist(query_x.flatten(1), protos)


def conv_net(
    channels: int, *, blocks: int = 4, pools: int = 2, running_stats: bool = True
) -> nn.Sequential:
    """Conv-``blocks`` (3×3 conv, BatchNorm, ReLU; 2×2 max-pool after the first ``pools``),
    flattened: ``(N, 1, 16, 16) -> (N, channels · (16 / 2^pools)²)``. MAML uses batch
    statistics only (``running_stats=False``: no buffers to adapt)."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1)]
        layers += [nn.BatchNorm2d(channels, track_running_stats=running_stats), nn.ReLU()]
        if i < pools:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten())


@dataclass(frozen=True)
class Recipe:
    """How one method meta-trains: ``steps`` Adam steps at ``lr`` (cosine decay); episodes of
    ``glyph_way`` / ``digit_way`` ways, ``n_query`` queries, glyph and digit-variant episodes
    taking ``turns`` consecutive steps each; MAML-family settings ``meta_batch``,
    ``inner_lr``, ``inner_steps``; the embedding is :func:`conv_net` of ``channels`` /
    ``pools``."""

    steps: int
    lr: float = 1e-3
    glyph_way: int = 5
    digit_way: int = 5
    n_query: int = 5
    turns: tuple[int, int] = (1, 1)
    meta_batch: int = 4
    inner_lr: float = 0.4
    inner_steps: int = 1
    channels: int = 32
    pools: int = 2


RECIPES: dict[str, Recipe] = {
    "protonet": Recipe(steps=600, glyph_way=20, digit_way=20),
    "maml": Recipe(steps=200, lr=3e-3),
    "fomaml": Recipe(steps=200, lr=3e-3, inner_lr=0.1, inner_steps=5),  # 1 step: 50% glyphs
    "metasgd": Recipe(steps=200, lr=3e-3),
    "anil": Recipe(steps=200, lr=3e-3),
}


def train_sampler(x: Tensor, y: Tensor, recipe: Recipe, *, seed: int = 0) -> EpisodeMixture:
    """Meta-training episodes: glyph classes ``0 .. 799`` and the digit 0-4 variants."""
    digit_classes = sorted({int(c) for c in y[y >= ROTATED]})

    def sampler(classes: Sequence[int], way: int, s: int) -> EpisodeSampler:
        return EpisodeSampler(
            x, y, n_way=way, k_shot=5, n_query=recipe.n_query, classes=classes, seed=s
        )

    glyphs = sampler(range(TRAIN_GLYPHS), recipe.glyph_way, seed)
    digits = sampler(digit_classes, recipe.digit_way, seed + 1)
    return EpisodeMixture(glyphs, digits, turns=recipe.turns, mixed_shapes=True)


def meta_train(
    method: str, x: Tensor, y: Tensor, *, recipe: Recipe | None = None, seed: int = 0
) -> tuple[nn.Module, float]:
    """Meta-train ``method`` by its recipe (or ``recipe``): ``(classifier, seconds)``, the
    classifier usable with :func:`~netarchitect.meta.evaluate.evaluate_episodes`."""
    if method not in METHODS:
        raise FewShotError("method", f"{method!r} is not one of {', '.join(METHODS)}")
    recipe = recipe or RECIPES[method]
    torch.manual_seed(seed)
    start = time.perf_counter()
    if method == "protonet":
        net = ProtoNet(conv_net(recipe.channels, pools=recipe.pools))
        episodes = train_sampler(x, y, recipe, seed=seed)
        train_protonet(net, episodes, steps=recipe.steps, lr=recipe.lr, schedule="cosine")
        return net, time.perf_counter() - start
    recipe = replace(recipe, glyph_way=5, digit_way=5)  # one head width
    body = conv_net(recipe.channels, pools=recipe.pools, running_stats=False)
    width = recipe.channels * (SIZE // 2**recipe.pools) ** 2
    model = nn.Sequential(body, nn.Linear(width, 5))
    learner = MAML(
        model,
        inner_lr=recipe.inner_lr,
        inner_steps=recipe.inner_steps,
        first_order=method == "fomaml",
        learn_lr=method == "metasgd",
        adapt=["1"] if method == "anil" else None,
    )
    train_maml(
        learner,
        train_sampler(x, y, recipe, seed=seed),
        steps=recipe.steps,
        meta_batch=recipe.meta_batch,
        lr=recipe.lr,
        schedule="cosine",
    )
    learner.eval()
    return learner, time.perf_counter() - start


def evaluate_method(
    classifier: nn.Module, sets: dict[str, list[Episode]]
) -> dict[str, FewShotResult]:
    """:func:`~netarchitect.meta.evaluate.evaluate_episodes` on each evaluation set."""
    return {name: evaluate_episodes(classifier, episodes) for name, episodes in sets.items()}
