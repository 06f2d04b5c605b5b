"""The one error type of :mod:`netarchitect.parallel` for user mistakes."""

from __future__ import annotations

from ..errors import NetArchitectError

__all__ = ["ParallelError"]


class ParallelError(NetArchitectError, ValueError):
    """A parallel layout the model or the process group cannot take.

    Raised for a mesh that does not match the world size, a tensor-parallel degree that
    does not divide a module's heads or features (the message names the module and the
    numbers), a plan glob that matches nothing, or a pipeline split that cannot be made.
    """
