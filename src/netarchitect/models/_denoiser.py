"""The diffusion denoiser's call convention, shared by every spec-built denoiser network.

``model(x_t, t)`` or ``model(x_t, t, y)``: ``t`` (and ``y``) are the spec's context; roles
``{kind, num_classes: int | null, num_train_timesteps: int}``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import Problem
from ..network import Network
from ..spec import NetworkSpec

__all__ = ["DenoiserNetwork"]


class DenoiserNetwork(Network):
    """A spec-built diffusion denoiser: ``model(x_t, t)`` or ``model(x_t, t, y)``.

    Positional values after ``x_t`` bind to the context ``t`` then ``y``; a call without
    ``t`` is refused (it would silently denoise as if ``t = 0``). A 0-d ``t`` is broadcast
    to the batch; a class-conditional model called without ``y`` uses the null class
    ``num_classes``.
    """

    @classmethod
    def check_roles(cls, spec: NetworkSpec) -> list[Problem]:
        """``num_classes`` is null or a positive int; ``num_train_timesteps`` positive."""
        problems = []
        n = spec.roles.get("num_classes")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            problems.append(Problem("roles.num_classes", f"{n!r} must be null or a positive int"))
        steps = spec.roles.get("num_train_timesteps", 1000)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            problems.append(Problem("roles.num_train_timesteps", f"{steps!r} must be positive"))
        return problems

    @property
    def num_classes(self) -> int | None:
        """Number of real classes (the null class is this number), or ``None``."""
        return self.spec.roles.get("num_classes")

    @property
    def null_class(self) -> int | None:
        """The "no class" label of classifier-free guidance (``num_classes``)."""
        return self.num_classes

    @property
    def num_train_timesteps(self) -> int:
        """The ``T`` the model is meant for (``t`` in ``[0, T)``)."""
        return int(self.spec.roles.get("num_train_timesteps", 1000))

    def _bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        extra = args[1:]
        if len(extra) > len(self._spec.context):
            raise TypeError(
                f"{self._spec.name}: expected model(x_t, {', '.join(self._spec.context)}), "
                f"got {len(args)} positional arguments"
            )
        for name, value in zip(self._spec.context, extra, strict=False):
            if name in kwargs:
                raise TypeError(f"{self._spec.name}: {name!r} given twice")
            kwargs[name] = value
        values, context = super()._bind(args[:1], kwargs)
        t = context.get("t")
        if t is None:
            raise TypeError(f"{self._spec.name}: the timesteps are required: model(x_t, t)")
        x = values[self._input_names[0]]
        if isinstance(t, int | float):
            t = torch.tensor(t, device=x.device)
        if t.dim() == 0:
            context["t"] = t.expand(x.shape[0])
        return values, context

    def sample_inputs(
        self, batch: int = 2, *, seed: int = 0, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, ...]:
        """``(x_t, t)`` — and ``y`` for a class-conditional model — of a representative call:
        ``x_t ~ N(0, 1)``, ``t`` and ``y`` uniform over their ranges. For tools that call
        ``model(*inputs)`` (``count_flops``, ``inspect``)."""
        g = torch.Generator().manual_seed(seed)
        shape = self._spec.inputs[0].shape
        out = [torch.randn(batch, *shape, generator=g),
               torch.randint(0, self.num_train_timesteps, (batch,), generator=g)]
        if self.num_classes is not None:
            out.append(torch.randint(0, self.num_classes + 1, (batch,), generator=g))
        return tuple(v.to(device) for v in out)
