"""Spec features beyond edges: context inputs, ``merge: args``, tied weights, roles and ``run``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import ShapeError, SpecError
from netarchitect.layers.kv_cache import KVCache, ModelCache
from netarchitect.models._lm_base import CausalLM

HAND_WRITTEN = "examples/specs/tiny_transformer.yaml"


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def test_a_hand_written_yaml_transformer_is_a_language_model(repo_root) -> None:
    model = na.build(repo_root / HAND_WRITTEN, seed=0).eval()
    assert isinstance(model, CausalLM) and model.context_names[0] == "attention_mask"
    assert model.head.weight is model.tok_embed.weight
    x = ids(2, 10)
    logits = model(x)
    assert logits.shape == (2, 10, 256)
    cache = model.new_cache()
    steps = [model(x[:, :4], kv_cache=cache)] + [
        model(x[:, t : t + 1], kv_cache=cache) for t in range(4, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, logits_to_keep=1), logits[:, -1:])
    padded = F.pad(x[:1, :7], (3, 0))
    mask = torch.tensor([[0, 0, 0] + [1] * 7])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, 3:], model(x[:1, :7]),
                               atol=1e-5, rtol=1e-5)


def test_context_is_passed_only_to_the_nodes_that_declare_it() -> None:
    spec = {
        "inputs": {"x": [4, 8]},
        "context": ["attention_mask"],
        "nodes": [
            {"id": "a", "block": "transformer_block", "params": {"num_heads": 2},
             "context": ["attention_mask"]},
            {"id": "b", "block": "transformer_block", "params": {"num_heads": 2}},
        ],
    }
    model = na.build(spec, seed=0).eval()
    x, mask = torch.randn(1, 4, 8), torch.tensor([[1, 1, 0, 0]])
    a = model.nodes["a"](x, attention_mask=mask)
    torch.testing.assert_close(model(x, attention_mask=mask), model.nodes["b"](a))
    torch.testing.assert_close(model(x, attention_mask=None), model(x))  # None: not passed
    with pytest.raises(TypeError, match="unknown input or context 'mask'"):
        model(x, mask=mask)


def test_context_errors_are_found_by_validation() -> None:
    base = {"inputs": {"x": [4, 8]}, "nodes": [
        {"id": "a", "block": "transformer_block", "params": {"num_heads": 2},
         "context": ["attention_mask"]}]}
    with pytest.raises(SpecError, match=r"nodes\[0\].context.attention_mask: unknown context"):
        na.load_spec(base)
    bad_kwarg = {**base, "context": ["m"], "nodes": [{**base["nodes"][0], "context": {"mask_x": "m"}}]}
    with pytest.raises(SpecError, match="does not take mask_x="):
        na.load_spec(bad_kwarg)
    with pytest.raises(SpecError, match="already an input or node name"):
        na.load_spec({**base, "context": ["x", "attention_mask"]})
    with pytest.raises(SpecError, match="context: must be a list of identifiers"):
        na.load_spec({**base, "context": [1]})
    with pytest.raises(SpecError, match="mapping keyword -> context name"):
        na.load_spec({**base, "context": ["m"], "nodes": [{**base["nodes"][0], "context": 3}]})


def test_context_round_trips_in_canonical_form() -> None:
    spec = na.load_spec({
        "inputs": {"x": [4, 8]},
        "context": ["m"],
        "nodes": [{"id": "a", "block": "transformer_block", "params": {"num_heads": 2},
                   "context": {"attention_mask": "m"}}],
    })
    data = spec.to_dict()
    assert data["context"] == ["m"] and data["nodes"][0]["context"] == {"attention_mask": "m"}
    assert na.load_spec(data) == spec and na.spec_hash(data) == na.spec_hash(spec)


def test_merge_args_passes_inputs_as_separate_arguments() -> None:
    spec = {
        "inputs": {"x": [3, 8], "memory": [5, 6]},
        "nodes": [{"id": "cross", "block": "perceiver_cross_attention",
                   "params": {"context_dim": 6, "num_heads": 2}, "inputs": ["x", "memory"],
                   "merge": "args"}],
    }
    model = na.build(spec, seed=0).eval()
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    torch.testing.assert_close(model(x, memory), model.nodes["cross"](x, memory))
    one_input = {**spec, "nodes": [{"id": "fc", "block": "linear", "params": {"out_features": 2},
                                    "inputs": ["x", "memory"], "merge": "args"}]}
    with pytest.raises(ShapeError, match="different number of inputs"):
        na.build(one_input)


def test_ties_share_parameters_and_modules_through_materialisation() -> None:
    spec = {
        "inputs": {"x": [4]},
        "nodes": [
            {"id": "a", "block": "linear", "params": {"out_features": 4}},
            {"id": "b", "block": "linear", "params": {"out_features": 4}},
            {"id": "c", "block": "linear", "params": {"out_features": 4}},
        ],
        "tie": {"b.weight": "a.weight", "c": "a"},
    }
    model = na.build(spec, seed=0)
    assert model.nodes["b"].weight is model.nodes["a"].weight
    assert model.nodes["b"].bias is not model.nodes["a"].bias
    assert model.nodes["c"] is model.nodes["a"]
    assert sum(p.numel() for p in model.parameters()) == 20 + 4
    meta = na.build(spec, device="meta")
    na.materialize(meta, "cpu", seed=0)
    assert meta.nodes["b"].weight is meta.nodes["a"].weight
    for key, value in model.state_dict().items():
        torch.testing.assert_close(meta.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("tie", "error", "match"),
    [
        ({"b.weight": "a.nope"}, SpecError, "neither a parameter nor a module"),
        ({"b.weight": "a.bias"}, ShapeError, "differ in kind or shape"),
        ({"b": "a.weight"}, ShapeError, "differ in kind or shape"),
        ({"b.weight": "b.weight"}, SpecError, "tied to itself"),
        ({"b.weight": "zz.weight"}, SpecError, "does not start with a node id"),
        ({"b.weight": "a.weight", "a.weight": "c.weight"}, SpecError, "is itself tied"),
        ({"b.weight": "a..weight"}, SpecError, "not a dotted path"),
        ([1, 2], SpecError, "tie: must be a mapping"),
    ],
)
def test_bad_ties_are_clear_errors(tie, error, match) -> None:
    spec = {
        "inputs": {"x": [4]},
        "nodes": [
            {"id": "a", "block": "linear", "params": {"out_features": 4}},
            {"id": "b", "block": "linear", "params": {"out_features": 4}},
            {"id": "c", "block": "linear", "params": {"out_features": 4}},
        ],
        "tie": tie,
    }
    with pytest.raises(error, match=match):
        na.build(spec)


def test_roles_pick_the_network_class_and_are_validated(mlp_spec) -> None:
    plain = na.build(mlp_spec)
    assert type(plain) is na.Network and plain.roles == {}
    with pytest.raises(SpecError, match="unknown network kind 'clasifier'.*'classifier'"):
        na.load_spec({**mlp_spec, "roles": {"kind": "clasifier"}})
    with pytest.raises(SpecError, match=r"roles.features: unknown node 'fc9'"):
        na.load_spec({**mlp_spec, "roles": {"kind": "classifier", "features": "fc9"}})
    with pytest.raises(SpecError, match="roles: must be a mapping with a 'kind'"):
        na.load_spec({**mlp_spec, "roles": ["classifier"]})
    model = na.build({**mlp_spec, "roles": {"kind": "classifier", "features": "drop"}})
    assert model.num_classes == 4 and model.forward_head(torch.randn(2, 16)).shape == (2, 4)


def test_run_starts_from_any_given_values(mlp_spec) -> None:
    model = na.build(mlp_spec, seed=0).eval()
    x = torch.randn(2, 8)
    hidden = model(x, return_nodes=["fc1"])["fc1"]
    out = model.run({"fc1": hidden}, ["fc2"])
    torch.testing.assert_close(out["fc2"], model(x))
    with pytest.raises(TypeError, match=r"also need \['x'\]"):
        model.run({}, ["fc2"])
    with pytest.raises(SpecError, match="outputs: unknown node 'fc3'"):
        model.run({"x": x}, ["fc3"])
    with pytest.raises(TypeError, match="unknown context"):
        model.run({"x": x}, ["fc2"], mask=1)
    with pytest.raises(TypeError, match="given twice"):
        model(x, x=x)


def test_model_cache_api(repo_root) -> None:
    model = na.build(repo_root / HAND_WRITTEN, seed=0).eval()
    cache = model.new_cache(max_length=8)
    assert isinstance(cache, ModelCache) and cache.nodes == ["block_0", "block_1"]
    assert len(cache) == 2 and cache.length == 0 and "length=0" in repr(cache)
    model(ids(1, 3), kv_cache=cache)
    assert cache.length == 3 and isinstance(cache["block_1"], KVCache)
    assert [c.length for c in cache] == [3, 3] and cache.scope("embed") is cache
    cache.reset()
    assert cache.length == 0
    assert ModelCache({}).length == 0


def test_checkpointing_skips_nodes_holding_decoding_state(repo_root) -> None:
    model = na.build(repo_root / HAND_WRITTEN, seed=0)
    model.set_grad_checkpointing()
    model.train()
    x = ids(1, 5)
    cache = model.new_cache()
    model(x, kv_cache=cache).sum().backward()  # no recomputation: the cache is filled once
    assert cache.length == 5
    assert model.checkpoint_nodes() >= {"block_0", "block_1"}


def test_subpackages_are_reachable_as_attributes() -> None:
    import subprocess
    import sys

    code = (
        "import netarchitect as na, sys;"
        "assert 'netarchitect.analysis' not in sys.modules;"
        "f = na.analysis.count_flops; t = na.testing.check_module; g = na.generation.generate;"
        "assert 'analysis' in dir(na) and na.models.gpt and na.layers.TransformerBlock;"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        na.nope  # noqa: B018
