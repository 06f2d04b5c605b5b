"""N-way K-shot episodes over any labelled data set.

An *episode* draws ``n_way`` classes, then ``k_shot`` support and ``n_query`` query examples of
each (without replacement); labels are renumbered ``0 .. n_way-1`` in the order the classes
were drawn. :func:`split_classes` makes disjoint meta-train / meta-test class sets, and
:meth:`EpisodeSampler.episodes` a fixed-seed episode list for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from netarchitect.meta.errors import FewShotError, check_positive

__all__ = ["Episode", "EpisodeMixture", "EpisodeSampler", "split_classes", "stack_episodes"]


@dataclass(frozen=True)
class Episode:
    """One few-shot task.

    Shapes:
        support_x: ``(n_way * k_shot, *feature)``; support_y: ``(n_way * k_shot,)``;
        query_x: ``(n_way * n_query, *feature)``; query_y: ``(n_way * n_query,)``;
        classes: the original class ids, ``classes[i]`` has episode label ``i``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: tuple[int, ...]

    @property
    def n_way(self) -> int:
        return len(self.classes)


def stack_episodes(episodes: Sequence[Episode]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stack same-shaped episodes into a meta-batch ``(T, ...)``: support x/y, query x/y."""
    if not episodes:
        raise FewShotError("episodes", "needs at least one episode")
    fields = ("support_x", "support_y", "query_x", "query_y")
    return tuple(torch.stack([getattr(e, f) for e in episodes]) for f in fields)  # type: ignore[return-value]


def split_classes(
    labels: Tensor | np.ndarray | Sequence[int], n_test: int, *, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split the distinct classes of ``labels`` into disjoint (meta-train, meta-test) lists."""
    classes = sorted(int(c) for c in np.unique(np.asarray(labels)))
    check_positive(n_test=n_test)
    if n_test >= len(classes):
        raise FewShotError("n_test", f"{n_test} leaves no meta-train class of {len(classes)}")
    order = np.random.default_rng(seed).permutation(len(classes))
    test = sorted(classes[i] for i in order[:n_test])
    train = sorted(classes[i] for i in order[n_test:])
    return train, test


class EpisodeSampler:
    """Draw N-way K-shot episodes from ``(x, y)``, restricted to ``classes`` if given.

    ``seed`` seeds the sampler's own stream (:meth:`sample`); :meth:`episodes` builds a list
    from its own seed, independent of that stream, so evaluation sets are reproducible.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor | np.ndarray | Sequence[int],
        *,
        n_way: int,
        k_shot: int,
        n_query: int,
        classes: Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        check_positive(n_way=n_way, k_shot=k_shot, n_query=n_query)
        labels = np.asarray(y).reshape(-1)
        if len(labels) != len(x):
            raise FewShotError("y", f"has {len(labels)} labels for {len(x)} examples")
        present = {int(c) for c in np.unique(labels)}
        chosen = sorted(present) if classes is None else [int(c) for c in classes]
        if len(set(chosen)) != len(chosen):
            raise FewShotError("classes", f"lists a class twice: {chosen}")
        missing = sorted(set(chosen) - present)
        if missing:
            raise FewShotError("classes", f"{missing[:5]} do not occur in y")
        if n_way > len(chosen):
            raise FewShotError("n_way", f"{n_way} ways but only {len(chosen)} classes")
        self.index = {c: np.flatnonzero(labels == c) for c in chosen}
        need = k_shot + n_query
        small = min(chosen, key=lambda c: len(self.index[c]))
        if len(self.index[small]) < need:
            raise FewShotError(
                "k_shot",
                f"k_shot + n_query = {need} but class {small} has only "
                f"{len(self.index[small])} examples",
            )
        self.x = x
        self.classes = chosen
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.rng = np.random.default_rng(seed)

    def _draw(self, rng: np.random.Generator) -> Episode:
        picked = rng.choice(len(self.classes), size=self.n_way, replace=False)
        classes = tuple(self.classes[i] for i in picked)
        k = self.k_shot
        rows = np.stack(
            [rng.choice(self.index[c], size=k + self.n_query, replace=False) for c in classes]
        )  # (n_way, k + n_query)
        support, query = torch.from_numpy(rows[:, :k]), torch.from_numpy(rows[:, k:])
        way = torch.arange(self.n_way)
        return Episode(
            support_x=self.x[support.reshape(-1)],
            support_y=way.repeat_interleave(k),
            query_x=self.x[query.reshape(-1)],
            query_y=way.repeat_interleave(self.n_query),
            classes=classes,
        )

    def sample(self) -> Episode:
        """The next episode of this sampler's stream."""
        return self._draw(self.rng)

    def sample_batch(self, meta_batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``meta_batch`` episodes stacked as by :func:`stack_episodes`."""
        check_positive(meta_batch=meta_batch)
        return stack_episodes([self.sample() for _ in range(meta_batch)])

    def episodes(self, n: int, *, seed: int = 0) -> list[Episode]:
        """A fixed list of ``n`` episodes determined by ``seed`` alone."""
        check_positive(n=n)
        rng = np.random.default_rng(seed)
        return [self._draw(rng) for _ in range(n)]


class EpisodeMixture:
    """Round-robin over samplers (e.g. glyph tasks and digit tasks).

    :meth:`sample` and :meth:`sample_batch` draw from the next sampler in turn, so a training
    loop that takes one episode (or one meta-batch) per step alternates between the sources;
    ``turns`` (one positive int per sampler) gives sampler ``i`` that many consecutive turns
    per round. The samplers must share ``(n_way, k_shot, n_query)`` (a MAML head has one
    width) unless ``mixed_shapes=True`` (prototypical networks take any ``n_way``); then the
    differing attributes are ``None``.
    """

    def __init__(
        self,
        *samplers: EpisodeSampler,
        turns: Sequence[int] | None = None,
        mixed_shapes: bool = False,
    ) -> None:
        if not samplers:
            raise FewShotError("samplers", "needs at least one sampler")
        shapes = [(s.n_way, s.k_shot, s.n_query) for s in samplers]
        if len(set(shapes)) > 1 and not mixed_shapes:
            raise FewShotError(
                "samplers", f"differ in (n_way, k_shot, n_query): {sorted(set(shapes))}"
            )
        turns = [1] * len(samplers) if turns is None else list(turns)
        if len(turns) != len(samplers):
            raise FewShotError("turns", f"has {len(turns)} entries for {len(samplers)} samplers")
        for t in turns:
            check_positive(turns=t)
        self.samplers = samplers
        self.n_way, self.k_shot, self.n_query = (
            shapes[0][i] if len({s[i] for s in shapes}) == 1 else None for i in range(3)
        )
        self._order = [i for i, t in enumerate(turns) for _ in range(t)]
        self._next = 0

    def _turn(self) -> EpisodeSampler:
        sampler = self.samplers[self._order[self._next]]
        self._next = (self._next + 1) % len(self._order)
        return sampler

    def sample(self) -> Episode:
        return self._turn().sample()

    def sample_batch(self, meta_batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self._turn().sample_batch(meta_batch)
