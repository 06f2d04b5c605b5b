"""The compile benchmark runs end to end (tiny sizes, the cheap ``eager`` backend) and records
both cases with their target; the real numbers come from ``python -m
benchmarks.bench_optimize_compile``."""

from __future__ import annotations

import functools
import json

import pytest

from benchmarks import bench_optimize_compile as bench


@pytest.mark.slow
def test_benchmark_records_both_cases(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = functools.partial(bench.run, dim=16, heads=2, seq_len=8, batch=2, img_size=32)
    monkeypatch.setattr(bench, "run", tiny)
    argv = ["--warmup", "0", "--repeats", "1", "--threads", "1", "--backend", "eager"]
    results = bench.main([*argv, "--results-dir", str(tmp_path)])
    assert set(results) == {"compile_transformer_block", "compile_resnet18"}
    saved = json.loads((tmp_path / "optimize.json").read_text())
    assert set(saved["cases"]) == set(results)
    for case, entry in saved["cases"].items():
        assert entry["target"] == bench.TARGET and entry["ratio"] > 0, case
        assert entry["extra"]["backend"] == "eager" and entry["extra"]["compile_s"] > 0
        assert entry["peer"]["label"] == "eager"
