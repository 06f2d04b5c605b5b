import hashlib
import subprocess
import sys

import pytest
import torch
from torch import nn

import netarchitect as na
from netarchitect.errors import BudgetError, ShapeError, SpecError
from netarchitect.network import merge_tensors


def _node(id_, block, inputs, merge=None, **params):
    node = {"id": id_, "block": block, "inputs": inputs, "params": params}
    if merge:
        node["merge"] = merge
    return node


def _spec(nodes, outputs, shape=(8,), extra_inputs=None):
    inputs = {"x": {"shape": list(shape)}}
    inputs.update(extra_inputs or {})
    return {"name": "t", "inputs": inputs, "nodes": nodes, "outputs": outputs}


def test_dag_execution_matches_manual_computation():
    spec = _spec([
        _node("a", "linear", ["x"], out_features=8),
        _node("b", "linear", ["x"], out_features=8),
        _node("s", "identity", ["a", "b", "x"], "add"),
        _node("m", "identity", ["a", "b"], "mul"),
        _node("c", "identity", ["s", "m"], "concat"),
        _node("g2", "identity", ["a", "b"], "gate"),
        _node("g3", "identity", ["a", "b", "x"], "gate"),
    ], ["c", "g2", "g3"])
    model = na.build(spec, seed=0)
    x = torch.randn(5, 8)
    c, g2, g3 = model(x)
    a, b = model.nodes["a"](x), model.nodes["b"](x)
    torch.testing.assert_close(c, torch.cat([a + b + x, a * b], dim=1))
    torch.testing.assert_close(g2, a * torch.sigmoid(b))
    t = torch.sigmoid(x)
    torch.testing.assert_close(g3, t * a + (1 - t) * b)
    assert c.shape == (5, 16)


def test_return_nodes_and_named_inputs():
    spec = _spec([_node("a", "linear", ["x"], out_features=4), _node("b", "linear", ["a"], out_features=2)], ["b"])
    model = na.build(spec, seed=0)
    x = torch.randn(3, 8)
    feats = model(x=x, return_nodes=["a", "x"])
    assert set(feats) == {"a", "x"} and feats["a"].shape == (3, 4)
    torch.testing.assert_close(model.nodes["b"](feats["a"]), model(x))
    with pytest.raises(SpecError, match=r"return_nodes: unknown node 'c'"):
        model(x, return_nodes=["c"])
    with pytest.raises(TypeError, match="missing input"):
        model()
    with pytest.raises(TypeError, match="unknown input 'y'"):
        model(x, y=x)
    with pytest.raises(TypeError, match="expected 1 input"):
        model(x, x)


def test_concat_along_explicit_dim_for_tokens():
    spec = {"inputs": {"x": [5, 6]}, "nodes": [
        {"id": "c", "block": "identity", "inputs": ["x", "x"], "merge": "concat", "merge_dim": -1}]}
    model = na.build(spec)
    assert model(torch.randn(2, 5, 6)).shape == (2, 5, 12)
    assert na.infer_shapes(spec)["c"] == (5, 12)


def test_round_trip_rebuilds_identical_architecture():
    spec = _spec([_node("a", "linear", ["x"], out_features=4)], ["a"])
    model = na.build(spec, seed=3)
    again = na.build(model.spec, seed=3)
    assert na.spec_hash(again.spec) == na.spec_hash(model.spec)
    assert str(again) == str(model)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert n1 == n2
        assert torch.equal(p1, p2)


def test_seed_controls_weights():
    spec = _spec([_node("a", "linear", ["x"], out_features=4)], ["a"])
    w = lambda m: m.nodes["a"].weight
    assert torch.equal(w(na.build(spec, seed=1)), w(na.build(spec, seed=1)))
    assert not torch.equal(w(na.build(spec, seed=1)), w(na.build(spec, seed=2)))
    torch.manual_seed(7)
    first = w(na.build(spec))
    torch.manual_seed(7)
    assert torch.equal(first, w(na.build(spec)))


def test_meta_build_then_materialize_is_bit_identical():
    spec = _spec([_node("a", "linear", ["x"], out_features=4), _node("b", "linear", ["a"], out_features=2)], ["b"])
    direct = na.build(spec, seed=11)
    meta = na.build(spec, device="meta")
    assert all(p.is_meta for p in meta.parameters())
    na.materialize(meta, "cpu", seed=11)
    for p, q in zip(direct.parameters(), meta.parameters(), strict=True):
        assert torch.equal(p, q)


def _weights_digest(spec: dict, seed: int) -> str:
    model = na.build(spec, seed=seed)
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def test_weights_identical_in_another_process():
    spec = _spec([_node("a", "linear", ["x"], out_features=4), _node("b", "linear", ["a"], out_features=2)], ["b"])
    code = (
        "import json,sys,hashlib,netarchitect as na\n"
        "m=na.build(json.loads(sys.argv[1]),seed=5)\n"
        "h=hashlib.sha256()\n"
        "for n,t in m.state_dict().items(): h.update(n.encode()); h.update(t.numpy().tobytes())\n"
        "print(h.hexdigest())"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _weights_digest(spec, 5)


def test_infer_shapes_allocates_nothing_and_is_exact():
    spec = {"inputs": {"img": [3, 16, 16]}, "nodes": [
        {"id": "c", "block": "conv2d", "params": {"out_channels": 4, "kernel_size": 3, "stride": 2}},
        {"id": "f", "block": "flatten"},
        {"id": "l", "block": "linear", "params": {"out_features": 10}},
    ]}
    shapes = na.infer_shapes(spec)
    assert shapes == {"img": (3, 16, 16), "c": (4, 8, 8), "f": (256,), "l": (10,)}
    model = na.build(spec, device="meta")
    assert model.nodes["l"].in_features == 256
    assert [i.num_params for i in model.node_info()] == [4 * 3 * 9 + 4, 0, 2570]


def test_shape_errors_name_the_node():
    spec = _spec([
        _node("a", "linear", ["x"], out_features=4),
        _node("bad_add", "identity", ["a", "x"], "add"),
        _node("bad_cat", "identity", ["a", "y"], "concat"),
    ], ["bad_add"], extra_inputs={"y": {"shape": [4, 2]}})
    with pytest.raises(ShapeError) as info:
        na.infer_shapes(spec)
    messages = {p.path: p.message for p in info.value.problems}
    assert "add of incompatible shapes [(4,), (8,)]" in messages["nodes[1].merge"]
    assert "different ranks" in messages["nodes[2].merge"]


def test_block_rejecting_input_is_a_shape_error():
    spec = {"inputs": {"img": [3, 8, 8]}, "nodes": [
        {"id": "l", "block": "linear", "params": {"in_features": 5, "out_features": 2}}]}
    with pytest.raises(ShapeError, match=r"nodes\[0\]: block 'linear' cannot take input \(3, 8, 8\) float32"):
        na.build(spec)


def test_block_constructor_error_becomes_spec_error():
    spec = {"inputs": {"img": [4, 8, 8]}, "nodes": [
        {"id": "c", "block": "conv2d", "params": {"out_channels": 6, "kernel_size": 3, "groups": 3}}]}
    with pytest.raises(SpecError) as info:
        na.build(spec)
    assert info.value.path == "nodes[0].params"
    assert "groups" in str(info.value)


def test_concat_shape_rules():
    spec = {"inputs": {"x": [4, 6], "y": [4, 5]}, "nodes": [
        {"id": "ok", "block": "identity", "inputs": ["x", "y"], "merge": "concat", "merge_dim": 1},
        {"id": "bad", "block": "identity", "inputs": ["x", "y"], "merge": "concat"},
        {"id": "far", "block": "identity", "inputs": ["x", "y"], "merge": "concat", "merge_dim": 3},
    ], "outputs": ["ok"]}
    with pytest.raises(ShapeError) as info:
        na.build(spec)
    paths = [p.path for p in info.value.problems]
    assert paths == ["nodes[1].merge", "nodes[2].merge"]
    assert "out of range" in info.value.problems[1].message


def test_absurd_size_rejected_before_allocation():
    spec = _spec([_node("huge", "linear", ["x"], in_features=8, out_features=1 << 30)], ["huge"])
    model = na.build(spec, device="meta")  # analysing on meta is fine
    assert model.nodes["huge"].weight.is_meta
    with pytest.raises(BudgetError, match=r"needs 36.00 GiB of weights, more than the .* GiB available"):
        na.build(spec)
    small = _spec([_node("a", "linear", ["x"], out_features=4)], ["a"])
    with pytest.raises(BudgetError):
        na.build(small, max_bytes=16)


def test_float64_and_int_inputs():
    spec = _spec([_node("a", "linear", ["x"], out_features=4)], ["a"])
    model = na.build(spec, dtype=torch.float64, seed=0)
    assert model(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64
    assert "nodes=1" in repr(model)


def test_non_tensor_block_rejected():
    @na.register_block("_test_tuple_block")
    class TupleOut(nn.Module):
        def __init__(self, *, device=None, dtype=None):
            super().__init__()

        def forward(self, x):
            return x, x

    try:
        with pytest.raises(ShapeError, match="returns tuple, not a tensor"):
            na.build({"inputs": {"x": [2]}, "nodes": [{"id": "t", "block": "_test_tuple_block"}]})
    finally:
        from netarchitect import registry

        del registry._BLOCKS["_test_tuple_block"]


def test_merge_tensors_rejects_unknown_merge():
    x = torch.ones(2, 3)
    assert merge_tensors([x], None) is x
    with pytest.raises(ValueError, match="merge must be one of"):
        merge_tensors([x, x], "max")


def test_gradients_flow_through_every_merge():
    spec = _spec([
        _node("a", "linear", ["x"], out_features=8),
        _node("b", "linear", ["x"], out_features=8),
        _node("g", "linear", ["x"], out_features=8),
        _node("h", "identity", ["a", "b", "g"], "gate"),
        _node("o", "linear", ["h", "a"], "mul", out_features=2),
    ], ["o"])
    model = na.build(spec, seed=0)
    model(torch.randn(4, 8)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_network_deepcopies_and_pickles():
    import copy
    import pickle

    spec = _spec([_node("a", "linear", ["x"], out_features=4)], ["a"])
    model = na.build(spec, seed=0)
    x = torch.randn(2, 8)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(x), model(x))
        assert clone.spec == model.spec
    assert hash(model.spec.nodes[0].params) == hash(copy.deepcopy(model.spec.nodes[0].params))
    with pytest.raises(TypeError, match="immutable"):
        model.spec.nodes[0].params.update(out_features=3)


def test_inference_frees_each_value_after_its_last_reader():
    import weakref

    nodes = [{"id": "n0", "block": "linear", "inputs": ["x"], "params": {"out_features": 8}}]
    nodes += [
        {"id": f"n{i}", "block": "linear", "inputs": [f"n{i - 1}"], "params": {"out_features": 8}}
        for i in range(1, 6)
    ]
    nodes.append({"id": "skip", "block": "identity", "inputs": ["n1", "n5"], "merge": "add"})
    spec = {"name": "chain", "inputs": [{"name": "x", "shape": [8]}], "nodes": nodes,
            "outputs": ["skip"]}
    model = na.build(spec, seed=0)
    refs: dict[str, weakref.ref] = {}
    alive_at: dict[str, list[str]] = {}

    def hook(name):
        def record(module, args, out):
            alive_at[name] = sorted(k for k, r in refs.items() if r() is not None)
            refs[name] = weakref.ref(out)
        return record

    for name, module in model.nodes.items():
        module.register_forward_hook(hook(name))
    with torch.no_grad():
        out = model(torch.randn(2, 8))
    assert out.shape == (2, 8)
    # n0 is dropped once n1 ran; n1 stays alive for the skip connection until "skip" ran
    assert alive_at["n3"] == ["n1", "n2"]
    assert alive_at["skip"] == ["n1", "n5"]
    with torch.no_grad():
        got = model(torch.randn(2, 8), return_nodes=["n2", "skip"])
    assert set(got) == {"n2", "skip"}


def test_a_built_network_is_in_training_mode_throughout():
    """Building probes each node in eval mode on meta tensors; the modes are restored."""
    net = na.create_model("gpt2-tiny", vocab_size=64)
    assert net.training and all(m.training for m in net.modules())
    net = na.build({"inputs": {"x": [3, 8, 8]}, "nodes": [
        {"id": "conv", "block": "conv_norm_act", "params": {"out_channels": 4}},
        {"id": "drop", "block": "dropout", "params": {"p": 0.5}}]})
    assert all(m.training for m in net.modules())
    x = torch.randn(4, 3, 8, 8)
    assert not torch.equal(net(x), net(x))  # dropout is active


def test_repeated_nodes_are_probed_once_and_errors_still_name_each_node(monkeypatch):
    import netarchitect._probe as probe

    calls = []
    real = probe._probe
    monkeypatch.setattr(probe, "_probe", lambda m, args, block, i, r: calls.append(i) or real(
        m, args, block, i, r))
    nodes = [{"id": f"l{i}", "block": "linear", "params": {"out_features": 8}} for i in range(4)]
    spec = {"inputs": {"x": [8]}, "nodes": [*nodes, {"id": "wide", "block": "linear",
                                                    "params": {"out_features": 3}}]}
    net = na.build(spec)
    assert calls == [0, 4]  # l1..l3 are l0 again: same block, arguments and input shape
    assert [i.shape for i in net.node_info()] == [(8,)] * 4 + [(3,)]
    assert net(torch.randn(2, 8)).shape == (2, 3)
    calls.clear()
    bad = {"inputs": {"img": [3, 8, 8]}, "nodes": [
        {"id": "a", "block": "linear", "params": {"in_features": 5, "out_features": 5}},
        {"id": "b", "block": "linear", "params": {"in_features": 5, "out_features": 5},
         "inputs": ["img"]}], "outputs": ["a", "b"]}
    with pytest.raises(ShapeError) as info:
        na.build(bad)
    assert [p.path for p in info.value.problems] == ["nodes[0]", "nodes[1]"]  # failures re-probe
