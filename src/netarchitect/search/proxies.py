"""Zero-cost proxies: score an untrained network from one batch, to pre-rank candidates.

* **SynFlow** (Tanaka et al., 2020, "Pruning neural networks without any data by
  iteratively conserving synaptic flow"): with every parameter replaced by its
  absolute value and an all-ones input, ``R = sum(f(1))`` and the score is
  ``sum_θ |θ · ∂R/∂θ|`` (computed in float64 on a copy).
* **NASWOT** (Mellor et al., 2021, "Neural architecture search without
  training"): binary codes ``c_i`` of which activation units are positive for
  each sample ``i`` of a batch; ``K_ij = N_units − Hamming(c_i, c_j)``; the score
  is ``log det(K + I)``. (The paper's ``log |det K|`` is ``-inf`` as soon as two
  samples share a code, which happens constantly in the small networks searched
  here; adding ``I`` — small next to ``K``'s entries, up to ``N_units`` — keeps the
  score finite and still rewards distinct codes.)

Higher is better for both. :class:`ProxyFilter` keeps a candidate only if its
score reaches the ``1 - keep`` quantile of the scores seen so far in the study.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import NetArchitectError

__all__ = ["PROXIES", "ProxyFilter", "naswot", "rank", "score", "synflow"]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Mish,
    nn.Hardswish,
    nn.PReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
)


def synflow(model: nn.Module, input_shape: Sequence[int]) -> float:
    """SynFlow score of ``model`` for per-sample ``input_shape`` (the model is restored)."""
    params = list(model.parameters())
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = [p.grad for p in params]
    dtype, was_training = (params[0].dtype if params else torch.float32), model.training
    try:
        model.double().eval()
        with torch.no_grad():
            for p in params:
                p.abs_()
        for p in params:
            p.grad = None
        torch.sum(model(torch.ones((1, *input_shape), dtype=torch.float64))).backward()
        return float(
            sum(float((p.detach() * p.grad).abs().sum()) for p in params if p.grad is not None)
        )
    finally:
        model.to(dtype)
        model.load_state_dict(saved)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        model.train(was_training)


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, _ACTIVATIONS) or type(module).__module__.endswith("layers.activation")


def naswot(model: nn.Module, x: Tensor) -> float:
    """NASWOT score of ``model`` on the batch ``x`` (``-inf`` without activation units)."""
    codes: list[Tensor] = []

    def hook(_module: nn.Module, _args: object, out: Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_activation(m)]
    was_training = model.training
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not codes:
        return float("-inf")
    c = torch.cat(codes, dim=1)  # (B, units)
    k = c @ c.T + (1 - c) @ (1 - c).T  # (B, B): units where samples i and j agree
    return float(torch.linalg.slogdet(k + torch.eye(len(k), dtype=k.dtype))[1])


PROXIES = ("synflow", "naswot")


def score(name: str, model: nn.Module, x: Tensor) -> float:
    """The proxy ``name`` of ``model`` on the batch ``x``."""
    if name == "synflow":
        return synflow(model, tuple(x.shape[1:]))
    if name == "naswot":
        return naswot(model, x)
    raise NetArchitectError(f"--proxy: unknown proxy {name!r}; use one of {', '.join(PROXIES)}")


def rank(models: Sequence[nn.Module], name: str, x: Tensor) -> list[int]:
    """Indices of ``models`` from the best proxy score to the worst."""
    scores = [score(name, m, x) for m in models]
    return sorted(range(len(models)), key=lambda i: -scores[i])


class ProxyFilter:
    """Keep a candidate when its score is at least the ``1 - keep`` quantile of earlier scores.

    The first ``warmup`` candidates are always kept.
    """

    def __init__(self, keep: float = 0.5, warmup: int = 5) -> None:
        if not 0 < keep <= 1:
            raise NetArchitectError(f"proxy keep fraction must be in (0, 1], got {keep}")
        self.keep, self.warmup = keep, warmup

    def accept(self, value: float, previous: Sequence[float]) -> bool:
        if len(previous) < self.warmup or self.keep >= 1:
            return True
        percentile = min(99, max(1, round(100 * (1 - self.keep))))
        cut = statistics.quantiles(previous, n=100, method="inclusive")[percentile - 1]
        return value >= cut
