"""Helpers shared by the analysis tools: calling a model, walking outputs, storage identity."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__: list[str] = []  # private module

Inputs = Any
"""A tensor, a tuple/list of positional inputs, or a dict of keyword inputs."""


class EagerDispatchMode(TorchDispatchMode):
    """A ``TorchDispatchMode`` whose ``__torch_dispatch__`` runs without the dynamo guard.

    PyTorch wraps ``__torch_dispatch__`` in ``torch._disable_dynamo`` unless told not to;
    the wrapper imports ``torch._dynamo`` (seconds) and slows every op. The analysis modes
    compile nothing, so they skip it.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Run ``model`` on ``inputs``: a tensor, a tuple/list (positional) or a dict (keywords)."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor inside a (nested) tuple/list/dict structure, in order."""
    leaves, _ = tree_flatten(obj)
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor of a (nested) structure, or None."""
    found = tensors_in(obj)
    return found[0] if found else None


def is_meta(inputs: Inputs, model: nn.Module | None = None) -> bool:
    """True when any input tensor or model parameter lives on the meta device."""
    tensors = tensors_in(inputs)
    if model is not None:
        tensors += list(model.parameters())
    return any(t.is_meta for t in tensors)


def storage_key(t: torch.Tensor) -> tuple[str, int]:
    """Identity of the memory that backs ``t``.

    Real tensors are identified by their storage's data pointer; meta tensors have none
    (their data pointer is 0), so they fall back to the address of the storage object
    itself, which views and tied parameters share. Tensors without a storage (sparse,
    nested, some subclasses) are identified by the tensor object.
    """
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError):
        return ("tensor", id(t))
    ptr = storage.data_ptr()
    if ptr:
        return ("ptr", ptr)
    return ("impl", storage._cdata)


def view_key(t: torch.Tensor) -> tuple[Any, ...]:
    """Identity of the *elements* of ``t``: its storage plus offset, shape and strides."""
    return (storage_key(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def storage_nbytes(t: torch.Tensor) -> int:
    """Bytes of the whole storage behind ``t`` (what stays allocated while ``t`` lives)."""
    try:
        return int(t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError, TypeError):
        return tensor_nbytes(t)


def tensor_nbytes(t: torch.Tensor) -> int:
    """Bytes of the elements of ``t`` itself."""
    return t.numel() * t.element_size()


def human_count(n: float) -> str:
    """``124439808`` → ``'124.44 M'``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def human_bytes(n: float) -> str:
    """``1536`` → ``'1.50 KiB'``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"
