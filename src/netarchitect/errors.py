"""Exceptions raised for user mistakes.

Every error a person can cause derives from :class:`NetArchitectError`; the CLI
turns them into one line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BudgetError",
    "NetArchitectError",
    "Problem",
    "RegistryError",
    "ShapeError",
    "SpecError",
    "UnknownLayerError",
    "suggest",
]


def suggest(name: str, candidates: Iterable[str] | Any, n: int = 3) -> str:
    """Return ``" (did you mean 'a', 'b'?)"`` for the closest candidates, or ``""``.

    Names longer than 100 characters get no suggestion (matching them costs quadratic time).
    """
    if not isinstance(name, str) or len(name) > 100:
        return ""
    close = difflib.get_close_matches(name, [c for c in candidates if len(str(c)) <= 100], n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"


class NetArchitectError(Exception):
    """Base class of every error caused by user input."""


class Problem:
    """One problem found while validating a spec: where it is and what is wrong."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __repr__(self) -> str:
        return f"Problem({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and (self.path, self.message) == (
            other.path,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.message))


class SpecError(NetArchitectError, ValueError):
    """A spec (or a block argument) is invalid.

    ``path`` locates the first problem (``nodes[2].params.num_heads``);
    ``problems`` lists all of them when validation collected several.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        path: str = "",
        problems: Iterable[Problem] | None = None,
    ) -> None:
        self.problems: list[Problem] = list(problems or [])
        if not self.problems and message is not None:
            self.problems = [Problem(path, message)]
        self.path = path or (self.problems[0].path if self.problems else "")
        if message is None:
            message = "; ".join(str(p) for p in self.problems)
        elif path and not message.startswith(path):
            message = f"{path}: {message}"
        super().__init__(message)

    def __str__(self) -> str:
        if len(self.problems) > 1:
            lines = [f"{len(self.problems)} problems:"]
            lines += [f"  {p}" for p in self.problems]
            return "\n".join(lines)
        return super().__str__()


class ShapeError(SpecError):
    """Tensor shapes do not fit together (a merge, a block input)."""


class BudgetError(NetArchitectError):
    """A size, memory or search budget cannot be met."""


class RegistryError(NetArchitectError, KeyError):
    """A name is unknown to, or registered twice in, the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(RegistryError, ValueError):
    """A layer-type name (``norm_layer="batchnrm"``) is unknown to a layer factory; both a
    :class:`RegistryError` and a ``ValueError``."""
