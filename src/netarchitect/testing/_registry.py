"""The registry of conformance checks and the exceptions a check uses to report."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._context import CheckContext


class CheckFailure(Exception):
    """Raised by a check: the module does not conform; the message says why."""


class SkipCheck(Exception):
    """Raised by a check: it does not apply to this module; the message says why."""


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable[[CheckContext], None]
    opt_in: bool


_CHECKS: dict[str, Check] = {}


def register_check(
    name: str, *, opt_in: bool = False
) -> Callable[[Callable[[CheckContext], None]], Callable[[CheckContext], None]]:
    """Register ``fn(ctx)`` as check ``name``; ``opt_in`` checks run only when asked for."""

    def decorate(fn: Callable[[CheckContext], None]) -> Callable[[CheckContext], None]:
        _CHECKS[name] = Check(name, fn, opt_in)
        return fn

    return decorate


def available_checks(include_opt_in: bool = True) -> list[str]:
    """Check names in run order: the default checks, then the opt-in ones (compile, gradcheck)."""
    ordered = sorted(_CHECKS.values(), key=lambda c: c.opt_in)
    return [c.name for c in ordered if include_opt_in or not c.opt_in]


def validate_names(names: Iterable[str], what: str) -> None:
    unknown = [n for n in names if n not in _CHECKS]
    if unknown:
        raise ValueError(
            f"unknown conformance check(s) in {what}: {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(available_checks())}"
        )


def select_checks(checks: str | Iterable[str] | None, slow: bool) -> list[Check]:
    """The checks to run: ``checks`` (validated, in run order) or the defaults (+ opt-in if slow)."""
    if checks is None:
        return [_CHECKS[n] for n in available_checks(include_opt_in=slow)]
    wanted = [checks] if isinstance(checks, str) else list(checks)
    validate_names(wanted, "checks")
    return [_CHECKS[n] for n in available_checks() if n in wanted]
