"""The benchmark's 7 coupling patterns prune without hints here (the peer is only run in
``benchmarks/bench_optimize_prune.py``)."""

from __future__ import annotations

import pytest

from benchmarks.bench_optimize_prune import PATTERNS, _ours, _outcome

CASES = [(p, v, make) for p, variants in PATTERNS.items() for v, make in variants]


def test_there_are_seven_patterns() -> None:
    assert len(PATTERNS) == 7


@pytest.mark.parametrize(("pattern", "variant", "make"), CASES,
                         ids=[f"{p}-{v}" for p, v, _ in CASES])
def test_pattern_prunes_without_hints(pattern: str, variant: str, make) -> None:
    model, inputs = make()
    assert _outcome(model, _ours(model, inputs), inputs, pattern) == "ok"
