"""Model soups (Wortsman et al., ICML 2022): weight averages of fine-tuned copies of one model.

:func:`uniform_soup` averages every ingredient; :func:`greedy_soup` sorts the ingredients
by held-out accuracy and adds each one only if the soup's held-out accuracy does not drop,
so the greedy soup is never worse on the held-out data than its best ingredient (it starts
as that ingredient).

BatchNorm: running means and variances are averaged with the weights (the paper's choice,
cheap and usually close). With ``recompute_bn=x`` (a batch of training inputs) the soup's
running statistics are instead re-estimated from ``x`` (a cumulative average over
``bn_batch_size`` batches, in train mode, without gradients), which is better when the
ingredients' statistics disagree. Integer buffers (``num_batches_tracked``) are taken from
the first ingredient.

Ingredients must share one architecture: same module types, same state-dict names and
shapes (and for spec-built networks the same spec); otherwise :func:`check_same_architecture`
raises an error naming the first mismatch, and no model is changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import NetArchitectError, ShapeError, SpecError

__all__ = [
    "SoupResult",
    "average_state_dicts",
    "check_same_architecture",
    "greedy_soup",
    "recompute_batchnorm",
    "uniform_soup",
]

Evaluator = Callable[[nn.Module], float]


def check_same_architecture(models: Sequence[nn.Module], what: str = "models") -> None:
    """Raise unless ``models`` is non-empty and every model has the first one's module types,
    parameter/buffer names and shapes (and spec, for spec-built networks); the error names
    the first mismatch."""
    models = list(models)
    if not models:
        raise NetArchitectError(f"no {what} given: need at least one")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{what}[{i}] is a {type(m).__name__}, not an nn.Module")
    ref = models[0]
    ref_state = ref.state_dict()
    ref_types = [(n, type(m)) for n, m in ref.named_modules()]
    ref_spec = getattr(ref, "spec", None)
    for i, m in enumerate(models[1:], 1):
        where = f"{what}[{i}]"
        types = [(n, type(mod)) for n, mod in m.named_modules()]
        for (n0, t0), (n1, t1) in zip(ref_types, types):
            if (n0, t0) != (n1, t1):
                raise SpecError(f"{where} differs from {what}[0] in module type: "
                                f"{t1.__name__} vs {t0.__name__}", path=n0 or n1 or "(root)")
        if len(types) != len(ref_types):
            raise SpecError(f"{where} has {len(types)} modules, {what}[0] has {len(ref_types)}")
        state = m.state_dict()
        for name in [*ref_state, *state]:
            if name not in state or name not in ref_state:
                side = where if name not in state else f"{what}[0]"
                raise SpecError(f"{side} has no such entry (architectures differ)", path=name)
            if state[name].shape != ref_state[name].shape:
                raise ShapeError(f"{where} differs from {what}[0] in shape: "
                                 f"{tuple(state[name].shape)} vs {tuple(ref_state[name].shape)}",
                                 path=name)
        spec = getattr(m, "spec", None)
        if ref_spec is not None and spec != ref_spec:
            raise SpecError(f"{where} was built from another spec than {what}[0]")


def average_state_dicts(
    states: Sequence[dict[str, Tensor]], weights: Sequence[float] | None = None
) -> dict[str, Tensor]:
    """Weighted mean of floating-point entries (uniform by default); other entries (integer
    counters) come from the first state dict."""
    n = len(states)
    if n == 0:
        raise NetArchitectError("no state dicts to average")
    w = [1.0 / n] * n if weights is None else [float(x) for x in weights]
    out = {}
    for name, ref in states[0].items():
        if ref.is_floating_point() or ref.is_complex():
            wide = torch.promote_types(ref.dtype, torch.float64)  # accumulate in double
            acc = sum(wi * s[name].to(wide) for wi, s in zip(w, states))
            out[name] = acc.to(ref.dtype)  # type: ignore[union-attr]
        else:
            out[name] = ref.clone()
    return out


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics from inputs ``x`` (cumulative
    average over batches, train mode, no gradients); returns ``model`` in its old mode."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return model
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


def _soup(models: Sequence[nn.Module], recompute_bn: Tensor | None, bn_batch_size: int) -> nn.Module:
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    if recompute_bn is not None:
        recompute_batchnorm(soup, recompute_bn, batch_size=bn_batch_size)
    return soup


def uniform_soup(
    models: Sequence[nn.Module],
    *,
    recompute_bn: Tensor | None = None,
    bn_batch_size: int = 256,
) -> nn.Module:
    """A copy of ``models[0]`` holding the mean of all models' weights (and BatchNorm
    statistics, or statistics recomputed from ``recompute_bn`` inputs)."""
    check_same_architecture(models, "ingredients")
    return _soup(models, recompute_bn, bn_batch_size)


@dataclass
class SoupResult:
    """A greedy soup: the model, the chosen ingredient indices (in the order added), its
    held-out score and every ingredient's score."""

    model: nn.Module
    ingredients: list[int]
    score: float
    ingredient_scores: list[float] = field(default_factory=list)


def _accuracy(x: Tensor, y: Tensor, batch_size: int = 1024) -> Evaluator:
    def score(model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                correct += int((model(x[i : i + batch_size]).argmax(-1)
                                == y[i : i + batch_size]).sum())
        model.train(was_training)
        return correct / len(x)

    return score


def greedy_soup(
    models: Sequence[nn.Module],
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    *,
    score: Evaluator | None = None,
    recompute_bn: Tensor | None = None,
    bn_batch_size: int = 256,
) -> SoupResult:
    """Greedy soup (Wortsman et al. 2022, Algorithm 1): rank ingredients by held-out score
    (accuracy on ``x_val, y_val``, or a custom ``score(model) -> float``, higher is better),
    start from the best, and add each next ingredient if the soup's score is not lower."""
    check_same_architecture(models, "ingredients")
    if score is None:
        if x_val is None or y_val is None:
            raise NetArchitectError("greedy_soup needs held-out data (x_val, y_val) or score=")
        score = _accuracy(x_val, y_val)
    scores = [float(score(m)) for m in models]
    order = sorted(range(len(models)), key=lambda i: -scores[i])
    chosen = [order[0]]
    best_model, best = models[order[0]], scores[order[0]]
    for i in order[1:]:
        candidate = _soup([models[j] for j in [*chosen, i]], recompute_bn, bn_batch_size)
        value = float(score(candidate))
        if value >= best:
            chosen.append(i)
            best_model, best = candidate, value
    if len(chosen) == 1:  # a copy, so the soup never aliases an ingredient
        best_model = copy.deepcopy(best_model)
    return SoupResult(best_model, chosen, best, scores)
