"""Hostile specs: each defect found by the outside probe, pinned by a regression test.

Validation and build agree; anything ``build`` accepts runs forward on inputs of its declared
shapes and dtypes; hashing and saving never fail on a spec that validated; bombs are
refused in well under a second.
"""

from __future__ import annotations

import math

import pytest
import torch

import netarchitect as na
from netarchitect import _yaml
from netarchitect.errors import BudgetError, NetArchitectError, ShapeError, SpecError
from netarchitect.network import sample_inputs
from netarchitect.weights import save_weights


def one_node(block: str, shape=(8,), dtype: str = "float32", node_id: str = "n", **params):
    return {"inputs": {"x": {"shape": list(shape), "dtype": dtype}},
            "nodes": [{"id": node_id, "block": block, "params": params}]}


@pytest.mark.parametrize(
    "node_id",
    ["keys", "values", "items", "update", "pop", "forward", "train", "training", "to", "type",
     "float", "half", "cuda", "parameters", "__class__"],
)
def test_ids_that_clash_with_module_attributes_are_refused_by_validate_and_build(node_id) -> None:
    spec = one_node("linear", node_id=node_id, out_features=2)
    with pytest.raises(SpecError, match=rf"nodes\[0\].id: '{node_id}' is reserved"):
        na.load_spec(spec)
    with pytest.raises(SpecError, match="is reserved"):
        na.build(spec)


@pytest.mark.parametrize("name", ["return_nodes", "self"])
def test_input_and_context_names_forward_uses_are_refused(name) -> None:
    spec = one_node("linear", out_features=2)
    spec["inputs"] = {name: [8]}
    with pytest.raises(SpecError, match=f"inputs.{name}: '{name}' is reserved"):
        na.load_spec(spec)


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"init": "normal", "args": {"std": -1.0}}, "std=-1.0 must be >= 0"),
        ({"init": "uniform", "args": {"a": 2.0, "b": 1.0}}, "must not exceed b"),
        ({"init": "trunc_normal", "args": {"a": 1.0, "b": -1.0}}, "must not exceed b"),
        ({"init": "trunc_normal", "args": {"mean": 5.0, "b": 1.0}}, "interval .* is empty"),
        ({"init": "constant", "args": {"value": 1e39}}, "outside the float32 range"),
        ({"init": "constant", "args": {"value": 2**70}}, "does not fit in 64 bits"),
        ({"init": "kaiming_normal", "args": {"mode": "fan_middle"}}, "mode='fan_middle'"),
        ({"init": "kaiming_normal", "args": {"nonlinearity": "swish"}}, "nonlinearity="),
        ({"init": "normal", "args": {"sd": 1}}, r"takes no argument\(s\) \['sd'\]"),
        ({"init": "xavier_normal", "args": {"gain": "big"}}, "must be a finite number"),
        ({"init": "zero_last_in_residual", "args": {"x": 1}}, "takes no arguments"),
        ({"init": "kaiming_normal", "params": ["bias"]}, "cannot initialise nodes.n.bias"),
    ],
)
def test_init_rule_arguments_are_validated_with_the_spec(rule, match) -> None:
    spec = {**one_node("linear", out_features=2), "init": [rule]}
    with pytest.raises(SpecError, match=match):
        na.infer_shapes(spec)  # what `netarchitect validate` runs
    with pytest.raises(SpecError, match=match):
        na.build(spec, device="meta")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"inputs": {"x": [2**63]}, "nodes": [{"id": "n", "block": "relu"}]},
         "a dimension exceeds"),
        ({"inputs": {"x": [2**20, 2**20, 2**20]}, "nodes": [{"id": "n", "block": "relu"}]},
         "elements per sample exceeds"),
        (one_node("linear", out_features=2**63), "does not fit in 64 bits"),
        (one_node("linear", out_features=2**62), "larger than the 2,147,483,647 supported"),
        (one_node("maxpool2d", shape=(3, 8, 8), kernel_size=3, stride=2**62),
         "larger than the 2,147,483,647"),
        (one_node("moe", dim=8, num_experts=2**40), "larger than the 4,096 supported"),
    ],
)
def test_sizes_that_overflow_are_clean_errors(spec, match) -> None:
    with pytest.raises(SpecError, match=match):
        na.build(spec, device="meta")


def test_alias_bombs_and_deep_nesting_are_refused_fast(monkeypatch) -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    assert len(bomb) < 600
    def never(*args, **kwargs):  # refused from the event stream: nothing is ever built
        raise AssertionError("the YAML document was constructed")

    with monkeypatch.context() as patch:
        patch.setattr(_yaml.yaml, "safe_load", never)
        with pytest.raises(SpecError, match="expands to more than 1,000,000 values"):
            na.load_spec(bomb)
    with pytest.raises(SpecError, match="nested deeper than 64 levels at line 1"):
        na.load_spec("nodes: " + "[" * 600 + "]" * 600)
    deep: list = []
    for _ in range(600):
        deep = [deep]
    with pytest.raises(SpecError, match="nested deeper than 64"):
        na.load_spec({**one_node("relu"), "description": deep})
    loop: dict = {"inputs": {"x": [4]}}
    loop["self"] = loop
    with pytest.raises(SpecError, match="nested deeper than 64|refers to itself"):
        na.load_spec(loop)


def test_error_messages_quote_values_briefly() -> None:
    long = "-" * 100_000
    with pytest.raises(SpecError) as err:
        na.load_spec({"inputs": {"x": [4]}, "nodes": [{"id": long, "block": "relu"}]})
    assert len(str(err.value)) < 300 and "..." in str(err.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_so_hashing_never_fails(value) -> None:
    spec = one_node("leaky_relu", negative_slope=value)
    with pytest.raises(SpecError, match=r"nodes\[0\].params.negative_slope: must be a finite"):
        na.load_spec(spec)
    with pytest.raises(SpecError, match="must be plain data"):
        na.load_spec(one_node("linear", out_features=object()))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (one_node("linear", dtype="int64", out_features=3), "int64: addmm needs one dtype"),
        (one_node("gelu", dtype="int64"), "floating point only"),
        (one_node("relu", dtype="bool"), "not implemented for torch.bool"),
        (one_node("batchnorm2d", shape=(4, 5, 5), dtype="float64"), "float64 parameters"),
        (one_node("conv2d", shape=(3, 8, 8), out_channels=4, kernel_size=3, stride=[3, 3, 3]),
         "stride=.* a list of 2"),
        (one_node("conv_transpose_upsample", shape=(3, 8), out_channels=4),
         "expected images"),
        (one_node("conv_transpose_upsample", shape=(4, 3, 3), in_channels=7, out_channels=3),
         "expects 7 input channels, got 4"),
    ],
)
def test_what_build_accepts_runs_and_what_cannot_run_is_refused(spec, match) -> None:
    with pytest.raises(SpecError, match=match):
        na.build(spec)


def test_declared_dtypes_that_can_run_do() -> None:
    for spec in (one_node("relu", dtype="int64"),
                 one_node("token_embedding", shape=(5,), dtype="int64", vocab_size=4, dim=3),
                 one_node("layernorm", dtype="bfloat16")):
        model = na.build(spec, seed=0)
        model(*sample_inputs(spec))


def test_block_argument_errors_are_spec_errors_not_shape_errors() -> None:
    with pytest.raises(SpecError) as err:
        na.build(one_node("linear", out_features=-3))
    assert not isinstance(err.value, ShapeError)
    with pytest.raises(ShapeError):
        na.build({"inputs": {"x": [3, 8, 8]},
                  "nodes": [{"id": "n", "block": "linear", "params": {"in_features": 5,
                                                                       "out_features": 2}}]})


def test_memory_guard_covers_every_model_and_counts_free_memory() -> None:
    with pytest.raises(BudgetError, match=r"needs 2861.\d\d GiB of weights, more than the"):
        na.create_model("gpt2", vocab_size=10**9)
    assert na.create_model("gpt2", vocab_size=10**9, device="meta").tok_embed.weight.is_meta


def test_materialize_applies_the_spec_init_rules_as_build_does() -> None:
    spec = {**one_node("linear", out_features=4),
            "init": [{"init": "constant", "modules": ["Linear"], "args": {"value": 0.25}}]}
    built = na.build(spec, seed=0)
    meta = na.build(spec, device="meta")
    na.materialize(meta, "cpu", seed=0)
    for key, value in built.state_dict().items():
        torch.testing.assert_close(meta.state_dict()[key], value, rtol=0, atol=0)
    assert bool((built.nodes["n"].weight == 0.25).all())


def test_bugs_inside_blocks_are_not_dressed_up_as_user_errors(monkeypatch) -> None:
    from netarchitect.layers.basic import Linear

    def broken(self, x):
        raise KeyError("a bug in forward")

    monkeypatch.setattr(Linear, "forward", broken)
    with pytest.raises(KeyError, match="a bug in forward") as err:
        na.build(one_node("linear", out_features=2))
    assert not isinstance(err.value, NetArchitectError)
    assert any("internal error probing nodes[0]" in note for note in err.value.__notes__)


def test_a_spec_that_validates_hashes_and_saves(tmp_path) -> None:
    spec = na.load_spec(one_node("leaky_relu", negative_slope=1e-30))
    assert len(na.spec_hash(spec)) == 64
    save_weights(na.build(spec), tmp_path / "w.safetensors")


def test_spec_files_that_are_not_text_are_clear_errors(tmp_path) -> None:
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\x89PNG\x00\x01")
    latin = tmp_path / "l.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "d.yaml").mkdir()
    for path, match in ((binary, "is binary"), (latin, "is not UTF-8 text"),
                        (tmp_path / "d.yaml", "is a directory"),
                        (tmp_path / "none.yaml", "does not exist")):
        with pytest.raises(SpecError, match=match):
            na.load_spec(path)


def test_sequence_models_declare_the_length_they_are_probed_at() -> None:
    model = na.create_model("gpt2-tiny", seq_len=16, device="meta")
    assert model.spec.inputs[0].shape == (16,)
    with pytest.raises(SpecError, match="seq_len=200 exceeds max_positions=128"):
        na.create_model("gpt2-tiny", seq_len=200, device="meta")
