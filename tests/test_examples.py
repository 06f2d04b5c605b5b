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
    model = na.build(spec, seed=0)
    skip = {}
    if hasattr(model, "sample_inputs"):  # a GNN: the graph comes with the inputs
        inputs = model.sample_inputs(num_nodes=5)
        skip = {"batch_independence": "message passing mixes the nodes of a graph"}
    else:
        inputs = sample_inputs(spec, batch=3)
    check_module(lambda **kw: na.build(spec, seed=0, **kw), inputs, skip=skip)
    assert na.spec_hash(na.build(model.spec).spec) == na.spec_hash(spec)
    shapes = na.infer_shapes(spec)
    out = model(*inputs)
    assert tuple(out.shape[1:]) == shapes[spec.outputs[0]]


def test_dense_block_concatenates_growth():
    shapes = na.infer_shapes(REPO / "examples/specs/dense_block.yaml")
    assert [shapes[k][0] for k in ("stem", "cat1", "cat2", "cat3")] == [16, 24, 32, 40]


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_documentation_python_blocks_run(path: Path, monkeypatch):
    """Every Python block of the README and of docs/*.md is executed verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)
    assert blocks, f"{path.name} has no python example"
    monkeypatch.chdir(REPO)
    for block in blocks:
        exec(compile(block, path.name, "exec"), {})  # noqa: S102 (the docs are ours)
