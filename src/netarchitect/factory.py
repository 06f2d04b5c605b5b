"""``create_model``: build any registered model the same way.

Every registered model is a spec-built network, so every builder takes ``seed=``,
``device=`` and ``dtype=`` (and builds under ``with torch.device("meta"):``); the size
of the weights is checked against free memory before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import SpecError
from .registry import get_model_builder

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    output_head: str | None = None,
    head_args: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the registered model ``name``: weights from ``seed`` on ``device`` (default:
    torch's default device; ``"meta"`` allocates nothing) in ``dtype``, with ``overrides``
    passed to its builder (``num_classes=10``, ``vocab_size=...``). Arguments left ``None``
    are not passed, so a builder registered without them still works.

    ``features_only=True`` returns a
    :class:`~netarchitect.models.features.FeatureExtractor` over the stages
    ``out_indices`` (all by default) instead of the classifier. ``output_head`` (with
    ``head_args``) puts another head on a classifier: ``create_model("resnet18",
    num_classes=5, output_head="ordinal_head")`` (see :meth:`~netarchitect.models._classifier.ClassifierNetwork.reset_classifier`).
    """
    builder = get_model_builder(name)
    if out_indices is not None and not features_only:
        raise TypeError("out_indices= needs features_only=True")
    given = {"seed": seed, "device": device, "dtype": dtype}
    model = builder(**{k: v for k, v in given.items() if v is not None}, **overrides)
    if output_head is not None or head_args is not None:
        if not hasattr(model, "reset_classifier") or features_only:
            raise SpecError(
                f"output_head={output_head!r}: {name} is not a classifier (no reset_classifier)"
                if not features_only
                else "output_head= and features_only=True exclude each other",
                path="output_head",
            )
        num_classes = model.num_classes or overrides.get("num_classes", 1000)
        head = output_head or "linear"
        model.reset_classifier(num_classes, head=head, head_args=head_args, seed=seed)
    if not features_only:
        return model
    from .models.features import FeatureExtractor

    return FeatureExtractor(model, out_indices)
