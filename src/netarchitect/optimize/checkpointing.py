"""Gradient (activation) checkpointing policies for any ``nn.Module``.

:func:`apply_checkpointing` makes chosen submodules recompute their activations in the
backward pass instead of keeping them (``torch.utils.checkpoint``, non-reentrant):

* ``"blocks"``: every block — for a spec-built :class:`~netarchitect.network.Network` the
  nodes of its :meth:`~netarchitect.network.Network.checkpoint_nodes` (the same ones
  ``set_grad_checkpointing`` uses), for any other module the children of its largest
  ``ModuleList``/``Sequential`` (:func:`netarchitect.analysis.memory.default_units`, the
  units ``analysis.memory(checkpointing=True)`` estimates);
* ``"every_k"``: blocks ``0, k, 2k, ...`` of that list (``k=1`` is ``"blocks"``);
* ``"selective"``: every block under *selective activation checkpointing*
  (``create_selective_checkpoint_contexts``): outputs of attention
  (``scaled_dot_product_attention``), convolutions and the matmuls that do not widen
  their input (Q/K/V and output projections, an MLP's down projection) are saved; the
  element-wise ops (norms, activations, residual adds, dropout masks are replayed with the
  saved RNG state) and the *widening* matmuls (an MLP's up projection: the largest output
  per FLOP of recomputation) are recomputed. :func:`selective_policy` builds other rules;
* a callable ``predicate(path, module) -> bool`` over ``named_modules()`` (outermost
  matches win).

``modules=`` (glob patterns over module paths, module classes, or a mix) replaces the
block list of the named policies for any module. Modules are not moved or renamed: their
``forward`` is wrapped in place (the state dict, hooks and ``repr`` are unchanged) and
:func:`remove_checkpointing` restores it. Checkpointing only acts in training mode with
grad enabled, and never on a call that passes a KV cache; the recompute leaves BatchNorm
running statistics as the forward left them (plain ``checkpoint`` would update them twice).

:func:`activation_bytes` measures what a forward pass leaves alive for backward (storages
created during the forward that still exist afterwards, outputs excluded): unlike the
saved-tensor hooks of :func:`netarchitect.analysis.memory`, it also sees the block inputs
a checkpoint keeps and the tensors a selective policy caches.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from .._recompute import running_stats_kept
from ..analysis._common import EagerDispatchMode, Inputs, call_model, tensors_in
from ..analysis.memory import default_units
from ..errors import SpecError, suggest
from ..network import Network
from .precision import active_policy

__all__ = [
    "POLICIES",
    "SAVE_OPS",
    "activation_bytes",
    "apply_checkpointing",
    "checkpointed_modules",
    "remove_checkpointing",
    "selective_policy",
]

POLICIES = ("blocks", "every_k", "selective")
"""Named policies; a callable ``predicate(path, module)`` is the fourth kind."""

Predicate = Callable[[str, nn.Module], bool]
ModuleFilter = str | type | Iterable[str | type]

_aten = torch.ops.aten
_SAVED_OPS = tuple(
    getattr(_aten, name)
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
        "convolution",
        "_convolution",
        "mkldnn_convolution",
    )
    if hasattr(_aten, name)
)
_MATMUL_INPUT = {  # matmul op -> index of its activation (row) operand
    _aten.mm.default: 0,
    _aten.bmm.default: 0,
    _aten.addmm.default: 1,
    _aten.baddbmm.default: 1,
}
SAVE_OPS: frozenset[Any] = frozenset({*(op.default for op in _SAVED_OPS), *_MATMUL_INPUT})
"""The ATen ops whose outputs the default selective policy may save."""

_WRAPPED = "_na_checkpoint"  # on a wrapped module: (policy name, its own previous forward)


def selective_policy(
    save: Iterable[Any] = SAVE_OPS, *, widening_matmuls: bool = False
) -> Callable[..., CheckpointPolicy]:
    """A selective-checkpointing policy: ``MUST_SAVE`` the outputs of the ATen ops in
    ``save`` (overloads), ``PREFER_RECOMPUTE`` the rest. Matmuls whose output is larger than
    their activation operand are recomputed unless ``widening_matmuls``."""
    save = frozenset(save)

    def policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if op not in save:
            return CheckpointPolicy.PREFER_RECOMPUTE
        index = _MATMUL_INPUT.get(op)
        if index is not None and not widening_matmuls:
            a, b = args[index], args[index + 1]
            if b.shape[-1] > a.shape[-1]:  # (.., M, K) @ (.., K, N) with N > K: widening
                return CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE

    return policy


def _blocks(model: nn.Module) -> list[str]:
    """The default block paths, in execution (registration) order."""
    if isinstance(model, Network):
        chosen = model.checkpoint_nodes()
        return [f"nodes.{n}" for n in model.nodes if n in chosen]
    units = default_units(model)
    return [name for name, _ in model.named_modules() if name in units]


def _outermost(paths: Iterable[str]) -> list[str]:
    kept: list[str] = []
    for path in paths:  # named_modules order: parents come before their children
        if not any(path.startswith(f"{p}.") for p in kept):
            kept.append(path)
    return kept


def _normalise_filter(modules: ModuleFilter) -> list[str | type]:
    items = [modules] if isinstance(modules, (str, type)) else list(modules)
    if not items:
        raise SpecError("an empty module filter matches nothing", path="modules")
    for item in items:
        if not isinstance(item, (str, type)):
            raise SpecError(
                f"{item!r} is neither a glob pattern nor a module class", path="modules"
            )
    return items


def _matching(model: nn.Module, modules: ModuleFilter) -> list[str]:
    items = _normalise_filter(modules)
    patterns = [i for i in items if isinstance(i, str)]
    types = tuple(i for i in items if isinstance(i, type))
    found = [
        name
        for name, module in model.named_modules()
        if name and (
            any(fnmatch.fnmatchcase(name, p) for p in patterns)
            or (types and isinstance(module, types))
        )
    ]  # fmt: skip
    if not found:
        names = [n for n, _ in model.named_modules() if n]
        hint = suggest(patterns[0], names) if patterns else ""
        raise SpecError(f"{items!r} matches no submodule of {type(model).__name__}{hint}",
                        path="modules")
    return _outermost(found)


def _targets(
    model: nn.Module, policy: str | Predicate, k: int, modules: ModuleFilter | None
) -> list[str]:
    if callable(policy):
        found = _outermost(n for n, m in model.named_modules() if n and policy(n, m))
        if not found:
            raise SpecError("the predicate selected no submodule", path="policy")
        return found
    if policy not in POLICIES:
        raise SpecError(
            f"unknown checkpointing policy {policy!r}{suggest(str(policy), POLICIES)}; "
            f"expected one of {list(POLICIES)} or a callable(path, module) -> bool",
            path="policy",
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SpecError(f"k must be an integer >= 1, got {k!r}", path="k")
    paths = _matching(model, modules) if modules is not None else _blocks(model)
    if not paths:
        raise SpecError(f"{type(model).__name__} has no blocks to checkpoint; pass modules=",
                        path="modules")
    return paths[::k] if policy == "every_k" else paths


def _has_cache(kwargs: dict[str, Any]) -> bool:
    return any(v is not None and "cache" in key for key, v in kwargs.items())


def _contexts(
    module: nn.Module, selective: Callable[[], tuple[Any, Any]] | None
) -> Callable[[], tuple[Any, Any]]:
    """``context_fn`` for ``checkpoint``: the selective contexts (if any), the recompute one
    inside :func:`_running_stats_kept` (outside the selective mode, which must see exactly
    the forward's ops) and the forward's :func:`~.precision.autocast_policy` mode, if any
    (``checkpoint`` restores autocast itself, but not a function mode)."""

    @contextlib.contextmanager
    def recompute(inner: Any, policy: Any) -> Iterator[None]:
        replay = policy.replay() if policy is not None else contextlib.nullcontext()
        with running_stats_kept(module), replay, inner:  # backward drops function modes
            yield

    def make() -> tuple[Any, Any]:  # called when the checkpointed forward starts
        forward, inner = selective() if selective else (contextlib.nullcontext(),) * 2
        return forward, recompute(inner, active_policy())

    return make


def _checkpointed_forward(
    module: nn.Module, forward: Callable[..., Any], selective: Callable[[], Any] | None
) -> Callable[..., Any]:
    context_fn = _contexts(module, selective)

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not (module.training and torch.is_grad_enabled()) or _has_cache(kwargs):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, context_fn=context_fn, **kwargs)

    return run


def apply_checkpointing(
    model: nn.Module,
    policy: str | Predicate = "blocks",
    *,
    k: int = 2,
    modules: ModuleFilter | None = None,
    save: Callable[..., CheckpointPolicy] | None = None,
) -> nn.Module:
    """Checkpoint the submodules chosen by ``policy`` (see the module doc) and return
    ``model`` (changed in place; :func:`remove_checkpointing` undoes it).

    ``k`` is the stride of ``"every_k"``; ``modules`` (globs over module paths and/or
    module classes) picks the blocks of the named policies; ``save`` replaces the default
    :func:`selective_policy` of ``"selective"``. Applying again replaces the previous
    policy. Bad input raises :class:`~netarchitect.errors.SpecError` (``.path`` names the
    argument) before anything is changed.
    """
    if isinstance(model, Network) and model.grad_checkpointing:
        raise SpecError(
            "this Network already checkpoints through set_grad_checkpointing(True); "
            "call set_grad_checkpointing(False) first",
            path="model",
        )
    paths = _targets(model, policy, k, modules)
    if save is not None and policy != "selective":
        raise SpecError("save= only applies to the 'selective' policy", path="save")
    context_fn = None
    if policy == "selective":
        context_fn = functools.partial(
            create_selective_checkpoint_contexts, save or selective_policy()
        )
    remove_checkpointing(model)
    name = policy if isinstance(policy, str) else "predicate"
    for path in paths:
        module = model.get_submodule(path)
        own = vars(module).get("forward")  # an instance-level forward someone set before
        module.forward = _checkpointed_forward(module, module.forward, context_fn)
        setattr(module, _WRAPPED, (name, own))
    return model


def remove_checkpointing(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_checkpointing` on every submodule of ``model``; returns it."""
    for module in model.modules():
        if _WRAPPED in vars(module):
            _, own = vars(module).pop(_WRAPPED)
            del module.forward
            if own is not None:
                module.forward = own
    return model


def checkpointed_modules(model: nn.Module) -> dict[str, str]:
    """``{path: policy}`` of the submodules :func:`apply_checkpointing` wrapped."""
    return {n: vars(m)[_WRAPPED][0] for n, m in model.named_modules() if _WRAPPED in vars(m)}


class _NewStorages(EagerDispatchMode):
    """Weak references to every storage an op outputs while active."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for t in tensors_in(out):
            storage = t.untyped_storage()
            seen = self.storages.get(storage._cdata)
            if seen is None or seen[0].expired():  # new, or a freed address reused
                self.storages[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
        return out


def activation_bytes(
    model: nn.Module, inputs: Inputs, *, loss_fn: Callable[[Any], Any] | None = None
) -> int:
    """Bytes that one training forward pass (plus ``loss_fn(output)``) leaves alive for the
    backward pass: every storage ops output during it that still exists afterwards, minus
    the outputs and the storages of parameters, buffers and inputs (views of them). Real tensors only (not the meta device); see the module doc."""
    mode = _NewStorages()
    with torch.enable_grad(), mode:
        output = call_model(model, inputs)
        if loss_fn is not None:
            output = (output, loss_fn(output))
    before = [*model.parameters(), *model.buffers(), *tensors_in(inputs)]
    skip = {t.untyped_storage()._cdata for t in [*before, *tensors_in(output)]}
    total = sum(
        n for key, (ref, n) in mode.storages.items() if key not in skip and not ref.expired()
    )
    del output
    return total

