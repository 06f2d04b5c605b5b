"""Parameter counting with shared and tied tensors counted once."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._common import tensor_nbytes, view_key

__all__ = ["ParamCount", "count_params", "unique_tensors"]


@dataclass
class ParamCount:
    """Parameter and buffer element counts (and bytes) of a model.

    ``total`` is ``trainable + frozen`` (buffers are reported apart). Tensors that share
    memory (tied embeddings, the same ``Parameter`` registered twice) are counted once;
    a shared tensor is trainable if any of its registrations requires grad.
    ``by_module`` maps each module path (``""`` is the root) to the number of unique
    parameters inside it, children included.
    """

    trainable: int
    frozen: int
    buffers: int
    trainable_bytes: int = 0
    frozen_bytes: int = 0
    buffer_bytes: int = 0
    trainable_tensors: int = 0
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def param_bytes(self) -> int:
        return self.trainable_bytes + self.frozen_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "buffers": self.buffers,
            "param_bytes": self.param_bytes,
            "trainable_bytes": self.trainable_bytes,
            "frozen_bytes": self.frozen_bytes,
            "buffer_bytes": self.buffer_bytes,
            "by_module": dict(self.by_module),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def unique_tensors(tensors: Iterable[torch.Tensor]) -> dict[Any, torch.Tensor]:
    """Tensors keyed by the memory they cover; shared/tied tensors appear once.

    Real tensors are keyed by storage data pointer plus offset, shape and strides; meta
    tensors (no data pointer) by their storage object, which tied parameters share.
    """
    unique: dict[Any, torch.Tensor] = {}
    for t in tensors:
        unique.setdefault(view_key(t), t)
    return unique


def _all_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for _, p in model.named_parameters(remove_duplicate=False)]


def count_params(model: nn.Module, *, by_module: bool = True) -> ParamCount:
    """Count trainable, frozen and buffer elements of ``model`` (works on ``meta``).

    A GPT-2 (small) with its ``lm_head`` tied to the token embedding counts
    124,439,808 parameters, not 163,037,184.
    """
    requires: dict[Any, bool] = {}
    tensors: dict[Any, torch.Tensor] = {}
    for p in _all_params(model):
        key = view_key(p)
        tensors.setdefault(key, p)
        requires[key] = requires.get(key, False) or p.requires_grad
    trainable = [t for k, t in tensors.items() if requires[k]]
    frozen = [t for k, t in tensors.items() if not requires[k]]
    buffers = list(
        unique_tensors(b for _, b in model.named_buffers(remove_duplicate=False)).values()
    )
    per_module: dict[str, int] = {}
    if by_module:
        for name, module in model.named_modules():
            owned = unique_tensors(_all_params(module))
            per_module[name] = sum(t.numel() for t in owned.values())
    return ParamCount(
        trainable=sum(t.numel() for t in trainable),
        frozen=sum(t.numel() for t in frozen),
        buffers=sum(t.numel() for t in buffers),
        trainable_bytes=sum(tensor_nbytes(t) for t in trainable),
        frozen_bytes=sum(tensor_nbytes(t) for t in frozen),
        buffer_bytes=sum(tensor_nbytes(t) for t in buffers),
        trainable_tensors=len(trainable),
        by_module=per_module,
    )
