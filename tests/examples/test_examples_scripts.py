"""Smoke runs of the example scripts (their full runs are the documented benchmarks)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_digits_quick_trains_every_family():
    results = _load("train_digits").main(["--quick"])
    assert [r.name for r in results] == ["ResNet", "MobileNetV2", "EfficientNet", "ConvNeXt", "ViT"]
    for r in results:
        assert 0.0 <= r.accuracy <= 1.0 and r.params > 0 and r.macs > 0 and math.isfinite(r.seconds)


@pytest.mark.slow
def test_highway_depth_runs_plain_and_highway():
    out = _load("highway_depth").main(["--depth", "12", "--steps", "15"])
    assert len(out) == 2
    for losses, _ in out.values():
        assert losses and all(math.isfinite(v) for v in losses)
