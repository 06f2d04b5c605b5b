"""Training-memory estimate: parameters, gradients, optimiser state and saved activations.

Activations are *measured*: one forward pass runs under
``torch.autograd.graph.saved_tensors_hooks`` and every tensor autograd keeps for the
backward pass is recorded once per storage (views and tensors saved by several ops
count once; parameters and buffers are excluded). This works on the ``meta`` device,
so the memory of a model far larger than RAM can be estimated; there, attention and
recurrent layers run the kernels CPU would pick (the fused flash kernel only where CPU
uses it, e.g. not with attention dropout in training; oneDNN LSTMs), so that they save
what the real kernels save (see :mod:`netarchitect.analysis._meta_kernels`). The one
known gap: oneDNN's LSTM training workspace has no meta size (0 bytes on meta).

Peak training memory (bytes) is estimated as::

    peak = params + buffers + grads + optimizer_state + activations + outputs

* ``grads`` = bytes of the trainable parameters (gradients share their dtype);
* ``optimizer_state`` = ``k x`` trainable bytes, ``k`` = 2 for Adam/AdamW (``exp_avg``,
  ``exp_avg_sq``; plus a 4-byte ``step`` per tensor), 1 for SGD with momentum, 0 for
  plain SGD or no optimiser;
* ``activations`` = saved tensors at the end of the forward pass — the moment autograd
  holds the most (the backward frees them as gradients appear, so counting both at
  once is an upper bound); with ``checkpointing`` the estimate below replaces it;
* ``outputs`` = model outputs (and the loss) not already counted as saved.

Allocator fragmentation, temporary workspaces and CUDA context memory are not included.

With ``checkpointing=True`` (activation checkpointing of repeated blocks), the
activations are estimated as: tensors saved outside the checkpointed blocks + the
inputs of every block (kept for recomputation) + the largest single block's saved
tensors (alive while that block is recomputed in backward; tensors already counted are
not counted twice). The blocks are the
children of the largest ``nn.ModuleList``/``nn.Sequential`` (the repeated layers), or
the paths given as ``checkpointing=["blocks.0", ...]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._common import Inputs, call_model, storage_key, storage_nbytes, tensors_in
from ._meta_kernels import cpu_kernels_on_meta
from ._tracking import ModuleTracker
from .params import count_params

__all__ = ["OPTIMIZER_STATES", "ActivationTrace", "MemoryReport", "memory", "trace_activations"]

OPTIMIZER_STATES: dict[str | None, int] = {
    None: 0,
    "sgd": 0,
    "sgd_momentum": 1,
    "adam": 2,
    "adamw": 2,
}
"""Optimiser state tensors kept per trainable parameter."""

_STEP_BYTES = 4  # Adam keeps a float32 ``step`` tensor per parameter


@dataclass
class MemoryReport:
    """Bytes needed to train (or run) a model; see the module docstring for the formula."""

    params: int
    buffers: int
    grads: int
    optimizer_state: int
    activations: int
    outputs: int
    optimizer: str | None = "adamw"
    checkpointing: bool = False
    checkpointed_activations: int | None = None
    activations_by_module: dict[str, int] = field(default_factory=dict)

    FORMULA = "params + buffers + grads + optimizer_state + activations + outputs"

    @property
    def activations_used(self) -> int:
        """Activations counted in the peak (the checkpointed estimate when enabled)."""
        if self.checkpointing and self.checkpointed_activations is not None:
            return self.checkpointed_activations
        return self.activations

    @property
    def peak_training(self) -> int:
        return (
            self.params
            + self.buffers
            + self.grads
            + self.optimizer_state
            + self.activations_used
            + self.outputs
        )

    @property
    def inference(self) -> int:
        """Weights plus outputs: a lower bound for a forward pass without autograd."""
        return self.params + self.buffers + self.outputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "buffers": self.buffers,
            "grads": self.grads,
            "optimizer_state": self.optimizer_state,
            "activations": self.activations,
            "checkpointed_activations": self.checkpointed_activations,
            "outputs": self.outputs,
            "peak_training": self.peak_training,
            "optimizer": self.optimizer,
            "checkpointing": self.checkpointing,
            "formula": self.FORMULA,
            "activations_by_module": dict(self.activations_by_module),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


@dataclass
class _UnitCall:
    inputs: dict[Any, int] = field(default_factory=dict)
    saved: dict[Any, int] = field(default_factory=dict)


@dataclass
class ActivationTrace:
    """What one forward pass saved for backward (bytes by storage key)."""

    saved: dict[Any, int]
    by_module: dict[str, dict[Any, int]]
    outside_units: dict[Any, int]
    unit_calls: list[_UnitCall]
    output_bytes: int

    @property
    def total(self) -> int:
        return sum(self.saved.values())

    def module_bytes(self) -> dict[str, int]:
        return {path: sum(d.values()) for path, d in self.by_module.items()}

    def checkpointed(self) -> int:
        """Activation estimate with every unit checkpointed (see module docstring)."""
        outside = dict(self.outside_units)
        inputs: dict[Any, int] = {}
        for call in self.unit_calls:
            for key, n in call.inputs.items():
                if key not in outside:
                    inputs[key] = n
        kept = outside | inputs  # alive anyway: not counted again during a recompute
        largest = max(
            (sum(n for k, n in c.saved.items() if k not in kept) for c in self.unit_calls),
            default=0,
        )
        return sum(outside.values()) + sum(inputs.values()) + largest


def default_units(model: nn.Module) -> set[str]:
    """Children of the largest ModuleList/Sequential (the repeated blocks), else root children."""
    best: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            size = len(module)
            if size >= 2 and (best is None or size > best[0]):
                best = (size, name)
    if best is None:
        return {name for name, _ in model.named_children()}
    prefix = f"{best[1]}." if best[1] else ""
    container = model.get_submodule(best[1])
    return {f"{prefix}{child}" for child, _ in container.named_children()}


def trace_activations(
    model: nn.Module,
    inputs: Inputs,
    *,
    units: Iterable[str] = (),
    loss_fn: Callable[[Any], Any] | None = None,
    post: Callable[[str, nn.Module, tuple[Any, ...], Any], None] | None = None,
) -> ActivationTrace:
    """Run one forward pass with grad enabled and record every tensor saved for backward.

    ``units`` are module paths whose calls are tracked separately (for the checkpointing
    estimate); ``post(path, module, args, output)`` sees each module call.
    """
    exclude = {storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    unit_set = set(units)
    saved: dict[Any, int] = {}
    by_module: dict[str, dict[Any, int]] = {}
    outside: dict[Any, int] = {}
    calls: list[_UnitCall] = []
    active: list[tuple[str, _UnitCall]] = []

    def on_pre(path: str, module: nn.Module, args: tuple[Any, ...]) -> None:
        if path in unit_set and not active:
            call = _UnitCall()
            for t in tensors_in(args):
                key = storage_key(t)
                if key not in exclude:
                    call.inputs[key] = storage_nbytes(t)
            calls.append(call)
            active.append((path, call))

    def on_post(path: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if active and active[-1][0] == path:
            active.pop()
        if post is not None:
            post(path, module, args, output)

    tracker = ModuleTracker(model, pre=on_pre, post=on_post)

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t)
        if key in exclude:
            return t
        nbytes = storage_nbytes(t)
        saved[key] = nbytes
        for path in tracker.forward_paths():
            by_module.setdefault(path, {})[key] = nbytes
        if active:
            active[-1][1].saved[key] = nbytes
        else:
            outside[key] = nbytes
        return t

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with tracker, cpu_kernels_on_meta(inputs, model), torch.enable_grad(), hooks:
        output = call_model(model, inputs)
        if loss_fn is not None:
            output = (output, loss_fn(output))
    out_bytes = {storage_key(t): storage_nbytes(t) for t in tensors_in(output)}
    output_bytes = sum(n for key, n in out_bytes.items() if key not in saved and key not in exclude)
    del output
    return ActivationTrace(saved, by_module, outside, calls, output_bytes)


def memory(
    model: nn.Module,
    inputs: Inputs,
    *,
    optimizer: str | None = "adamw",
    checkpointing: bool | Iterable[str] = False,
    loss_fn: Callable[[Any], Any] | None = None,
) -> MemoryReport:
    """Estimate the memory to train ``model`` on ``inputs`` (works on the meta device).

    ``optimizer`` is one of ``"adamw"``, ``"adam"``, ``"sgd"``, ``"sgd_momentum"`` or
    ``None``; ``checkpointing`` is a bool or the module paths to checkpoint;
    ``loss_fn(output) -> loss`` adds the loss's saved tensors.
    """
    if optimizer not in OPTIMIZER_STATES:
        choices = ", ".join(repr(k) for k in OPTIMIZER_STATES)
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {choices}")
    counts = count_params(model, by_module=False)
    if isinstance(checkpointing, bool):
        units = default_units(model) if checkpointing else set()
    else:
        units = set(checkpointing)
        known = {name for name, _ in model.named_modules()}
        unknown = sorted(units - known)
        if unknown:
            raise ValueError(f"checkpointing: no module at path(s) {unknown}")
    trace = trace_activations(model, inputs, units=units, loss_fn=loss_fn)
    states = OPTIMIZER_STATES[optimizer]
    step_bytes = _STEP_BYTES * counts.trainable_tensors if optimizer in ("adam", "adamw") else 0
    return MemoryReport(
        params=counts.param_bytes,
        buffers=counts.buffer_bytes,
        grads=counts.trainable_bytes,
        optimizer_state=states * counts.trainable_bytes + step_bytes,
        activations=trace.total,
        outputs=trace.output_bytes,
        optimizer=optimizer,
        checkpointing=bool(units),
        checkpointed_activations=trace.checkpointed() if units else None,
        activations_by_module=trace.module_bytes(),
    )
