"""Validation of graph inputs: ``edge_index``, ``batch`` vectors and coordinates.

Errors are :class:`GraphInputError` with a message naming the argument
(``edge_index[1]: index 17 out of range for 10 nodes``). Value checks (range,
sortedness, finiteness) are one ``aminmax``-style reduction each; they are skipped on
the ``meta`` device (no values) and while ``torch.compile`` traces.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import NetArchitectError

__all__ = [
    "GraphInputError",
    "check_batch",
    "check_edge_index",
    "check_finite",
    "skip_value_checks",
]

_INDEX_DTYPES = (torch.int64, torch.int32)


class GraphInputError(NetArchitectError, ValueError):
    """A graph input (``edge_index``, ``batch``, ``pos`` ...) is malformed."""


def skip_value_checks(t: Tensor) -> bool:
    """``True`` where reading ``t``'s values is impossible or costly: meta tensors, compiling."""
    return t.device.type == "meta" or torch.compiler.is_compiling()


def _check_index_tensor(t: object, where: str, ndim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise GraphInputError(f"{where}: expected a tensor, got {type(t).__name__}")
    if t.dtype not in _INDEX_DTYPES:
        raise GraphInputError(f"{where}: dtype must be torch.int64 or torch.int32, got {t.dtype}")
    if t.dim() != ndim:
        raise GraphInputError(f"{where}: expected {ndim} dimension(s), got shape {tuple(t.shape)}")
    return t


def check_edge_index(edge_index: Tensor, num_nodes: int, where: str = "edge_index") -> None:
    """Raise :class:`GraphInputError` unless ``edge_index`` is an int ``(2, E)`` tensor with
    every entry in ``[0, num_nodes)``."""
    _check_index_tensor(edge_index, where, 2)
    if edge_index.shape[0] != 2:
        raise GraphInputError(f"{where}: expected shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() == 0 or skip_value_checks(edge_index):
        return
    for row in (0, 1):
        lo, hi = (int(v) for v in torch.aminmax(edge_index[row]))
        if lo < 0:
            raise GraphInputError(f"{where}[{row}]: negative index {lo}")
        if hi >= num_nodes:
            raise GraphInputError(f"{where}[{row}]: index {hi} out of range for {num_nodes} nodes")


def check_batch(batch: Tensor, num_nodes: int, where: str = "batch") -> None:
    """Raise :class:`GraphInputError` unless ``batch`` is a sorted, non-negative int vector
    of length ``num_nodes`` (graph id of each node)."""
    _check_index_tensor(batch, where, 1)
    if batch.shape[0] != num_nodes:
        raise GraphInputError(f"{where}: length {batch.shape[0]} does not match {num_nodes} nodes")
    if num_nodes == 0 or skip_value_checks(batch):
        return
    lo = int(batch.min())
    if lo < 0:
        raise GraphInputError(f"{where}: negative graph id {lo}")
    if num_nodes > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise GraphInputError(f"{where}: graph ids must be sorted (non-decreasing)")


def check_finite(t: Tensor, name: str) -> None:
    """Raise :class:`GraphInputError` if ``t`` (e.g. ``pos``) holds NaN or infinity."""
    if not isinstance(t, Tensor):
        raise GraphInputError(f"{name}: expected a tensor, got {type(t).__name__}")
    if skip_value_checks(t) or t.numel() == 0 or not t.is_floating_point():
        return
    if not bool(torch.isfinite(t).all()):
        raise GraphInputError(f"{name}: contains NaN or infinite values")
