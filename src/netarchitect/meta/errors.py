"""The error raised for a bad few-shot argument."""

from __future__ import annotations

from netarchitect.errors import NetArchitectError


class FewShotError(NetArchitectError, ValueError):
    """A few-shot argument is invalid; ``argument`` names it (``n_way``, ``k_shot``, ...)."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


def check_positive(**values: int) -> None:
    """Raise :class:`FewShotError` naming the first value that is not a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise FewShotError(name, f"must be a positive integer, got {value!r}")
