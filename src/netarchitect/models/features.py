"""Feature extraction: a classifier's stage outputs as a backbone for detection/segmentation.

``FeatureExtractor(model, out_indices)`` (or ``create_model(name, features_only=True)``)
wraps any model with the classifier contract (``feature_info`` and
``forward_intermediates``) and returns the selected stage outputs as a list. Its
classifier is dropped (``reset_classifier(0)``) and nodes after the last selected stage
never run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import SpecError

__all__ = ["FeatureExtractor"]


class FeatureExtractor(nn.Module):
    """The outputs of stages ``out_indices`` (indices into ``model.feature_info``; negative
    ones count from the end; ``None``: every stage) of ``model``, as a list.

    ``feature_info`` describes the selected stages (``num_chs``, ``reduction``, ``module``);
    :meth:`channels` and :meth:`reductions` list them.

    Shapes:
        input as ``model`` -> list of stage outputs: ``(B, C_i, H / r_i, W / r_i)`` for
        convolutional stages, ``(B, N, C_i)`` for token stages.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        if not (hasattr(model, "feature_info") and hasattr(model, "forward_intermediates")):
            raise TypeError(
                f"{type(model).__name__} has no feature_info/forward_intermediates: "
                "feature extraction needs a model with the classifier contract"
            )
        stages = len(model.feature_info)
        if out_indices is None:
            out_indices = range(stages)
        picked = []
        for i in out_indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -stages <= i < stages:
                raise SpecError(
                    f"out_indices: {i!r} is not a stage index of a model with {stages} stages "
                    f"(use 0..{stages - 1} or negative indices)",
                    path="out_indices",
                )
            picked.append(i % stages)
        if not picked or len(set(picked)) != len(picked):
            raise SpecError(
                f"out_indices={list(out_indices)} must be distinct and non-empty",
                path="out_indices",
            )
        self.out_indices = tuple(sorted(picked))
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)  # the classifier's weights are not needed
        self.model = model

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        info = self.model.feature_info
        return [info[i] for i in self.out_indices]

    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        return [f["num_chs"] for f in self.feature_info]

    def reductions(self) -> list[int]:
        """Stride of each returned feature map relative to the input."""
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, intermediates_only=True)
