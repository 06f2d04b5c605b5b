"""MAML, first-order MAML, Meta-SGD and ANIL on any ``nn.Module`` through ``torch.func``.

Inner loop (per task, ``inner_steps`` times, on the support set):
``θ' = θ - α ⊙ ∇θ L_support(θ)``; the meta-loss is ``L_query(θ')`` averaged over the tasks
of a meta-batch, computed for all tasks at once with ``torch.func.vmap``.

* MAML (Finn et al., 2017): scalar ``α``, gradients flow through the inner updates
  (second order);
* first-order MAML: the inner gradients are treated as constants;
* Meta-SGD (Li et al., 2017): ``learn_lr=True`` makes ``α`` a learned tensor per parameter;
* ANIL (Raghu et al., 2020): ``adapt=["head"]`` adapts only the named parameters (a prefix
  names a sub-module) in the inner loop; all parameters are meta-learned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from netarchitect.meta._schedule import make_scheduler
from netarchitect.meta.episodes import EpisodeMixture, EpisodeSampler
from netarchitect.meta.errors import FewShotError, check_positive

__all__ = ["MAML", "train_maml"]

Params = dict[str, Tensor]


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class MAML(nn.Module):
    """Meta-learn the initialisation (and, with ``learn_lr``, the step sizes) of ``model``.

    Shapes (meta-batch of ``T`` tasks):
        meta_loss(support_x ``(T, S, ...)``, support_y ``(T, S)``, query_x ``(T, Q, ...)``,
        query_y ``(T, Q)``) -> scalar; forward(support_x ``(S, ...)``, support_y ``(S,)``,
        query_x ``(Q, ...)``, n_way) -> adapted logits ``(Q, n_way)``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        first_order: bool = False,
        learn_lr: bool = False,
        adapt: Sequence[str] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    ) -> None:
        super().__init__()
        check_positive(inner_steps=inner_steps)
        if not inner_lr > 0:
            raise FewShotError("inner_lr", f"must be > 0, got {inner_lr!r}")
        self.model = model
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if adapt is not None:
            unknown = [a for a in adapt if not any(_matches(n, [a]) for n in names)]
            if unknown or not adapt:
                raise FewShotError("adapt", f"{unknown or adapt} name no trainable parameter")
            names = [n for n in names if _matches(n, adapt)]
        self.adapt_names = names
        self.inner_lr, self.inner_steps = float(inner_lr), inner_steps
        self.first_order, self.loss_fn = first_order, loss_fn
        params = dict(model.named_parameters())
        self.lrs = (
            nn.ParameterList(
                nn.Parameter(torch.full_like(params[n], inner_lr).detach()) for n in names
            )
            if learn_lr
            else None
        )

    # -- pure functions of (params, buffers, data): usable under vmap -------------------------
    def _lr(self, i: int) -> Tensor | float:
        return self.inner_lr if self.lrs is None else self.lrs[i]

    def adapt_params(
        self, params: Params, buffers: Params, support_x: Tensor, support_y: Tensor
    ) -> Params:
        """The task-adapted parameters after ``inner_steps`` steps on the support set."""
        fast = {n: params[n] for n in self.adapt_names}
        frozen = {n: p for n, p in params.items() if n not in fast}

        def support_loss(fast: Params, frozen: Params) -> Tensor:
            out = functional_call(self.model, ({**frozen, **fast}, buffers), (support_x,))
            return self.loss_fn(out, support_y)

        for _ in range(self.inner_steps):
            if self.first_order:
                detached = ({n: p.detach() for n, p in d.items()} for d in (fast, frozen))
                grads = grad(support_loss)(*detached)
            else:
                grads = grad(support_loss)(fast, frozen)
            fast = {n: fast[n] - self._lr(i) * grads[n] for i, n in enumerate(self.adapt_names)}
        return {**frozen, **fast}

    def _task_loss(
        self, params: Params, buffers: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor
    ) -> Tensor:
        adapted = self.adapt_params(params, buffers, sx, sy)
        return self.loss_fn(functional_call(self.model, (adapted, buffers), (qx,)), qy)

    def _state(self) -> tuple[Params, Params]:
        return dict(self.model.named_parameters()), dict(self.model.named_buffers())

    # -- public entry points -------------------------------------------------------------------
    def meta_loss(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor
    ) -> Tensor:
        """Mean query loss after adaptation over a meta-batch, all tasks at once (``vmap``)."""
        params, buffers = self._state()
        per_task = vmap(self._task_loss, in_dims=(None, None, 0, 0, 0, 0), randomness="different")(
            params, buffers, support_x, support_y, query_x, query_y
        )
        return per_task.mean()

    def meta_loss_loop(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor
    ) -> Tensor:
        """:meth:`meta_loss` with a Python loop over the tasks (reference, no ``vmap``)."""
        params, buffers = self._state()
        tasks = zip(support_x, support_y, query_x, query_y)
        return torch.stack([self._task_loss(params, buffers, *t) for t in tasks]).mean()

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Adapt to the support set, then return logits for ``query_x``."""
        params, buffers = self._state()
        adapted = self.adapt_params(params, buffers, support_x, support_y)
        logits = functional_call(self.model, (adapted, buffers), (query_x,))
        if logits.shape[-1] != n_way:
            raise FewShotError("n_way", f"{n_way} but the model outputs {logits.shape[-1]} classes")
        return logits


def train_maml(
    maml: MAML,
    sampler: EpisodeSampler | EpisodeMixture,
    *,
    steps: int,
    meta_batch: int = 8,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: str = "constant",
) -> list[float]:
    """Meta-train with Adam (or ``optimizer``) on ``meta_batch`` tasks per step, ``constant`` or
    ``cosine`` learning rate; returns the losses."""
    check_positive(steps=steps, meta_batch=meta_batch)
    opt = optimizer or torch.optim.Adam(maml.parameters(), lr=lr)
    scheduler = make_scheduler(opt, schedule, steps)
    losses = []
    for _ in range(steps):
        loss = maml.meta_loss(*sampler.sample_batch(meta_batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    return losses
