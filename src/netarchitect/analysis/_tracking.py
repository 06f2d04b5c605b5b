"""Which module is running right now, in the forward *and* the backward pass.

Forward: global forward pre/post hooks keep a stack of module paths (a module that
is entered again while running, or shared between two parents, is reported once).

Backward: every autograd node carries the sequence number it was created with, and
the counter can be read without creating a node. A module call therefore owns the
half-open range of sequence numbers ``[seq at entry, seq at exit)``; during backward
the node being executed (``torch._C._current_autograd_node()``) is mapped back to
every module call whose range holds its sequence number. This is exact for
branches and shared modules, unlike attribution by gradient-hook order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from typing_extensions import Self

__all__: list[str] = []  # private module

PreCallback = Callable[[str, nn.Module, tuple[Any, ...]], None]
PostCallback = Callable[[str, nn.Module, tuple[Any, ...], Any], None]


def _sequence_nr() -> int:
    return int(torch._C._autograd._get_sequence_nr())


def in_backward() -> bool:
    """True while the autograd engine is running a backward pass on this thread."""
    return torch._C._current_graph_task_id() != -1


class ModuleTracker:
    """Context manager tracking the module paths of ``root`` that are executing.

    ``paths()`` returns the paths (outermost first) the current operation belongs to.
    Modules that are not inside ``root`` are ignored. Optional callbacks see each
    call of a tracked module: ``pre(path, module, args)``, ``post(path, module, args, out)``.
    """

    def __init__(
        self,
        root: nn.Module,
        *,
        pre: PreCallback | None = None,
        post: PostCallback | None = None,
    ) -> None:
        self.names: dict[int, str] = {id(m): name for name, m in root.named_modules()}
        self.stack: list[str] = []
        self._starts: list[int] = []
        self._pre_cb = pre
        self._post_cb = post
        self._intervals: list[tuple[int, int, str]] = []  # (start, end, path)
        self._sorted = True
        self._cache: dict[int, tuple[str, ...]] = {}
        self._handles: list[Any] = []

    # -- hooks -----------------------------------------------------------------
    def _on_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        path = self.names.get(id(module))
        if path is None:
            return
        self.stack.append(path)
        self._starts.append(_sequence_nr())
        if self._pre_cb is not None:
            self._pre_cb(path, module, args)

    def _on_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        path = self.names.get(id(module))
        if path is None or not self.stack:
            return
        # Pop the innermost entry of this path (exceptions may have skipped others).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] == path:
                start = self._starts[i]
                del self.stack[i:]
                del self._starts[i:]
                break
        else:
            return
        end = _sequence_nr()
        if end > start:
            self._intervals.append((start, end, path))
            self._sorted = False
            self._cache.clear()
        if self._post_cb is not None:
            self._post_cb(path, module, args, output)

    def __enter__(self) -> Self:
        self._handles = [
            register_module_forward_pre_hook(self._on_pre),
            register_module_forward_hook(self._on_post, always_call=True),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.stack.clear()
        self._starts.clear()

    # -- queries ---------------------------------------------------------------
    def forward_paths(self) -> tuple[str, ...]:
        """Paths of the modules whose forward is running (outermost first, unique)."""
        return tuple(dict.fromkeys(self.stack))

    def paths_of_sequence(self, seq: int) -> tuple[str, ...]:
        """Paths of every module call whose forward created autograd node number ``seq``."""
        cached = self._cache.get(seq)
        if cached is not None:
            return cached
        if not self._sorted:
            self._intervals.sort()
            self._sorted = True
        stop = bisect.bisect_right(self._intervals, (seq, float("inf"), ""))
        found = [path for start, end, path in self._intervals[:stop] if start <= seq < end]
        result = tuple(dict.fromkeys(sorted(found, key=lambda p: (p.count("."), p != "", p))))
        self._cache[seq] = result
        return result

    def paths(self) -> tuple[str, ...]:
        """Paths the operation running now belongs to (forward or backward)."""
        forward = self.forward_paths()
        if not in_backward():
            return forward
        node = torch._C._current_autograd_node()
        if node is None:
            return forward
        owners = self.paths_of_sequence(int(node._sequence_nr()))
        return tuple(dict.fromkeys(owners + forward)) if forward else owners
