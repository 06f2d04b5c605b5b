"""scikit-learn's bundled digits (8×8, 10 classes) as few-shot images, no download."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from netarchitect.meta.errors import check_positive

__all__ = ["load_digits_images"]


def load_digits_images(size: int = 16) -> tuple[Tensor, Tensor]:
    """``x`` float32 ``(1797, 1, size, size)`` in [0, 1] (bilinear resize), ``y`` int64."""
    check_positive(size=size)
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x, torch.tensor(data.target, dtype=torch.int64)
