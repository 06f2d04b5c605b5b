"""Procedural Omniglot-like glyphs: thousands of classes, rendered with numpy, no download.

A class is 2-4 random strokes (smooth polylines through random control points in
``[-0.75, 0.75]²``). An instance renders its class's strokes through a random affine map
(rotation, anisotropic scale, shear, shift) with a jittered stroke width and pixel noise;
intensity is ``clip(1 - distance_to_stroke / width, 0, 1)``. Everything follows ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from netarchitect.meta.errors import check_positive

__all__ = ["glyph_classes", "make_glyphs", "render_glyphs"]

_SEGMENTS = 6  # line segments per stroke


def glyph_classes(num_classes: int, *, seed: int = 0) -> list[np.ndarray]:
    """Stroke sets, one ``(strokes, _SEGMENTS + 1, 2)`` array of polyline points per class."""
    check_positive(num_classes=num_classes)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_classes):
        n = rng.integers(2, 5)
        ctrl = rng.uniform(-0.75, 0.75, size=(n, 3, 2))  # quadratic Bézier control points
        t = np.linspace(0, 1, _SEGMENTS + 1)[None, :, None]
        pts = (1 - t) ** 2 * ctrl[:, :1] + 2 * t * (1 - t) * ctrl[:, 1:2] + t**2 * ctrl[:, 2:]
        out.append(pts)
    return out


def _segment_distance(grid: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of grid points ``(P, 2)`` to the nearest of segments ``a-b`` ``(C, G, 2)``: ``(C, P)``."""
    a, b, grid = a.astype(np.float32), b.astype(np.float32), grid.astype(np.float32)
    abx, aby = (b[..., 0] - a[..., 0])[:, None], (b[..., 1] - a[..., 1])[:, None]  # (C, 1, G)
    apx = grid[None, :, 0, None] - a[:, None, :, 0]  # (C, P, G)
    apy = grid[None, :, 1, None] - a[:, None, :, 1]
    t = np.clip((apx * abx + apy * aby) / np.maximum(abx * abx + aby * aby, 1e-12), 0, 1)
    dx, dy = apx - t * abx, apy - t * aby
    return np.sqrt((dx * dx + dy * dy).min(-1))


def render_glyphs(
    strokes: np.ndarray, count: int, *, size: int = 16, rng: np.random.Generator
) -> np.ndarray:
    """``count`` distorted renderings of one class: float32 ``(count, size, size)`` in [0, 1]."""
    lin = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    grid = np.stack([xx.ravel(), yy.ravel()], 1)  # (size², 2)
    a, b = strokes[:, :-1].reshape(-1, 2), strokes[:, 1:].reshape(-1, 2)  # (G, 2)
    ang, shear = rng.normal(0, 0.2, count), rng.normal(0, 0.15, count)
    scale = rng.uniform(0.85, 1.15, (count, 2))
    cos, sin = np.cos(ang), np.sin(ang)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (C, 2, 2)
    shear_m = np.zeros((count, 2, 2))
    shear_m[:, 0, 0] = shear_m[:, 1, 1] = 1
    shear_m[:, 0, 1] = shear
    mat = rot @ shear_m * scale[:, None, :]  # (C, 2, 2): rot @ shear @ diag(scale)
    shift = rng.normal(0, 0.06, (count, 1, 2))
    width = rng.uniform(0.12, 0.22, (count, 1))
    mt = mat.transpose(0, 2, 1)
    dist = _segment_distance(grid, a @ mt + shift, b @ mt + shift)  # (C, P)
    img = np.clip(1 - dist / width, 0, 1) + rng.normal(0, 0.05, dist.shape)
    return np.clip(img, 0, 1).astype(np.float32).reshape(count, size, size)


def make_glyphs(
    num_classes: int, per_class: int, *, size: int = 16, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A labelled glyph data set: ``x`` float32 ``(N, 1, size, size)``, ``y`` int64 ``(N,)``."""
    check_positive(num_classes=num_classes, per_class=per_class, size=size)
    rng = np.random.default_rng(seed + 1)
    images = [
        render_glyphs(s, per_class, size=size, rng=rng)
        for s in glyph_classes(num_classes, seed=seed)
    ]
    x = torch.from_numpy(np.concatenate(images)).unsqueeze(1)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return x, y
