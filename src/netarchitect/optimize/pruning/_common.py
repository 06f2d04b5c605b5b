"""Shared pieces of pruning: the error type and argument checks."""

from __future__ import annotations

from typing import Any

from ...errors import NetArchitectError

__all__ = ["PruneError", "check_amount", "check_round_to"]


class PruneError(NetArchitectError, ValueError):
    """A pruning request that cannot be carried out (bad amount, a dimension that would
    reach zero, a module whose channels cannot be traced); the model is left untouched."""


def check_amount(amount: Any, name: str = "amount") -> float:
    """``amount`` as a float in ``[0, 1)`` (the fraction to remove), else :class:`PruneError`."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount < 1:
        raise PruneError(f"{name}={amount!r} must be a number in [0, 1) (the fraction to remove)")
    return float(amount)


def check_round_to(round_to: Any) -> int:
    """``round_to`` as a positive int, else :class:`PruneError`."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PruneError(f"round_to={round_to!r} must be a positive integer")
    return round_to
