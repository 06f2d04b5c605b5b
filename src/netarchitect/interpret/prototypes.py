"""Training and explaining ProtoPNet models (Chen et al. 2019) built with ``prototype_head``.

- :func:`recording` makes every :class:`~netarchitect.layers.prototype.PrototypeHead` of a
  model keep its distances during a forward (training mode does too);
  :func:`prototype_loss` turns them into the cluster and separation costs and the last
  layer's L1 penalty (ProtoPNet's weights 0.8, −0.08, 1e-4, set on the head).
- :func:`project_prototypes` ("push") replaces every prototype by the nearest latent patch
  of a training image of its own class, so each prototype *is* a patch of a real image.
- :func:`finetune_last_layer` refits the last layer after projection (ProtoPNet's stage 3).
- :func:`explain_prototypes` lists, for inputs, the most activated prototypes with their
  similarity maps and the training patches they were projected onto.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NetArchitectError
from ..layers.prototype import PrototypeHead

__all__ = [
    "Projection",
    "PrototypeExplanation",
    "explain_prototypes",
    "find_prototype_head",
    "finetune_last_layer",
    "project_prototypes",
    "prototype_loss",
    "recording",
]


def find_prototype_head(model: nn.Module) -> PrototypeHead:
    """The model's (single) :class:`PrototypeHead`."""
    heads = [m for m in model.modules() if isinstance(m, PrototypeHead)]
    if len(heads) != 1:
        raise NetArchitectError(
            f"{type(model).__name__} has {len(heads)} prototype_head modules; expected exactly 1"
        )
    return heads[0]


@contextlib.contextmanager
def recording(model: nn.Module) -> Iterator[PrototypeHead]:
    """Within the block the model's prototype head keeps :attr:`PrototypeHead.details` of
    each forward (cleared afterwards, so the model stays deep-copyable)."""
    head = find_prototype_head(model)
    head.record = True
    try:
        yield head
    finally:
        head.record, head.details = False, {}


def _own_class_mask(head: PrototypeHead, target: Tensor) -> Tensor:
    return head.prototype_class[None, :] == target[:, None]  # (B, P)


def prototype_loss(model: nn.Module, target: Tensor) -> Tensor:
    """The prototype head's :meth:`~PrototypeHead.auxiliary_loss` for the last forward (in
    training mode, or under :func:`recording`); add it to the cross-entropy."""
    head = find_prototype_head(model)
    if "min_distances" not in head.details:
        raise NetArchitectError("no recorded forward: run the model in training mode first")
    return head.auxiliary_loss(target)


@dataclass
class Projection:
    """Where each prototype was projected: the training sample (``index`` in loader order),
    the latent patch ``(row, col)``, the distance before projection, the sample's image and
    the prototype's similarity map on it (latent resolution)."""

    index: Tensor  # (P,) int64
    row: Tensor  # (P,)
    col: Tensor  # (P,)
    distance: Tensor  # (P,) squared distance moved onto the patch
    images: Tensor  # (P, *input shape)
    maps: Tensor  # (P, H, W) similarity of the prototype on its source image


def _latents(model: nn.Module, head: PrototypeHead, x: Tensor) -> Tensor:
    model(x)
    return head.details["latent"]


@torch.no_grad()
def project_prototypes(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]]) -> Projection:
    """Push every prototype onto its nearest latent patch among the training samples of its
    class (ProtoPNet's projection); afterwards prototype ``j`` equals the latent patch
    ``(row[j], col[j])`` of sample ``index[j]`` exactly. Runs in eval mode."""
    was_training = model.training
    model.eval()
    with recording(model) as head:
        p = head.num_prototypes
        best = torch.full((p,), float("inf"))
        index = torch.full((p,), -1, dtype=torch.long)
        row, col = torch.zeros(p, dtype=torch.long), torch.zeros(p, dtype=torch.long)
        vectors = head.prototypes.detach().clone()
        images: list[Tensor | None] = [None] * p
        seen = 0
        for x, y in loader:
            z = _latents(model, head, x)  # (B, D, H, W)
            dist = head.details["distances"].masked_fill(
                ~_own_class_mask(head, y)[:, :, None, None], float("inf")
            )  # (B, P, H, W): only patches of the prototype's own class
            b, _, h, w = dist.shape
            flat = dist.permute(1, 0, 2, 3).reshape(p, -1)  # (P, B·H·W)
            d, where = flat.min(1)
            for j in torch.nonzero(d < best).flatten().tolist():
                i, rem = divmod(int(where[j]), h * w)
                best[j], index[j] = d[j], seen + i
                row[j], col[j] = divmod(rem, w)
                vectors[j] = z[i, :, row[j], col[j]]
                images[j] = x[i].clone()
            seen += b
        missing = torch.nonzero(index < 0).flatten().tolist()
        if missing:
            classes = sorted({int(head.prototype_class[j]) for j in missing})
            raise NetArchitectError(f"project_prototypes: no training sample of class(es) {classes}")
        head.prototypes.copy_(vectors)
        stacked = torch.stack(images)  # type: ignore[arg-type]
        model(stacked)
        maps = head.similarity(head.details["distances"])  # (P, P, H, W)
        own = maps[torch.arange(p), torch.arange(p)]  # prototype j on its own source image
    model.train(was_training)
    return Projection(index, row, col, best, stacked, own)


@dataclass
class PrototypeExplanation:
    """Why the model chose ``predicted`` for one input: its ``top`` prototypes (indices),
    their classes, similarities, the last layer's contribution ``w_{k,j} · s_j`` to the
    predicted class, similarity maps upsampled to the input size, and (after projection) the
    training samples the prototypes came from."""

    predicted: int
    prototypes: list[int]
    classes: list[int]
    similarities: list[float]
    contributions: list[float]
    maps: Tensor  # (top, H_in, W_in)
    sources: list[int] | None


@torch.no_grad()
def explain_prototypes(
    model: nn.Module, x: Tensor, *, top: int = 3, projection: Projection | None = None
) -> list[PrototypeExplanation]:
    """For each input of ``x`` the ``top`` prototypes by similarity (ProtoPNet's "this looks
    like that"), with similarity maps bilinearly upsampled to the input's spatial size."""
    was_training = model.training
    model.eval()
    with recording(model) as head:
        logits = model(x)
        dist, min_d = head.details["distances"], head.details["min_distances"]
    model.train(was_training)
    if not 1 <= top <= head.num_prototypes:
        raise NetArchitectError(f"top={top}: choose 1..{head.num_prototypes} prototypes")
    sims, maps = head.similarity(min_d), head.similarity(dist)
    size = x.shape[-2:]
    out = []
    for b in range(len(x)):
        k = int(logits[b].argmax())
        order = sims[b].topk(top).indices
        up = F.interpolate(maps[b, order][None], size=size, mode="bilinear", align_corners=False)
        out.append(
            PrototypeExplanation(
                predicted=k,
                prototypes=order.tolist(),
                classes=head.prototype_class[order].tolist(),
                similarities=sims[b, order].tolist(),
                contributions=(head.last_layer.weight[k, order] * sims[b, order]).tolist(),
                maps=up[0],
                sources=None if projection is None else projection.index[order].tolist(),
            )
        )
    return out


def finetune_last_layer(
    model: nn.Module, x: Tensor, y: Tensor, *, steps: int = 200, lr: float = 0.05,
    l1: float = 1e-4, batch_size: int = 1024,
) -> None:
    """ProtoPNet's last stage: with everything else fixed, fit the last layer on the training
    data ``(x, y)`` (cross-entropy plus ``l1`` on the off-class weights), full batch Adam on
    the similarities computed once."""
    head = find_prototype_head(model)
    was_training = model.training
    model.eval()
    sims = []
    with torch.no_grad(), recording(model):
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
            sims.append(head.similarity(head.details["min_distances"]))
    s = torch.cat(sims)  # (N, P)
    weight = head.last_layer.weight
    opt = torch.optim.Adam([weight], lr=lr)
    off = 1 - head.class_identity.T
    for _ in range(steps):
        loss = F.cross_entropy(F.linear(s, weight), y) + l1 * (weight * off).abs().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    weight.grad = None
    model.train(was_training)
