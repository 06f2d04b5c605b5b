"""optimize.checkpointing: every policy keeps outputs and gradients identical, saves
activation memory, is reversible, and refuses bad input without touching the model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netarchitect as na
from netarchitect.analysis.memory import memory
from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.layers.transformer import TransformerBlock
from netarchitect.optimize.checkpointing import (
    activation_bytes,
    apply_checkpointing,
    checkpointed_modules,
    remove_checkpointing,
    selective_policy,
)
from netarchitect.optimize.precision import autocast_policy
from netarchitect.registry import model_example

POLICIES = ["blocks", "every_k", "selective", "predicate"]


class Stack(nn.Module):
    """A plain (not spec-built) Transformer: blocks in a ModuleList."""

    def __init__(self, depth: int = 3, dim: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, 2, causal=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _registered(name: str):
    ex = model_example(name)
    torch.manual_seed(0)
    return na.create_model(name, **ex.kwargs).train(), ex.inputs


def _stack():
    torch.manual_seed(0)
    return Stack(), (torch.randn(2, 12, 16),)


MODELS = {"gpt2-tiny": lambda: _registered("gpt2-tiny"), "resnet18": lambda: _registered("resnet18"),
          "plain_stack": _stack}  # fmt: skip


def _loss(out) -> torch.Tensor:
    return out.float().pow(2).mean()


def _policy(name: str):
    if name == "predicate":
        return lambda path, module: isinstance(module, TransformerBlock) or path.endswith("_b0")
    return name


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert checkpointed_modules(model) == {}
    assert all("forward" not in vars(m) for m in model.modules())


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_outputs_gradients_and_buffers_are_identical(model_name, policy):
    ref, inputs = MODELS[model_name]()
    ours = apply_checkpointing(copy.deepcopy(ref), _policy(policy), k=2)
    assert checkpointed_modules(ours)
    ref.train(), ours.train()
    out_ref, out = ref(*inputs), ours(*inputs)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    _loss(out_ref).backward()
    _loss(out).backward()
    for (name, p_ref), (_, p) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=0, msg=name)
    for (name, b_ref), (_, b) in zip(ref.named_buffers(), ours.named_buffers(), strict=True):
        torch.testing.assert_close(b, b_ref, rtol=0, atol=0, msg=name)  # BN stats updated once


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_activation_memory_falls(model_name, policy):
    ref, inputs = MODELS[model_name]()
    base_est = memory(ref, inputs).activations
    base = activation_bytes(ref, inputs, loss_fn=_loss)
    ours = apply_checkpointing(copy.deepcopy(ref), _policy(policy), k=2)
    assert memory(ours, inputs).activations < base_est
    assert activation_bytes(ours, inputs, loss_fn=_loss) < base


def test_activation_bytes_matches_the_saved_tensor_estimate_without_checkpointing():
    model, inputs = _stack()
    measured = activation_bytes(model, inputs)
    estimated = memory(model, inputs).activations
    input_bytes = inputs[0].numel() * 4  # saved by the first block; not created by the pass
    assert measured == estimated - input_bytes


def test_selective_sits_between_full_checkpointing_and_none():
    model, inputs = _stack()
    base = activation_bytes(model, inputs, loss_fn=_loss)
    full = activation_bytes(apply_checkpointing(copy.deepcopy(model), "blocks"), inputs)
    selective = activation_bytes(apply_checkpointing(copy.deepcopy(model), "selective"), inputs)
    wide = apply_checkpointing(
        copy.deepcopy(model), "selective", save=selective_policy(widening_matmuls=True)
    )
    assert full < selective < activation_bytes(wide, inputs) < base


def test_blocks_of_a_network_are_its_checkpoint_nodes():
    model, _ = _registered("gpt2-tiny")
    apply_checkpointing(model, "blocks")
    expected = {f"nodes.{n}" for n in model.checkpoint_nodes()}
    assert set(checkpointed_modules(model)) == expected


def test_every_k_strides_over_the_blocks():
    model, _ = _stack()
    assert list(checkpointed_modules(apply_checkpointing(model, "every_k", k=2))) == [
        "blocks.0", "blocks.2"
    ]
    assert len(checkpointed_modules(apply_checkpointing(model, "every_k", k=1))) == 3


def test_modules_by_glob_type_and_mix_outermost_only():
    model, _ = _stack()
    assert set(checkpointed_modules(apply_checkpointing(model, modules="blocks.*"))) == {
        "blocks.0", "blocks.1", "blocks.2"
    }
    norms = checkpointed_modules(apply_checkpointing(model, modules=nn.LayerNorm))
    assert "norm" in norms and len(norms) > 1
    assert all(isinstance(model.get_submodule(p), nn.LayerNorm) for p in norms)
    picked = checkpointed_modules(apply_checkpointing(model, modules=["norm", TransformerBlock]))
    assert set(picked) == {"norm", "blocks.0", "blocks.1", "blocks.2"}


def test_reapplying_replaces_and_remove_restores():
    model, _inputs = _stack()
    before = _state(model)
    apply_checkpointing(model, "blocks")
    apply_checkpointing(model, "every_k", k=3)
    assert checkpointed_modules(model) == {"blocks.0": "every_k"}
    assert remove_checkpointing(model) is model
    _assert_untouched(model, before)


def test_remove_restores_an_instance_forward_set_before():
    model, _inputs = _stack()
    block = model.blocks[0]
    own = block.forward
    block.forward = own  # e.g. another tool's wrapper
    apply_checkpointing(model, "blocks")
    assert block.forward is not own
    remove_checkpointing(model)
    assert block.forward is own


def test_eval_and_no_grad_calls_are_not_checkpointed():
    model, inputs = _stack()
    base = activation_bytes(model, inputs)
    apply_checkpointing(model, "blocks")
    model.eval()
    assert activation_bytes(model, inputs) == base
    model.train()
    with torch.no_grad():
        assert model(*inputs).grad_fn is None


class _Cached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x, kv_cache=None):
        self.calls += 1
        return self.fc(x).relu()


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Cached(), _Cached()])

    def forward(self, x, kv_cache=None):
        for layer in self.layers:
            x = layer(x, kv_cache=kv_cache)
        return x


@pytest.mark.parametrize(("cache", "calls"), [(None, 2), ("a cache", 1)])
def test_calls_with_a_kv_cache_are_not_checkpointed(cache, calls):
    model = apply_checkpointing(_Holder(), "blocks")
    model(torch.randn(2, 4, requires_grad=True), kv_cache=cache).sum().backward()
    assert model.layers[0].calls == calls  # a checkpointed call runs again in backward


def test_checkpointed_network_still_generates_with_its_cache():
    from netarchitect.generation import generate

    model, (ids,) = _registered("gpt2-tiny")
    expected = generate(model, ids, 4, temperature=0)
    apply_checkpointing(model, "selective")
    torch.testing.assert_close(generate(model, ids, 4, temperature=0), expected, rtol=0, atol=0)
    assert model.training  # generate restores the mode


# ---------------------------------------------------------------- bad input


BAD = [
    ({"policy": "everyk"}, "policy", "did you mean 'every_k'"),
    ({"policy": 3}, "policy", "unknown checkpointing policy"),
    ({"policy": "every_k", "k": 0}, "k", "k must be an integer >= 1"),
    ({"policy": "every_k", "k": True}, "k", "k must be"),
    ({"policy": "every_k", "k": 1.5}, "k", "k must be"),
    ({"modules": "blocks.9*"}, "modules", "matches no submodule"),
    ({"modules": "blcks.0"}, "modules", "did you mean 'blocks.0'"),
    ({"modules": []}, "modules", "empty module filter"),
    ({"modules": [3]}, "modules", "neither a glob pattern nor a module class"),
    ({"modules": nn.Conv2d}, "modules", "matches no submodule"),
    ({"policy": lambda path, m: False}, "policy", "selected no submodule"),
    ({"policy": "blocks", "save": selective_policy()}, "save", "only applies"),
]


@pytest.mark.parametrize(("kwargs", "path", "message"), BAD)
def test_bad_input_raises_and_leaves_the_model_untouched(kwargs, path, message):
    model, _ = _stack()
    apply_checkpointing(model, "blocks")
    remove_checkpointing(model)
    before = _state(model)
    with pytest.raises(SpecError, match=message) as err:
        apply_checkpointing(model, **kwargs)
    assert isinstance(err.value, NetArchitectError) and err.value.path == path
    _assert_untouched(model, before)


def test_bad_input_keeps_an_existing_policy():
    model, _ = _stack()
    apply_checkpointing(model, "selective")
    with pytest.raises(SpecError):
        apply_checkpointing(model, "nope")
    assert set(checkpointed_modules(model).values()) == {"selective"}


def test_a_module_without_blocks_needs_modules():
    with pytest.raises(SpecError, match="no blocks to checkpoint"):
        apply_checkpointing(nn.Linear(3, 3), "blocks")


def test_a_network_checkpointing_by_itself_is_refused():
    model, _ = _registered("gpt2-tiny")
    model.set_grad_checkpointing(True)
    before = _state(model)
    with pytest.raises(SpecError, match="set_grad_checkpointing") as err:
        apply_checkpointing(model, "blocks")
    assert err.value.path == "model"
    _assert_untouched(model, before)


def test_memory_benchmark_runs_on_a_tiny_stack(tmp_path):
    import json

    from benchmarks.bench_optimize_memory import main

    results = main(["--depth", "2", "--dim", "16", "--seq", "8", "--warmup", "0",
                    "--repeats", "1", "--threads", "1", "--results-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "optimize.json").read_text())
    for case in ("selective_checkpointing_T512", "full_checkpointing_T512"):
        extra = saved["cases"][case]["extra"]
        assert 0 < extra["activation_fraction"] < 1 and extra["bf16"]["capability"]
    assert "bf16_autocast_step" in results


class _LowPrecisionNorm(nn.Module):
    """LayerNorm and softmax on a bf16 matmul output: the policy's float32 rule matters."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        return self.b(F.layer_norm(self.a(x), (16,)).softmax(-1))


@pytest.mark.parametrize("backward_inside", [False, True])
@pytest.mark.parametrize("policy", ["blocks", "selective"])
def test_checkpointing_recomputes_under_the_forwards_autocast_policy(policy, backward_inside):
    torch.manual_seed(0)
    ref = nn.Sequential(_LowPrecisionNorm(), _LowPrecisionNorm())
    ours = apply_checkpointing(copy.deepcopy(ref), policy, modules="*")
    x = torch.randn(2, 6, 16)
    for model in (ref, ours):
        with autocast_policy("bf16", device_type="cpu"):
            loss = _loss(model(x))
            if backward_inside:
                loss.backward()
        if not backward_inside:
            loss.backward()
    for p_ref, p in zip(ref.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=0)
