"""Prototypical networks (Snell et al., 2017).

A class prototype is the mean embedding of its support examples; a query's logits are the
negative squared Euclidean distances to the prototypes: ``logits[q, c] = -||f(x_q) - p_c||²``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from netarchitect.meta._schedule import make_scheduler
from netarchitect.meta.episodes import EpisodeMixture, EpisodeSampler

__all__ = ["ProtoNet", "prototype_logits", "prototypes", "train_protonet"]


def prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Mean embedding per class. Shapes: ``(S, D), (S,) -> (n_way, D)``."""
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # (S, n_way)
    return (onehot.T @ embeddings) / onehot.sum(0).clamp_min(1).unsqueeze(1)


def prototype_logits(queries: Tensor, protos: Tensor) -> Tensor:
    """``-||q - p||²``. Shapes: ``(Q, D), (n_way, D) -> (Q, n_way)``."""
    return -torch.cdist(queries, protos).pow(2)


class ProtoNet(nn.Module):
    """Wrap any embedding network ``encoder`` (``(N, ...) -> (N, D)``, flattened if not 2-D).

    Shapes:
        forward(support_x ``(S, ...)``, support_y ``(S,)``, query_x ``(Q, ...)``, n_way)
        -> logits ``(Q, n_way)``.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x).flatten(1)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        emb = self.embed(torch.cat([support_x, query_x]))
        support, query = emb[: len(support_x)], emb[len(support_x) :]
        return prototype_logits(query, prototypes(support, support_y, n_way))


def train_protonet(
    model: ProtoNet,
    sampler: EpisodeSampler | EpisodeMixture,
    *,
    steps: int,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: str = "constant",
) -> list[float]:
    """Episodic training with Adam (or ``optimizer``) and a ``constant`` or ``cosine`` learning
    rate; returns the loss per step."""
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    scheduler = make_scheduler(opt, schedule, steps)
    losses = []
    for _ in range(steps):
        ep = sampler.sample()
        loss = F.cross_entropy(model(ep.support_x, ep.support_y, ep.query_x, ep.n_way), ep.query_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses
