"""Concept-bottleneck models (Koh et al. 2020): concept predictions, interventions, and
label-derived concepts for scikit-learn's digits.

:data:`DIGIT_CONCEPTS` gives each digit six yes/no concepts that follow from its label
(how a person describes the glyph or the number): ``even``, ``greater_than_4``,
``has_loop`` (0, 6, 8, 9), ``prime`` (2, 3, 5, 7), ``straight_strokes`` (1, 4, 7: drawn
without curves) and ``multiple_of_3`` (0, 3, 6, 9). The ten rows are distinct, so the true
concepts alone determine the digit: intervening on all of them must give every label right.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError
from ..layers.concept import ConceptBottleneckHead

__all__ = [
    "DIGIT_CONCEPTS",
    "DIGIT_CONCEPT_NAMES",
    "concept_accuracy",
    "concept_predictions",
    "find_concept_head",
    "intervention",
    "intervention_curve",
]

DIGIT_CONCEPT_NAMES = (
    "even", "greater_than_4", "has_loop", "prime", "straight_strokes", "multiple_of_3",
)
_LOOP, _PRIME, _STRAIGHT = {0, 6, 8, 9}, {2, 3, 5, 7}, {1, 4, 7}
#: ``(10, 6)`` 0/1 concepts of each digit, columns as :data:`DIGIT_CONCEPT_NAMES`.
DIGIT_CONCEPTS = tuple(
    (int(d % 2 == 0), int(d > 4), int(d in _LOOP), int(d in _PRIME), int(d in _STRAIGHT),
     int(d % 3 == 0))
    for d in range(10)
)


def find_concept_head(model: nn.Module) -> ConceptBottleneckHead:
    """The model's (single) :class:`ConceptBottleneckHead`."""
    heads = [m for m in model.modules() if isinstance(m, ConceptBottleneckHead)]
    if len(heads) != 1:
        raise NetArchitectError(
            f"{type(model).__name__} has {len(heads)} concept_bottleneck_head modules; "
            "expected exactly 1"
        )
    return heads[0]


@torch.no_grad()
def concept_predictions(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Concept probabilities ``(B, num_concepts)`` and label logits ``(B, num_classes)`` of
    ``model`` on ``x`` (eval mode)."""
    head = find_concept_head(model)
    seen: list[Tensor] = []
    handle = head.register_forward_hook(
        lambda m, args, out: seen.append(torch.sigmoid(m.concept_logits(args[0])))
    )
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0], logits


def concept_accuracy(model: nn.Module, x: Tensor, concepts: Tensor) -> Tensor:
    """Per-concept accuracy ``(num_concepts,)`` of thresholding the probabilities at 0.5."""
    probs, _ = concept_predictions(model, x)
    return ((probs > 0.5) == (concepts > 0.5)).float().mean(0)


@contextlib.contextmanager
def intervention(
    model: nn.Module, concepts: Tensor, mask: Tensor | None = None
) -> Iterator[None]:
    """Within the block the concept head of ``model`` uses the true ``concepts`` where
    ``mask`` is true (all by default) instead of its predictions (test-time intervention)."""
    head = find_concept_head(model)

    def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        return module(args[0], concepts, mask) if module is head and len(args) == 1 else out

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def intervention_curve(
    model: nn.Module,
    x: Tensor,
    concepts: Tensor,
    labels: Tensor,
    order: Sequence[int] | None = None,
) -> list[float]:
    """Label accuracy after intervening on the first ``k`` concepts of ``order`` (default
    ``0..C-1``) for ``k = 0 … C`` (Koh et al.'s intervention curve)."""
    head = find_concept_head(model)
    order = list(range(head.num_concepts)) if order is None else list(order)
    was_training = model.training
    model.eval()
    accs = []
    for k in range(len(order) + 1):
        mask = torch.zeros(head.num_concepts, dtype=torch.bool)
        mask[order[:k]] = True
        with intervention(model, concepts, mask):
            pred = model(x).argmax(-1)
        accs.append(float((pred == labels).float().mean()))
    model.train(was_training)
    return accs
