"""Errors raised for bad arguments to the generative toolkit (schedules, samplers, losses)."""

from __future__ import annotations

from ..errors import NetArchitectError

__all__ = ["GenerativeError"]


class GenerativeError(NetArchitectError, ValueError):
    """A generative-model argument is invalid; the message names the argument and its value
    (``steps: 0 is not in [1, 1000]``)."""
