"""Every registered block and model traces as ONE graph: ``torch.compile(fullgraph=True)``
with the cheap ``"eager"`` backend (Dynamo's tracing, no code generation) at the registry's
``Example`` size, in eval mode under ``no_grad`` (outputs equal to eager) and in training mode.

A block that breaks the graph is fixed in the block, never skipped here. The sweep takes
about two minutes of CPU (~320 Dynamo traces), so it is slow-marked; the blocks that needed a
compile-friendly path are also checked fast in ``test_compile_static_paths.py``.
"""

from __future__ import annotations

import functools

import pytest
import torch

import netarchitect as na
from netarchitect.optimize.compile import data_dependent_modules, graph_breaks
from netarchitect.registry import block_examples, get_block, list_blocks, list_models, model_example
from netarchitect.testing._outputs import flatten_tensors

pytestmark = pytest.mark.slow


def _block_cases() -> list:
    return [
        pytest.param(name, i, id=f"{name}-{ex.name or i}")
        for name in list_blocks()
        for i, ex in enumerate(block_examples(get_block(name)))
    ]


def _block(name: str, index: int):
    ex = block_examples(get_block(name))[index]
    return get_block(name)(**ex.kwargs), ex.inputs, ex.forward_kwargs


def _model(name: str):
    ex = model_example(name)
    return na.create_model(name, **{**ex.kwargs, "seed": 0}), ex.inputs, {}


def _traces_as_one_graph(build, training: bool) -> None:
    """Compile with ``fullgraph=True`` (a graph break raises) and, in eval mode, check that
    the compiled outputs equal the eager ones."""
    module, inputs, kwargs = build()
    module.train(training)
    if data_dependent_modules(module):  # declared (adaptive ODE solvers): they must break
        assert graph_breaks(module, *inputs, **kwargs), "declared data-dependent, yet one graph"
        return
    torch._dynamo.reset()
    try:
        compiled = torch.compile(module, fullgraph=True, backend="eager")
        with torch.set_grad_enabled(training):  # inference takes no_grad-only fast paths
            out = compiled(*inputs, **kwargs)
            ref = None if training else module(*inputs, **kwargs)
    finally:
        torch._dynamo.reset()
    if ref is not None:
        torch.testing.assert_close(flatten_tensors(out), flatten_tensors(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("name", "index"), _block_cases())
def test_block_has_no_graph_breaks(name: str, index: int, training: bool) -> None:
    _traces_as_one_graph(functools.partial(_block, name, index), training)


@pytest.mark.parametrize("name", list_models())
def test_model_has_no_graph_breaks(name: str) -> None:
    _traces_as_one_graph(functools.partial(_model, name), training=False)


@pytest.mark.parametrize("name", list_models())
def test_model_has_no_graph_breaks_in_training(name: str) -> None:
    _traces_as_one_graph(functools.partial(_model, name), training=True)
