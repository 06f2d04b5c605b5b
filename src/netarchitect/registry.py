"""Name → block class and name → model builder registries.

Blocks are ``nn.Module`` classes usable from specs; models are builder
functions returning a ready ``nn.Module`` (:func:`netarchitect.factory.create_model`
calls them). This module is plain tables: it imports nothing of the library. Both are looked up by name, and an
unknown name raises :class:`RegistryError` suggesting the closest names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from torch import nn

from .errors import RegistryError, suggest

__all__ = [
    "Example",
    "add_loader",
    "block_examples",
    "get_block",
    "get_model_builder",
    "get_network_class",
    "layer_table",
    "list_blocks",
    "list_models",
    "list_network_kinds",
    "model_example",
    "register_block",
    "register_model",
    "register_network_kind",
    "suggest",
]

T = TypeVar("T")

_BLOCKS: dict[str, type[nn.Module]] = {}
_LAYER_KINDS: dict[str, dict[str, type[nn.Module]]] = {}
_NETWORK_KINDS: dict[str, type[nn.Module]] = {}
_MODELS: dict[str, Callable[..., nn.Module]] = {}
_MODEL_EXAMPLES: dict[str, Callable[[], Example] | None] = {}


@dataclass(frozen=True)
class Example:
    """A small, valid instance of a block or model for tests and the conformance sweep.

    ``kwargs`` are constructor (or builder) arguments, ``inputs`` the positional
    forward inputs, ``forward_kwargs`` keyword arguments of the forward (a mode:
    ``{"is_causal": True}``), ``skip`` maps a conformance check name to the reason it does
    not apply (``{"batch_independence": "routing capacity couples samples"}``), ``name``
    labels the mode among a block's :func:`block_examples`.
    """

    kwargs: dict[str, Any]
    inputs: tuple[Any, ...]
    skip: dict[str, str] = field(default_factory=dict)
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


_LOADERS: list[Callable[[], None]] = []


def add_loader(load: Callable[[], None]) -> None:
    """Run ``load`` (which imports the modules that register things) before the first lookup.

    The package registers the import of its layers and models here, so this module stays
    a set of plain tables that imports nothing of the library.
    """
    _LOADERS.append(load)


def _ensure_loaded() -> None:
    while _LOADERS:
        _LOADERS.pop(0)()


def register_block(
    name: str, *, kind: str | Sequence[str] = (), aliases: Sequence[str] = ()
) -> Callable[[type[T]], type[T]]:
    """Class decorator registering an ``nn.Module`` subclass under ``name``.

    ``kind`` (``"norm"``, ``"act"``, ``"mlp"``, or several) also lists it, under ``name``
    and its ``aliases``, in that kind's layer table (:func:`layer_table`): the names a
    ``norm_layer=`` / ``act_layer=`` / ``mlp_layer=`` argument accepts.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)

    def decorate(cls: type[T]) -> type[T]:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise RegistryError(f"block {name!r}: {cls!r} is not an nn.Module subclass")
        if name in _BLOCKS and _BLOCKS[name] is not cls:
            raise RegistryError(f"block {name!r} is already registered to {_BLOCKS[name]!r}")
        _BLOCKS[name] = cls  # type: ignore[assignment]
        cls.block_name = name  # type: ignore[attr-defined]
        for k in kinds:
            table = _LAYER_KINDS.setdefault(k, {})
            for n in (name, *aliases):
                if n in table and table[n] is not cls:
                    raise RegistryError(f"{k} layer {n!r} is already registered to {table[n]!r}")
                table[n] = cls  # type: ignore[assignment]
        return cls

    return decorate


def layer_table(kind: str) -> Mapping[str, type[nn.Module]]:
    """The live, read-only table of ``kind`` layers (``"norm"``, ``"act"``, ``"mlp"``):
    name -> class, filled by ``register_block(..., kind=)``."""
    return MappingProxyType(_LAYER_KINDS.setdefault(kind, {}))


def register_model(
    name: str, *, example: Callable[[], Example] | None = None
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator registering a model builder under ``name``.

    ``example`` returns the smallest practical instance (builder overrides and
    forward inputs) that the conformance sweep runs.
    """

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        if name in _MODELS and _MODELS[name] is not fn:
            raise RegistryError(f"model {name!r} is already registered")
        _MODELS[name] = fn  # type: ignore[assignment]
        _MODEL_EXAMPLES[name] = example
        return fn

    return decorate


def register_network_kind(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator registering a :class:`~netarchitect.network.Network` subclass as the
    network ``kind`` a spec's ``roles`` name (``build`` returns that class)."""

    def decorate(cls: type[T]) -> type[T]:
        if name in _NETWORK_KINDS and _NETWORK_KINDS[name] is not cls:
            raise RegistryError(f"network kind {name!r} is already registered")
        _NETWORK_KINDS[name] = cls  # type: ignore[assignment]
        cls.kind = name  # type: ignore[attr-defined]
        return cls

    return decorate


def get_network_class(kind: str) -> type[nn.Module]:
    """The Network subclass registered as ``kind``."""
    _ensure_loaded()
    try:
        return _NETWORK_KINDS[kind]
    except KeyError:
        raise RegistryError(f"unknown network kind {kind!r}{suggest(kind, _NETWORK_KINDS)}") from None


def list_network_kinds() -> list[str]:
    """Sorted names of registered network kinds."""
    _ensure_loaded()
    return sorted(_NETWORK_KINDS)


def get_block(name: str) -> type[nn.Module]:
    """The block class registered as ``name``."""
    _ensure_loaded()
    try:
        return _BLOCKS[name]
    except KeyError:
        raise RegistryError(f"unknown block {name!r}{suggest(name, _BLOCKS)}") from None


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function registered as model ``name``."""
    _ensure_loaded()
    try:
        return _MODELS[name]
    except KeyError:
        raise RegistryError(f"unknown model {name!r}{suggest(name, _MODELS)}") from None


def block_examples(cls: type[nn.Module]) -> list[Example]:
    """The small instances of a block: its own ``examples()`` (one per mode, as PyTorch's
    ``ModuleInfo`` gives several inputs per module), else ``[example()]``. A subclass does
    not inherit its parent's modes (their arguments need not fit it)."""
    if "examples" in vars(cls):
        return list(cls.examples())  # type: ignore[attr-defined]
    return [cls.example()]  # type: ignore[attr-defined]


def model_example(name: str) -> Example | None:
    """The small instance registered with model ``name``, or ``None``."""
    get_model_builder(name)
    factory = _MODEL_EXAMPLES[name]
    return factory() if factory is not None else None


def list_blocks(pattern: str = "*") -> list[str]:
    """Sorted names of registered blocks matching the glob ``pattern``."""
    _ensure_loaded()
    return sorted(n for n in _BLOCKS if fnmatch.fnmatchcase(n, pattern))


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching the glob ``pattern``."""
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))
