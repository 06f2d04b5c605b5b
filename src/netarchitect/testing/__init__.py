"""Conformance harness: does a module honour the contract every netarchitect block follows?

>>> report = check_module(functools.partial(MyBlock, 64), torch.randn(2, 64))
>>> print(report)

Checks run on fresh, seeded copies; see :func:`available_checks` for their names.
"""

from __future__ import annotations

from ._outputs import flatten_tensors
from ._registry import available_checks
from .harness import assert_conformance, check_module
from .report import CheckResult, ConformanceReport

__all__ = [
    "CheckResult",
    "ConformanceReport",
    "assert_conformance",
    "available_checks",
    "check_module",
    "flatten_tensors",
]
