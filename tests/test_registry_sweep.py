"""The registry sweep: every registered block and model passes the fast conformance checks.

A component is tested here the moment it is registered; its ``example()``
(blocks) or ``register_model(..., example=...)`` (models) says how to build a
small instance and what to feed it.
"""

from __future__ import annotations

import functools

import pytest
import torch

import netarchitect as na
from netarchitect.init import initialize, materialize
from netarchitect.registry import block_examples, get_block, list_blocks, list_models, model_example
from netarchitect.testing import check_module

BLOCKS = list_blocks()
MODELS = list_models()


def _block_example(name: str):
    cls = get_block(name)
    example = getattr(cls, "example", None)
    assert callable(example), f"block {name!r} ({cls.__name__}) has no example() classmethod"
    return cls, example()


def _all_examples() -> list:
    cases = []
    for name in BLOCKS:
        for i, ex in enumerate(block_examples(get_block(name))):
            cases.append(pytest.param(name, ex, id=f"{name}-{ex.name or i}"))
    return cases


@pytest.mark.parametrize(("name", "ex"), _all_examples())
def test_block_conformance(name: str, ex) -> None:
    cls = get_block(name)
    check_module(
        functools.partial(cls, **ex.kwargs), ex.inputs, skip=ex.skip, forward_kwargs=ex.forward_kwargs
    )


@pytest.mark.parametrize("name", BLOCKS)
def test_block_seeded_init_is_path_derived(name: str) -> None:
    """Meta-then-materialise gives the same weights and buffers as a CPU build with the same seed."""
    cls, ex = _block_example(name)
    cpu = initialize(cls(**ex.kwargs), seed=7)
    meta = materialize(cls(**ex.kwargs, device="meta"), "cpu", seed=7)
    a, b = cpu.state_dict(), meta.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=f"{name}: {key}")
    for (key, buf_a), (_, buf_b) in zip(cpu.named_buffers(), meta.named_buffers(), strict=True):
        torch.testing.assert_close(buf_a, buf_b, rtol=0, atol=0, equal_nan=True, msg=f"{name}: buffer {key}")


@pytest.mark.parametrize("name", MODELS)
def test_model_conformance(name: str) -> None:
    ex = model_example(name)
    assert ex is not None, f"model {name!r} was registered without example="
    builder = functools.partial(na.create_model, name, **ex.kwargs)
    check_module(builder, ex.inputs, skip=ex.skip, forward_kwargs=ex.forward_kwargs)


@pytest.mark.parametrize(
    "name",
    ["multi_head_attention", "transformer_block", "moe", "conv_norm_act", "bottleneck",
     "inverted_residual"],
)
def test_blocks_with_several_modes_have_one_example_per_mode(name: str) -> None:
    examples = block_examples(get_block(name))
    assert len(examples) >= 2
    names = [ex.name for ex in examples]
    assert all(names) and len(set(names)) == len(names)
