"""Smoke runs of the example scripts (their full runs are the documented benchmarks)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_digits_quick_trains_every_family(capsys, tmp_path):
    png = tmp_path / "digits.png"
    results = _load("train_digits").main(["--quick", "--plot", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert [r.name for r in results] == ["ResNet", "MobileNetV2", "EfficientNet", "ConvNeXt", "ViT"]
    for r in results:
        assert 0.0 <= r.accuracy <= 1.0 and r.params > 0 and r.macs > 0
    out = capsys.readouterr().out
    assert "test acc" in out and "MACs / image" in out and "resnet18" in out


def test_train_digits_pieces() -> None:
    digits = _load("train_digits")
    x_train, y_train, _, y_test = digits.load_data()
    assert x_train.shape[1:] == (1, 32, 32) and len(y_train) + len(y_test) == 1797
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    g = torch.Generator().manual_seed(0)
    shifted = digits.shift(x_train[:4], g)
    assert shifted.shape == (4, 1, 32, 32)
    assert (
        digits.lr_factor(0.0) == 0.0 and digits.lr_factor(0.1) == math.cos(0.1 * math.pi) / 2 + 0.5
    )
    assert digits.lr_factor(1.0) < 1e-12
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    digits.recalibrate_batchnorm(bn, x_train[:256])
    with torch.no_grad():
        y = bn[0](x_train[:256])
    torch.testing.assert_close(bn[1].running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_highway_depth_shows_highway_training(capsys, tmp_path) -> None:
    highway = _load("highway_depth")
    png = tmp_path / "curves.png"
    results = highway.main(["--depth", "20", "--steps", "60", "--plot", str(png)])
    plain, hw = results["plain"][0], results["highway"][0]
    assert len(plain) == len(hw) == 60
    assert abs(sum(plain[-10:]) / 10 - math.log(10)) < 0.1  # stuck at chance
    assert sum(hw[-10:]) / 10 < 0.8 * hw[0]
    assert "highway" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
