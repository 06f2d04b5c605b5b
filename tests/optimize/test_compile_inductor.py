"""One model per family compiles with the default inductor backend (real code generation)
and matches eager; KV-cache generation with a compiled model gives the same tokens.

Each inductor compile takes 10-30 s on 2 cores, so everything here is slow-marked and the
models are the registry's ``Example`` sizes (the sweep in ``test_compile_sweep.py`` covers
every model with the cheap ``eager`` backend).
"""

from __future__ import annotations

import shutil

import pytest
import torch

import netarchitect as na
from netarchitect.generation import generate
from netarchitect.optimize.compile import compile_model
from netarchitect.registry import model_example
from netarchitect.testing._outputs import flatten_tensors

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("g++") is None and shutil.which("c++") is None,
        reason="inductor's CPU code generation needs a C++ compiler (none on PATH)",
    ),
]

#: Smallest registered variant of each family.
FAMILIES = [
    "resnet18",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_ti_16",
    "gpt2-tiny",
    "llama-tiny",
    "bert-tiny",
    "moe-decoder-s",
]
#: Inductor fuses and reorders float32 reductions: outputs agree to ~1e-6, not bit for bit.
RTOL, ATOL = 1e-4, 1e-5


def _small(name: str):
    ex = model_example(name)
    return na.create_model(name, **{**ex.kwargs, "seed": 0}).eval(), ex.inputs


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", FAMILIES)
def test_inductor_matches_eager(name: str) -> None:
    model, inputs = _small(name)
    with torch.no_grad():
        ref = flatten_tensors(model(*inputs))
        out = flatten_tensors(compile_model(model)(*inputs))
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)


def test_compiled_kv_cache_generation_gives_the_same_tokens() -> None:
    """``generate`` allocates a fixed-size cache; with ``dynamic=None`` Dynamo compiles the
    prompt step, then marks the growing cache length dynamic: no recompile per token."""
    model, (ids,) = _small("gpt2-tiny")
    prompt = ids[:, :4]
    ref = generate(model, prompt, 8, temperature=0)
    compiled = compile_model(model)
    stats = torch._dynamo.utils.counters["stats"]  # cumulative over the process
    before = stats["unique_graphs"]
    torch.testing.assert_close(generate(compiled, prompt, 8, temperature=0), ref, rtol=0, atol=0)
    graphs = stats["unique_graphs"] - before
    assert 1 <= graphs <= 3  # prompt, first token, one dynamic-length graph: not one per token
    torch.testing.assert_close(generate(compiled, prompt, 8, temperature=0), ref, rtol=0, atol=0)
    assert stats["unique_graphs"] - before == graphs  # the second generation recompiles nothing
