"""Mixture-of-experts feed-forward with top-k routing, capacity and a load-balancing loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import (
    LayerType,
    check_non_negative,
    check_positive_int,
    check_probability,
    example_tensor,
)
from .mlp import make_mlp

__all__ = ["MAX_EXPERTS", "MoEFeedForward", "moe_aux_loss"]

#: Most experts one MoE layer may have (DeepSeek-V3 routes among 256).
MAX_EXPERTS = 4096

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("moe", kind="mlp")
class MoEFeedForward(nn.Module):
    """Sparse mixture of expert MLPs (Shazeer et al. 2017; GShard; Switch Transformer).

    Routing: ``p = softmax(W_r x)`` over ``num_experts``; each token goes to its
    ``top_k`` experts, weighted by their probabilities (renormalised to sum to 1
    when ``normalize_gates``, as GShard/Mixtral; raw as Switch otherwise):
    ``y = Σ_{e ∈ topk(p)} g_e · expert_e(x)``.

    Capacity: each expert takes at most
    ``C = ceil(capacity_factor · tokens · top_k / num_experts)`` tokens; slots are
    filled first-choices-first, then second choices, each in token order (GShard).
    Assignments past ``C`` are dropped — they contribute zero (the caller's residual
    carries the token) — and their number is stored in :attr:`dropped_tokens`
    (a 0-dim tensor counting dropped (token, expert) assignments).
    ``capacity_factor=None`` never drops.

    Load balancing: after each forward :attr:`aux_loss` holds
    ``aux_loss_weight · num_experts · Σ_e f_e · P_e`` where ``f_e`` is the fraction
    of the ``tokens · top_k`` assignments routed to ``e`` (before dropping) and
    ``P_e`` the mean router probability of ``e`` (Switch eq. 4; equals it for k=1).
    Add it to the training loss (:func:`moe_aux_loss` sums it over a model).

    Training-time exploration: ``router_jitter`` multiplies the router input by
    ``U(1-ε, 1+ε)`` (Switch), ``router_noise`` adds ``N(0, σ²)`` to the logits
    (noisy top-k). Tokens of all samples share the capacity, so outputs depend on
    the batch composition when the capacity binds.

    Shapes:
        input ``(*, dim)`` -> output ``(*, dim)``.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_experts: int,
        top_k: int = 2,
        capacity_factor: float | None = 1.25,
        hidden_dim: int | None = None,
        mlp_ratio: float = 4.0,
        act_layer: LayerType = None,
        expert_layer: LayerType = "mlp",
        drop: float = 0.0,
        aux_loss_weight: float = 0.01,
        normalize_gates: bool = True,
        router_jitter: float = 0.0,
        router_noise: float = 0.0,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_experts", num_experts, maximum=MAX_EXPERTS)
        check_positive_int("top_k", top_k)
        if top_k > num_experts:
            raise SpecError(f"top_k={top_k} exceeds num_experts={num_experts}", path="top_k")
        if capacity_factor is not None and (
            isinstance(capacity_factor, bool)
            or not isinstance(capacity_factor, int | float)
            or not 0 < capacity_factor <= MAX_EXPERTS
        ):
            raise SpecError(
                f"capacity_factor={capacity_factor!r} must be in (0, {MAX_EXPERTS}] "
                "(or None for no limit)",
                path="capacity_factor",
            )
        check_non_negative("aux_loss_weight", aux_loss_weight)
        check_probability("router_jitter", router_jitter)
        check_non_negative("router_noise", router_noise)
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.aux_loss_weight = aux_loss_weight
        self.normalize_gates = normalize_gates
        self.router_jitter = router_jitter
        self.router_noise = router_noise
        self.router = nn.Linear(dim, num_experts, bias=False, **factory)
        self.experts = nn.ModuleList(
            make_mlp(
                expert_layer,
                dim,
                act_layer=act_layer,
                hidden_dim=hidden_dim,
                mlp_ratio=mlp_ratio,
                drop=drop,
                **factory,
            )
            for _ in range(num_experts)
        )
        self.aux_loss: Tensor = torch.zeros(())
        self.dropped_tokens: Tensor = torch.zeros((), dtype=torch.long)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.router.reset_parameters()
        for expert in self.experts:
            expert.reset_parameters()  # type: ignore[operator]

    @classmethod
    def example(cls) -> Example:
        kwargs = {"dim": 8, "num_experts": 4, "top_k": 2, "capacity_factor": 1.0, "hidden_dim": 8}
        skip = {"batch_independence": "samples share each expert's token capacity"}
        return Example(kwargs, (example_tensor(2, 5, 8),), skip=skip, name="capacity")

    @classmethod
    def examples(cls) -> list[Example]:
        """Top-2 routing with a binding capacity; Switch-style top-1 without a capacity
        (then samples are independent); SwiGLU experts with raw (unnormalised) gates."""
        x = example_tensor(2, 5, 8)
        return [
            cls.example(),
            Example({"dim": 8, "num_experts": 2, "top_k": 1, "capacity_factor": None,
                     "hidden_dim": 8}, (x,), name="switch_top1"),
            Example({"dim": 8, "num_experts": 3, "top_k": 2, "capacity_factor": None,
                     "expert_layer": "swiglu", "hidden_dim": 8, "normalize_gates": False},
                    (x,), name="swiglu_raw_gates"),
        ]

    def __getstate__(self) -> dict:
        """Copies and pickles keep the last loss as a value, not its autograd graph."""
        state = dict(self.__dict__)
        state["aux_loss"] = self.aux_loss.detach()
        return state

    def capacity(self, num_tokens: int) -> int | None:
        """Tokens each expert accepts for a batch of ``num_tokens`` tokens."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def route(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Router probabilities (N, E) and the top-k gates and expert ids (N, k)."""
        if self.training and self.router_jitter > 0:
            eps = self.router_jitter
            tokens = tokens * torch.empty_like(tokens).uniform_(1.0 - eps, 1.0 + eps)
        logits = self.router(tokens)  # (N, E)
        if self.training and self.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise
        # at least float32 for the routing decision (bf16/fp16 logits are upcast)
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)
        gates, experts = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.normalize_gates and self.top_k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return probs, gates, experts

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected input (*, {self.dim}), got {tuple(x.shape)}")
        tokens = x.reshape(-1, self.dim)  # (N, D)
        N, E, k = tokens.shape[0], self.num_experts, self.top_k
        probs, gates, experts = self.route(tokens)
        if x.device.type == "meta":  # routing needs values: shapes only
            self.aux_loss = probs.sum() * 0.0
            self.dropped_tokens = torch.zeros((), dtype=torch.long, device=x.device)
            return self.experts[0](tokens).view(x.shape)
        # Assignments in priority order: every token's first choice, then second, ...
        expert_of = experts.t().reshape(-1)  # (k*N,)
        gate_of = gates.t().reshape(-1).to(x.dtype)  # (k*N,)
        token_of = torch.arange(N, device=x.device).repeat(k)  # (k*N,)
        onehot = F.one_hot(expert_of, E)  # (k*N, E)
        slot = onehot.cumsum(dim=0).gather(1, expert_of[:, None]).squeeze(1) - 1  # (k*N,)
        capacity = self.capacity(N)
        keep = slot < capacity if capacity is not None else torch.ones_like(slot, dtype=torch.bool)
        self.dropped_tokens = (~keep).sum().detach()
        fraction = onehot.sum(dim=0).to(probs.dtype) / (N * k)  # f_e
        self.aux_loss = self.aux_loss_weight * E * (fraction * probs.mean(dim=0)).sum()
        out = torch.zeros_like(tokens)
        if torch.compiler.is_compiling():  # static shapes: every expert runs on every token
            weight = (onehot * (gate_of * keep)[:, None]).view(k, N, E).sum(dim=0)  # (N, E)
            for e, expert in enumerate(self.experts):
                out = out + expert(tokens) * weight[:, e, None]
            return out.view(x.shape)
        for e, expert in enumerate(self.experts):
            idx = torch.nonzero((expert_of == e) & keep).squeeze(1)  # assignments to e
            if idx.numel() == 0:
                continue
            tok = token_of[idx]
            out.index_add_(0, tok, expert(tokens[tok]) * gate_of[idx, None])
        return out.view(x.shape)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"capacity_factor={self.capacity_factor}"
        )


def moe_aux_loss(model: nn.Module) -> Tensor:
    """Sum of :attr:`MoEFeedForward.aux_loss` over every MoE layer of ``model`` (last forward)."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoEFeedForward)]
    if not losses:
        return torch.zeros(())
    return torch.stack([loss.to(losses[0].device) for loss in losses]).sum()
