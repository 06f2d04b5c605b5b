"""The result of a conformance run: one entry per check, readable as a table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["CheckResult", "ConformanceReport"]

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check; ``reason`` says why it failed or was skipped."""

    name: str
    status: Status
    reason: str = ""
    seconds: float = 0.0


class ConformanceReport:
    """Results of :func:`~netarchitect.testing.check_module`, in run order.

    ``passed``/``failed``/``skipped`` are lists of check names; ``report[name]`` is
    the :class:`CheckResult`; ``str(report)`` is a table.
    """

    def __init__(self, subject: str, results: list[CheckResult]) -> None:
        self.subject = subject
        self.results = results

    def _names(self, status: Status) -> list[str]:
        return [r.name for r in self.results if r.status == status]

    @property
    def passed(self) -> list[str]:
        return self._names("passed")

    @property
    def failed(self) -> list[str]:
        return self._names("failed")

    @property
    def skipped(self) -> list[str]:
        return self._names("skipped")

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"check {name!r} did not run; ran: {', '.join(r.name for r in self)}")

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def summary(self) -> str:
        counts = (len(self.passed), len(self.failed), len(self.skipped))
        return "{} passed, {} failed, {} skipped".format(*counts)

    def __repr__(self) -> str:
        return f"<ConformanceReport {self.subject}: {self.summary()}>"

    def __str__(self) -> str:
        width = max([len("check")] + [len(r.name) for r in self])
        lines = [f"Conformance of {self.subject}: {self.summary()}"]
        lines.append(f"  {'check':<{width}}  status   time    reason")
        for r in self:
            lines.append(
                f"  {r.name:<{width}}  {r.status:<7}  {r.seconds:5.2f}s  {r.reason}".rstrip()
            )
        return "\n".join(lines)

    def failure_message(self) -> str:
        failed = [r for r in self if r.status == "failed"]
        head = f"{self.subject} failed {len(failed)} conformance check{'s' * (len(failed) != 1)}:"
        return "\n".join([head] + [f"  {r.name}: {r.reason}" for r in failed])

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` listing every failed check (``name: reason``); the
        error's ``.report`` is this report."""
        if self.failed:
            error = AssertionError(self.failure_message())
            error.report = self  # type: ignore[attr-defined]
            raise error
