"""Smoke run of examples/fewshot_digits.py (its full run is the documented benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fewshot_digits.py"


def _load():
    spec = importlib.util.spec_from_file_location("example_fewshot_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_example_quick_run_prints_the_table_and_writes_the_png(capsys, tmp_path):
    png = tmp_path / "fewshot.png"
    args = ["--methods", "protonet,anil", "--scale", "0.002", "--episodes", "4", "--out", str(png)]
    rows = _load().main(args)
    assert [r.method for r in rows] == ["raw pixels", "protonet", "anil"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "digits 5-9" in out and "vs pixels" in out and "raw pixels" in out


def test_example_refuses_unknown_methods():
    with pytest.raises(SystemExit):
        _load().main(["--methods", "reptile"])
