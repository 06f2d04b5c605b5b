"""The spec fuzzer in the suite: a few hundred mutated specs, none may crash, hang or build
and then fail (``make fuzz`` runs 10,000)."""

from __future__ import annotations

import time

import pytest
from torch import nn

from netarchitect.testing import fuzz
from netarchitect.testing.fuzz import fuzz_specs, mutate, run_case, seed_specs


def test_seed_specs_cover_every_kind_of_block_and_all_run(tmp_path) -> None:
    seeds = seed_specs()
    assert len(seeds) > 100
    assert {run_case(s, tmp_path)[0] for s in seeds} == {"ran"}


@pytest.mark.slow
def test_hundreds_of_mutated_specs_fail_cleanly_or_run() -> None:
    result = fuzz_specs(300, seed=0)
    assert result.ok, "\n".join(f"{o}: {e}\n  {str(s)[:300]}" for o, s, e in result.failures)
    assert result.counts["ran"] > 20 and result.counts["rejected"] > 150


def test_mutations_are_seeded() -> None:
    import random

    spec = seed_specs()[0]
    a = [mutate(spec, random.Random(3)) for _ in range(1)]
    b = [mutate(spec, random.Random(3)) for _ in range(1)]
    assert a == b and a[0] != spec


def test_the_fuzzer_reports_each_kind_of_failure(tmp_path, monkeypatch) -> None:
    from netarchitect.layers.basic import Linear

    spec = {"inputs": {"x": [4]}, "nodes": [{"id": "n", "block": "linear",
                                             "params": {"out_features": 2}}]}
    assert run_case(spec, tmp_path) == ("ran", "")
    assert run_case({"inputs": 3}, tmp_path) == ("rejected", "")
    assert run_case({"inputs": {"x": [2**20]}, "nodes": [{"id": "n", "block": "relu"}]},
                    tmp_path)[0] == "skipped"

    calls = {"n": 0}
    real_forward = Linear.forward

    def fails_after_build(self, x):
        calls["n"] += 1
        if calls["n"] > 1:  # the build-time probe passes, the real forward fails
            raise KeyError("bug")
        return real_forward(self, x)

    monkeypatch.setattr(Linear, "forward", fails_after_build)
    outcome, error = run_case(spec, tmp_path)
    assert outcome == "forward_crash" and "KeyError" in error

    def fails_in_probe(self, x):
        raise AttributeError("bug")

    monkeypatch.setattr(Linear, "forward", fails_in_probe)
    assert run_case(spec, tmp_path)[0] == "crash"

    def slow(self, x):
        time.sleep(5)
        return x

    monkeypatch.setattr(Linear, "forward", slow)
    monkeypatch.setattr(fuzz, "TIME_LIMIT", 0.2)
    assert run_case(spec, tmp_path) == ("hang", "build: over 0 s")


def test_main_prints_the_counts(capsys) -> None:
    assert fuzz.main(["--cases", "20", "--seed", "1"]) == 0
    assert "20 specs in" in capsys.readouterr().out
    assert isinstance(nn.Module(), nn.Module)
