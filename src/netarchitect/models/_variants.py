"""Named variants of a family: register each size as a model that only sets numbers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..registry import Example, register_model

__all__ = ["register_sizes"]


def register_sizes(
    family: Callable[..., Any],
    sizes: Mapping[str, Mapping[str, Any]],
    *,
    example: Callable[[], Example] | Mapping[str, Callable[[], Example]],
    describe: str,
) -> None:
    """Register ``family(**{**sizes[name], "name": name, **overrides})`` as model ``name`` for
    each size. ``example`` is one example factory or one per name; ``describe`` is the
    docstring's family, e.g. ``"GPT-2"``."""
    for name, size in sizes.items():
        register_model(name, example=example[name] if isinstance(example, Mapping) else example)(
            _variant(family, name, size, describe)
        )


def _variant(
    family: Callable[..., Any], name: str, size: Mapping[str, Any], describe: str
) -> Callable[..., Any]:
    def build(**overrides: Any) -> Any:
        return family(**{**size, "name": name, **overrides})

    build.__name__ = name.replace("-", "_").replace(".", "_")
    build.__doc__ = f"{describe} ``{name}``: {dict(size)} (see :func:`{family.__name__}`)."
    return build
