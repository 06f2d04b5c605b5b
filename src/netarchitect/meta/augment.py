"""More classes from few: every multiple-of-90° rotation (and its transpose) of an image class
is a new class, as Omniglot is augmented for few-shot training (Santoro et al., 2016; Snell
et al., 2017). Used to turn digits 0-4 into 40 digit-like meta-training classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from netarchitect.meta.errors import FewShotError

__all__ = ["rotated_classes"]


def rotated_classes(
    x: Tensor, y: Tensor, classes: Sequence[int], *, offset: int, transpose: bool = True
) -> tuple[Tensor, Tensor]:
    """Images of ``classes`` rotated by 0/90/180/270° (and transposed if ``transpose``).

    Class ``c`` (the ``i``-th of ``classes``) under variant ``v`` (rotation ``k``, transposed
    ``t``: ``v = 2k + t``, or ``v = k`` without transposes) gets label
    ``offset + i * variants + v``; variant 0 is the identity.

    Shapes:
        x ``(N, C, H, H)``, y ``(N,)`` -> ``(M * variants, C, H, H)``, ``(M * variants,)`` for
        the ``M`` images of ``classes``.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise FewShotError("x", f"needs square images (N, C, H, H), got {tuple(x.shape)}")
    index = {int(c): i for i, c in enumerate(classes)}
    missing = [c for c in index if not bool((y == c).any())]
    if missing or not index:
        raise FewShotError("classes", f"{missing or list(classes)} name no class of y")
    keep = torch.isin(y, torch.tensor(list(index)))
    base, ids = x[keep], torch.tensor([index[int(c)] for c in y[keep]])
    flips = (False, True) if transpose else (False,)
    variants = 4 * len(flips)
    xs, ys = [], []
    for k in range(4):
        for j, flip in enumerate(flips):
            img = torch.rot90(base, k, (2, 3))
            xs.append(img.transpose(2, 3) if flip else img)
            ys.append(offset + ids * variants + k * len(flips) + j)
    return torch.cat(xs), torch.cat(ys)
