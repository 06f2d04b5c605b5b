"""Recomputation under gradient checkpointing that leaves BatchNorm's running statistics alone.

``torch.utils.checkpoint`` re-runs a module's forward during backward; a BatchNorm in
training mode would then update its running mean/variance a second time. Both the base
``Network`` and :mod:`netarchitect.optimize.checkpointing` recompute inside
:func:`running_stats_kept`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["running_stats_kept", "stats_preserving_context"]


@contextlib.contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of the norms in ``module`` afterwards."""
    norms = [m for m in module.modules() if isinstance(m, _NormBase) and m.track_running_stats]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, old in zip(norms, saved, strict=True):
                for buf, value in zip(m.buffers(recurse=False), old, strict=True):
                    buf.copy_(value)


def stats_preserving_context(module: nn.Module) -> Callable[[], tuple[Any, Any]]:
    """A ``context_fn`` for ``checkpoint``: a plain forward, a recompute that keeps stats."""
    return lambda: (contextlib.nullcontext(), running_stats_kept(module))
