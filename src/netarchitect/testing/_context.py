"""What every check needs: fresh module copies, the example inputs, seeded forward passes."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ._outputs import Named, named_tensors
from ._registry import SkipCheck


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run with the global RNG seeded to ``seed`` (unchanged if ``None``), then restore it."""
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        yield


class CheckContext:
    """The module (or its factory), the example inputs and the tolerances of one run."""

    def __init__(
        self,
        module_or_factory: Any,
        example_inputs: Any,
        *,
        atol: float,
        rtol: float,
        forward_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(module_or_factory, nn.Module):
            self.instance, self.factory = module_or_factory, None
        elif callable(module_or_factory):
            self.instance, self.factory = None, module_or_factory
        else:
            raise TypeError(
                "check_module needs an nn.Module or a factory returning one, "
                f"got {type(module_or_factory).__name__}"
            )
        self.inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        self.forward_kwargs = dict(forward_kwargs or {})
        self.atol, self.rtol = atol, rtol
        tensors = [x for x in self.inputs if isinstance(x, Tensor)]
        self.device = tensors[0].device if tensors else torch.device("cpu")
        self.subject = type(self.build()).__name__  # also validates the factory
        self._reference: Named | None = None

    def require_factory(self) -> Callable[..., nn.Module]:
        if self.factory is None:
            raise SkipCheck(
                "needs a module factory (a callable taking device=/dtype=), got an instance"
            )
        return self.factory

    def build(self, seed: int = 0, **factory_kwargs: Any) -> nn.Module:
        """A fresh copy: ``factory(**factory_kwargs)`` under ``torch.manual_seed(seed)``, or a
        deep copy of the instance (``factory_kwargs`` then need a factory)."""
        factory = self.require_factory() if factory_kwargs else self.factory
        if factory is None:
            return copy.deepcopy(self.instance)
        if self.device.type != "cpu":
            factory_kwargs.setdefault("device", self.device)
        with seeded(seed):
            module = factory(**factory_kwargs)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"the module factory returned {type(module).__name__}, not an nn.Module"
            )
        return module

    def map_inputs(self, fn: Callable[[Tensor], Tensor] = Tensor.clone) -> tuple[Any, ...]:
        """The example inputs with ``fn`` applied to each tensor (a clone by default)."""
        return tuple(fn(x) if isinstance(x, Tensor) else x for x in self.inputs)

    def call(
        self,
        module: nn.Module,
        inputs: tuple[Any, ...] | None = None,
        *,
        seed: int | None = 0,
        grad: bool = False,
    ) -> Any:
        """``module(*inputs, **forward_kwargs)`` with autograd on only if ``grad``, under
        ``torch.manual_seed(seed)`` (the global RNG is restored afterwards); ``seed=None``
        leaves the RNG alone."""
        inputs = self.map_inputs() if inputs is None else inputs
        with torch.set_grad_enabled(grad):
            if seed is None:
                return module(*inputs, **self.forward_kwargs)
            with seeded(seed):
                return module(*inputs, **self.forward_kwargs)

    def forward(self, module: nn.Module, inputs: tuple[Any, ...] | None = None, **kw: Any) -> Named:
        """Named output tensors of :meth:`call`."""
        return named_tensors(self.call(module, inputs, **kw))

    def reference(self) -> Named:
        """Eval-mode outputs of a fresh copy (seed 0), computed once."""
        if self._reference is None:
            self._reference = self.forward(self.build().eval())
        return self._reference
