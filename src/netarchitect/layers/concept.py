"""Concept-bottleneck head (Koh et al., "Concept Bottleneck Models", ICML 2020).

Features are mapped to ``num_concepts`` concept logits ``c``; the label is predicted from
the concept probabilities ``σ(c)`` alone, so a person can read (and correct) what the model
believes before it decides. Training helpers and intervention measurements are in
:mod:`netarchitect.interpret.concepts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import check_non_negative, check_positive_int, example_tensor
from .basic import Linear

__all__ = ["MODES", "ConceptBottleneckHead"]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: Training modes: how the label predictor ``f`` sees the concepts while training.
MODES = {
    "joint": "f(σ(c)), gradients through the concepts; loss CE + λ·BCE",
    "sequential": "f(stop_grad σ(c)): the concept predictor learns from BCE only",
    "independent": "f(true concepts) in training, f(σ(c)) at test time",
}


@register_block("concept_bottleneck_head")
class ConceptBottleneckHead(nn.Module):
    """Concept bottleneck: concept logits ``c = g(x)`` (linear), label logits
    ``y = f(σ(c))`` over ``out_features`` classes (linear, or an MLP with
    ``hidden_features``). ``mode`` chooses joint, sequential or independent training
    (:data:`MODES`); ``concept_weight`` is ``λ``.

    ``class_concepts`` (``out_features`` rows of ``num_concepts`` 0/1 values) gives each
    class's true concepts when they follow from the label; then :meth:`auxiliary_loss`
    (``λ · BCE(c, concepts[y])``, plus the independent label loss) works with class labels
    alone. ``forward(x, concepts=, mask=)`` *intervenes*: where ``mask`` is true (all
    concepts by default) the given true concept values replace the predicted probabilities.

    Shapes:
        ``(*, in_features)`` (``concepts``: ``(*, num_concepts)``, ``mask``: broadcastable
        bool) -> label logits ``(*, out_features)``; :attr:`details` keeps ``concept_logits``
        of the last forward in training mode.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        num_concepts: int,
        hidden_features: int = 0,
        mode: str = "joint",
        concept_weight: float = 1.0,
        class_concepts: Sequence[Sequence[float]] | None = None,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        num_classes = out_features
        for name, value in (("in_features", in_features), ("out_features", out_features),
                            ("num_concepts", num_concepts)):
            check_positive_int(name, value)
        check_non_negative("hidden_features", hidden_features)
        check_non_negative("concept_weight", concept_weight)
        if mode not in MODES:
            raise SpecError(f"mode={mode!r}: use one of {', '.join(MODES)}", path="mode")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_classes, self.num_concepts, self.mode = num_classes, num_concepts, mode
        self.concept_weight = float(concept_weight)
        self.concept = Linear(in_features, num_concepts, **factory)
        if hidden_features:
            self.label: nn.Module = nn.Sequential(
                Linear(num_concepts, int(hidden_features), **factory),
                nn.ReLU(),
                Linear(int(hidden_features), num_classes, **factory),
            )
        else:
            self.label = Linear(num_concepts, num_classes, **factory)
        table = self._table = None
        if class_concepts is not None:
            table = torch.as_tensor(class_concepts, dtype=torch.float32)
            if table.shape != (num_classes, num_concepts) or not (
                (table == 0) | (table == 1)
            ).all():
                raise SpecError(
                    f"class_concepts: shape {tuple(table.shape)}, expected 0/1 values of shape "
                    f"({num_classes}, {num_concepts})",
                    path="class_concepts",
                )
            self._table = table
            table = torch.empty(table.shape, device=device, dtype=dtype)
        self.register_buffer("class_concepts", table, persistent=False)
        self.details: dict[str, Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.class_concepts is not None and self.class_concepts.device.type != "meta":
            with torch.no_grad():
                self.class_concepts.copy_(self._table)
        self.concept.reset_parameters()
        for m in self.label.modules():
            if isinstance(m, Linear):
                m.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        table = [[0, 1], [1, 0], [1, 1]]
        return Example(
            {"in_features": 6, "out_features": 3, "num_concepts": 2, "hidden_features": 4,
             "class_concepts": table},
            (example_tensor(3, 6),),
        )

    def concept_logits(self, x: Tensor) -> Tensor:
        """``c = g(x)`` ``(*, num_concepts)``."""
        return self.concept(x)

    def forward(
        self, x: Tensor, concepts: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        c = self.concept(x)
        probs = torch.sigmoid(c)
        if concepts is not None:
            if concepts.shape != probs.shape:
                raise ValueError(
                    f"concepts: shape {tuple(concepts.shape)}, expected {tuple(probs.shape)}"
                )
            given = concepts.to(probs.dtype)
            probs = given if mask is None else torch.where(mask, given, probs)
        if self.training:
            self.details = {"concept_logits": c}
            if self.mode != "joint":
                probs = probs.detach()
        out = self.label(probs)
        if self.training and self.mode == "independent":
            out = out.detach()  # f learns from the true concepts in auxiliary_loss
        return out

    def auxiliary_loss(self, target: Tensor) -> Tensor:
        """``λ · BCE(c, concepts[target])`` for the last training forward (and, in
        ``independent`` mode, the label loss ``CE(f(concepts[target]), target)``)."""
        if self.class_concepts is None:
            raise RuntimeError(
                "ConceptBottleneckHead.auxiliary_loss needs class_concepts (label-derived "
                "concepts); otherwise use netarchitect.interpret.concepts.concept_loss"
            )
        if "concept_logits" not in self.details:
            raise RuntimeError("ConceptBottleneckHead.auxiliary_loss: no training forward yet")
        true = self.class_concepts[target]  # (B, num_concepts)
        c = self.details["concept_logits"]
        loss = self.concept_weight * F.binary_cross_entropy_with_logits(c, true.to(c.dtype))
        if self.mode == "independent":
            loss = loss + F.cross_entropy(self.label(true.to(c.dtype)), target)
        return loss

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles drop the recorded tensors (and their autograd graph)."""
        state = dict(self.__dict__)
        state["details"] = {}
        return state

    def extra_repr(self) -> str:
        return f"concepts={self.num_concepts}, num_classes={self.num_classes}, mode={self.mode}"
