"""Shared helpers of the layer library: the layer-type resolver and argument checks.

``resolve_layer`` is the one resolver behind ``get_norm_layer`` and
``get_act_layer``: a layer type given as a name, a class, a ``functools.partial``
or any callable becomes a constructor that accepts ``device=`` / ``dtype=``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SpecError, UnknownLayerError, suggest

__all__ = [
    "MAX_SIZE",
    "LayerType",
    "ParameterFree",
    "UnknownLayerError",
    "canonical_name",
    "check_choice",
    "check_divides",
    "check_non_negative",
    "check_positive_int",
    "check_probability",
    "example_tensor",
    "make_divisible",
    "reset_children",
    "resolve_layer",
]

#: A layer type as blocks accept it: a registered name, a mapping ``{"name": ..., **kwargs}``
#: (a name with constructor arguments, as specs write it), a class, a partial, or ``None``.
LayerType = str | Mapping[str, Any] | Callable[..., nn.Module] | None


def canonical_name(name: str) -> str:
    """Lower-case ``name`` and drop ``_``, ``-`` and spaces: ``"Layer_Norm"`` -> ``"layernorm"``."""
    return "".join(ch for ch in name.lower() if ch not in "_- ")


def _accepts_factory_kwargs(ctor: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(ctor)
    except (TypeError, ValueError):  # builtins without a signature: assume they do
        return True
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return "device" in params and "dtype" in params


def _without_factory_kwargs(
    ctor: Callable[..., nn.Module],
    *args: Any,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> nn.Module:
    module = ctor(*args, **kwargs)
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)
    return module


def resolve_layer(
    layer: LayerType,
    table: Mapping[str, Callable[..., nn.Module]],
    *,
    kind: str,
) -> Callable[..., nn.Module]:
    """Turn a layer type into a constructor accepting ``device=`` and ``dtype=``.

    ``layer`` is a name looked up in ``table`` (case, ``_`` and ``-`` ignored; the
    table must hold ``"none"`` for ``None``), a class, a ``functools.partial`` or a
    callable. User callables that do not take ``device``/``dtype`` are wrapped so
    the module is moved there after construction.
    """
    if layer is None:
        layer = "none"
    if isinstance(layer, Mapping):
        return _resolve_mapping(layer, table, kind=kind)
    if isinstance(layer, str):
        lookup = {canonical_name(k): v for k, v in table.items()}
        try:
            return lookup[canonical_name(layer)]
        except KeyError:
            hint = suggest(layer.lower(), sorted(table))
            raise UnknownLayerError(
                f"unknown {kind} layer {layer!r}{hint}; known: {', '.join(sorted(table))}"
            ) from None
    if isinstance(layer, nn.Module):
        raise TypeError(
            f"{kind} layer must be a name, a class or a functools.partial, not the module "
            f"instance {type(layer).__name__}(); pass its class instead"
        )
    if not callable(layer):
        raise TypeError(f"{kind} layer must be a name, a class or a callable, got {layer!r}")
    if _accepts_factory_kwargs(layer):
        return layer
    return functools.partial(_without_factory_kwargs, layer)


def _resolve_mapping(
    layer: Mapping[str, Any], table: Mapping[str, Callable[..., nn.Module]], *, kind: str
) -> Callable[..., nn.Module]:
    """``{"name": "batchnorm2d", "eps": 1e-3}`` -> ``partial(BatchNorm2d, eps=1e-3)``."""
    kwargs = dict(layer)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"{kind} layer given as a mapping needs a 'name' (a string), got {dict(layer)!r}"
        )
    ctor = resolve_layer(name, table, kind=kind)
    if not kwargs:
        return ctor
    target = ctor.func if isinstance(ctor, functools.partial) else ctor
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in kwargs if params and not open_kwargs and k not in params)
    if unknown:
        known = [k for k in params if k not in ("self", "device", "dtype")]
        raise TypeError(
            f"{kind} layer {name!r} has no argument(s) {unknown}{suggest(unknown[0], known)}"
        )
    return functools.partial(ctor, **kwargs)


#: The largest size (or count) a block accepts: 2³¹ - 1, the limit of most kernels' indices.
MAX_SIZE = 2**31 - 1


def check_positive_int(name: str, value: Any, maximum: int = MAX_SIZE) -> None:
    """Raise ``SpecError`` unless ``value`` is an ``int`` in ``[1, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{name}={value!r} must be a positive integer")
    if value > maximum:
        raise SpecError(f"{name}={value:,} is larger than the {maximum:,} supported")


def check_non_negative(name: str, value: Any) -> None:
    """Raise ``SpecError`` unless ``value`` is a real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise SpecError(f"{name}={value!r} must be a non-negative number")


def check_divides(divisor_name: str, divisor: int, name: str, value: int) -> None:
    """Raise ``SpecError`` (``"groups=3 does not divide in_channels=64"``) unless it divides."""
    if value % divisor:
        raise SpecError(f"{divisor_name}={divisor} does not divide {name}={value}")


def check_probability(name: str, value: Any, *, allow_one: bool = False) -> None:
    """Raise ``SpecError`` unless ``0 <= value < 1`` (``<= 1`` with ``allow_one``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and 0.0 <= value and (value <= 1.0 if allow_one else value < 1.0)
    if not ok:
        upper = "1]" if allow_one else "1)"
        raise SpecError(f"{name}={value!r} must be in [0, {upper}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``SpecError`` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise SpecError(f"{name}={value!r} must be one of {', '.join(map(repr, choices))}")


def make_divisible(
    value: float, divisor: int = 8, *, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without losing more than 10%.

    The MobileNet/EfficientNet channel rounding rule (``_make_divisible``).
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


class ParameterFree:
    """Mixin for layers without parameters or buffers: a no-op ``reset_parameters()``."""

    def reset_parameters(self) -> None:
        """Parameter-free: nothing to initialise."""


def reset_children(module: nn.Module) -> None:
    """Call ``reset_parameters()`` on each child of ``module`` (recursing into plain containers)."""
    for child in module.children():
        reset = getattr(child, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            reset_children(child)


def example_tensor(*shape: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal tensor for ``example()`` inputs."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
