"""The ``digits-fewshot`` search task: find a ProtoNet embedding network for 5-way 5-shot digits.

A candidate network maps an image ``(1, 16, 16)`` to an embedding of ``num_classes``
(= :data:`EMBED_DIM`) numbers; the search trains it as a prototypical network and scores it
by episode accuracy. The data need no download:

* meta-train: procedural glyph classes ``0 .. 599`` and digits 0-4 (all but a held-out
  third of their images), alternating episode by episode;
* validation: fixed-seed episodes on held-out glyph classes ``600 .. 799`` and on the
  held-out images of digits 0-4 (the metric is the mean of the two accuracies);
* test: 600 fixed-seed episodes on digits 5-9, classes no candidate ever saw.

An *epoch* of :meth:`FewShotTask.fit` is ``episodes_per_epoch`` training episodes; the
learning rate warms up then follows a cosine, as in the search's classification trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import SpecError
from ..search.tasks import register_task
from .digits import load_digits_images
from .episodes import Episode, EpisodeMixture, EpisodeSampler
from .evaluate import evaluate_episodes
from .glyphs import make_glyphs
from .protonet import ProtoNet

if TYPE_CHECKING:
    from ..search.trainer import TrainConfig, TrainResult
    from ..spec import NetworkSpec

__all__ = ["EMBED_DIM", "FewShotTask", "digits_fewshot"]

#: Embedding width of a candidate (the ``$num_classes`` of the space file).
EMBED_DIM = 64
IMG = 16
DIGIT_OFFSET = 1000  # digit d is class 1000 + d next to the glyph classes


@functools.lru_cache(maxsize=2)
def _data(glyph_classes: int, per_class: int) -> tuple[Tensor, Tensor]:
    """Glyphs ``0 .. glyph_classes-1`` and digits ``DIGIT_OFFSET + d``, all ``(N, 1, 16, 16)``."""
    gx, gy = make_glyphs(glyph_classes, per_class, size=IMG, seed=0)
    dx, dy = load_digits_images(IMG)
    return torch.cat([gx, dx]), torch.cat([gy, dy + DIGIT_OFFSET])


class FewShotTask:
    """ProtoNet episode accuracy of a candidate embedding network (see the module docstring).

    ``n_way``/``k_shot`` shape every episode; ``val_episodes``/``test_episodes`` are the fixed
    evaluation lists (seeds 1 and 2 for validation, 3 for test).
    """

    default_space = "fewshot_space.yaml"

    def __init__(
        self,
        name: str = "digits-fewshot",
        *,
        n_way: int = 5,
        k_shot: int = 5,
        n_query: int = 5,
        train_glyphs: int = 600,
        val_glyphs: int = 200,
        per_class: int = 20,
        episodes_per_epoch: int = 50,
        val_episodes: int = 100,
        test_episodes: int = 600,
        embed_dim: int = EMBED_DIM,
    ) -> None:
        self.name, self.num_classes = name, embed_dim
        self.input_shape: tuple[int, ...] = (1, IMG, IMG)
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.episodes_per_epoch = episodes_per_epoch
        self.x, self.y = _data(train_glyphs + val_glyphs, per_class)
        digits_train, digits_val = self._split_digit_images(range(5))
        glyphs_train = list(range(train_glyphs))
        glyphs_val = list(range(train_glyphs, train_glyphs + val_glyphs))
        self.train_index = np.concatenate([np.flatnonzero(self.y < train_glyphs), digits_train])
        self._counts = (train_glyphs, val_glyphs, len(digits_val))

        def sampler(classes: Sequence[int], rows: np.ndarray | None = None, **kw) -> EpisodeSampler:
            x, y = (self.x, self.y) if rows is None else (self.x[rows], self.y[rows])
            q = kw.pop("n_query", 15)
            return EpisodeSampler(
                x, y, n_way=n_way, k_shot=k_shot, n_query=q, classes=classes, **kw
            )

        digits = [DIGIT_OFFSET + d for d in range(5)]
        self._train_parts = (
            lambda seed: sampler(glyphs_train, n_query=n_query, seed=seed),
            lambda seed: sampler(digits, digits_train, n_query=n_query, seed=seed + 1),
        )
        self.val_sets = (
            sampler(glyphs_val).episodes(val_episodes, seed=1),
            sampler(digits, digits_val).episodes(val_episodes, seed=2),
        )
        tests = [DIGIT_OFFSET + d for d in range(5, 10)]
        self.test_set = sampler(tests).episodes(test_episodes, seed=3)

    def _split_digit_images(self, digits: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of digits ``digits``: two thirds for training, a third for validation."""
        rng = np.random.default_rng(0)
        train, val = [], []
        for d in digits:
            rows = rng.permutation(np.flatnonzero(self.y.numpy() == DIGIT_OFFSET + d))
            cut = 2 * len(rows) // 3
            train.append(rows[:cut])
            val.append(rows[cut:])
        return np.concatenate(train), np.concatenate(val)

    def describe(self) -> str:
        train, val, held = self._counts
        return (
            f"{self.name}: {self.n_way}-way {self.k_shot}-shot ProtoNet episodes, embedding "
            f"{self.num_classes}, inputs 1×{IMG}×{IMG}; meta-train {train} glyph classes + digits "
            f"0-4, validation {val} unseen glyph classes + {held} held-out digit 0-4 images, "
            f"test {len(self.test_set)} episodes on digits 5-9"
        )

    def check_model(self, spec: NetworkSpec) -> None:
        """One output of per-sample shape ``(num_classes,)``: the embedding."""
        from ..network import infer_shapes

        if len(spec.outputs) != 1:
            raise SpecError(
                f"outputs: an embedding network has one output, got {list(spec.outputs)}",
                path="outputs",
            )
        shape = tuple(infer_shapes(spec)[spec.outputs[0]])
        if shape != (self.num_classes,):
            raise SpecError(
                f"outputs: the network outputs per-sample shape {list(shape)}; a few-shot "
                f"embedding network must output [{self.num_classes}] (the embedding width)",
                path="outputs",
            )

    # -- training and evaluation -----------------------------------------------------------------
    def _evaluate(self, net: ProtoNet, sets: Sequence[Sequence[Episode]]) -> tuple[float, float]:
        """Mean accuracy and query cross-entropy over the episode lists (eval mode)."""
        was_training = net.encoder.training
        net.eval()
        accs, losses = [], []
        for episodes in sets:
            accs.append(evaluate_episodes(net, episodes).mean)
            with torch.no_grad():
                losses.append(
                    sum(
                        F.cross_entropy(
                            net(e.support_x, e.support_y, e.query_x, e.n_way), e.query_y
                        )
                        for e in episodes
                    ).item()
                    / len(episodes)
                )
        net.train(was_training)
        return sum(accs) / len(accs), sum(losses) / len(losses)

    def fit(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        on_epoch: Callable[[int, float], bool] | None = None,
    ) -> TrainResult:
        """Episodic ProtoNet training (AdamW, warm-up then cosine, optional augmentation); the
        best validation epoch's weights are restored."""
        from ..search.trainer import augment_batch, fit_loop

        episodes = EpisodeMixture(*(part(cfg.seed) for part in self._train_parts))
        net = ProtoNet(model)

        def batches(gen: torch.Generator) -> Iterator[tuple[tuple[Any, ...], Tensor]]:
            for _ in range(self.episodes_per_epoch):
                ep = episodes.sample()
                sx = augment_batch(ep.support_x, cfg.augment, gen)
                qx = augment_batch(ep.query_x, cfg.augment, gen)
                yield (sx, ep.support_y, qx, ep.n_way), ep.query_y

        result = fit_loop(
            net,
            cfg,
            steps_per_epoch=self.episodes_per_epoch,
            batches=batches,
            forward=lambda m, episode: m(*episode),
            validate=lambda m: self._evaluate(m, self.val_sets),
            on_epoch=on_epoch,
        )
        model.eval()
        return result

    def test(self, model: nn.Module) -> tuple[float, float]:
        """Mean 5-way 5-shot accuracy and query cross-entropy on the digits 5-9 episodes."""
        return self._evaluate(ProtoNet(model), [self.test_set])

    def proxy_inputs(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` meta-training images drawn with ``generator``."""
        pick = torch.randperm(len(self.train_index), generator=generator)[:n]
        return self.x[torch.from_numpy(self.train_index)[pick]]

    def cost_inputs(self) -> None:
        """Costs are measured on one image of the declared input shape."""


@register_task("digits-fewshot")
def digits_fewshot() -> FewShotTask:
    """5-way 5-shot digits 5-9 after meta-training on procedural glyphs and digits 0-4."""
    return FewShotTask()
