"""Every example spec builds, runs, round-trips and passes the conformance harness."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import netarchitect as na
from netarchitect.network import sample_inputs
from netarchitect.testing import check_module

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "examples" / "specs").glob("*.yaml"))


def test_there_are_the_example_specs():
    assert {p.stem for p in SPECS} >= {
        "residual_mlp", "small_cnn_skip", "dense_block", "highway_mlp", "tiny_transformer"
    }


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_example_spec_builds_and_conforms(path: Path):
    spec = na.load_spec(path)
    inputs = sample_inputs(spec, batch=3)
    check_module(lambda **kw: na.build(spec, seed=0, **kw), inputs)
    model = na.build(spec, seed=0)
    assert na.spec_hash(na.build(model.spec).spec) == na.spec_hash(spec)
    shapes = na.infer_shapes(spec)
    out = model(*inputs)
    assert tuple(out.shape[1:]) == shapes[spec.outputs[0]]


def test_dense_block_concatenates_growth():
    shapes = na.infer_shapes(REPO / "examples/specs/dense_block.yaml")
    assert [shapes[k][0] for k in ("stem", "cat1", "cat2", "cat3")] == [16, 24, 32, 40]


def test_readme_python_blocks_run(monkeypatch):
    """Every Python block of the README (quickstart, models) is executed verbatim."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 2
    monkeypatch.chdir(REPO)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 (the README is ours)
