import json
import subprocess
import sys
from dataclasses import FrozenInstanceError

import pytest
import yaml

import netarchitect as na
from netarchitect.errors import Problem, SpecError
from netarchitect.spec import NetworkSpec, NodeSpec, validate_spec


def test_load_from_dict_yaml_json_and_file(mlp_spec, tmp_path):
    a = na.load_spec(mlp_spec)
    b = na.load_spec(yaml.safe_dump(mlp_spec))
    c = na.load_spec(json.dumps(mlp_spec))
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(mlp_spec))
    d = na.load_spec(path)
    e = na.load_spec(str(path))
    assert a == b == c == d == e
    assert na.load_spec(a) is a
    assert [n.id for n in a] == ["fc1", "drop", "fc2"]
    assert a.node("fc2").params["out_features"] == 4
    with pytest.raises(KeyError):
        a.node("nope")


def test_round_trip_and_hash(mlp_spec, tmp_path):
    spec = na.load_spec(mlp_spec)
    assert na.load_spec(spec.to_dict()) == spec
    for suffix in (".yaml", ".json"):
        path = na.save_spec(spec, tmp_path / f"s{suffix}")
        again = na.load_spec(path)
        assert again == spec
        assert na.spec_hash(again) == na.spec_hash(spec)
    assert na.spec_hash(spec) == na.spec_hash(spec.to_dict())
    assert len(na.spec_hash(spec)) == 64


def test_hash_identical_in_another_process(mlp_spec):
    spec = na.load_spec(mlp_spec)
    code = (
        "import json,sys,netarchitect as na;"
        "print(na.spec_hash(na.load_spec(json.loads(sys.argv[1]))))"
    )
    other = subprocess.run([sys.executable, "-c", code, json.dumps(mlp_spec)], capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert other.stdout.strip() == na.spec_hash(spec)


def test_hash_changes_with_content(mlp_spec):
    spec = na.load_spec(mlp_spec)
    other = spec.replace_node("fc2", params={"out_features": 5})
    assert other.node("fc2").params["out_features"] == 5
    assert na.spec_hash(other) != na.spec_hash(spec)
    assert spec.node("fc2").params["out_features"] == 4


def test_spec_is_immutable(mlp_spec):
    spec = na.load_spec(mlp_spec)
    with pytest.raises(FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(TypeError):
        spec.nodes[0].params["out_features"] = 3
    assert isinstance(spec.nodes, tuple)


def test_defaults_inputs_to_previous_node_and_outputs_to_last():
    spec = na.load_spec({
        "inputs": {"x": [4]},
        "nodes": [{"id": "a", "block": "linear", "params": {"out_features": 3}},
                  {"id": "b", "block": "identity"}],
    })
    assert spec.name == "network"
    assert spec.nodes[0].inputs == ("x",) and spec.nodes[1].inputs == ("a",)
    assert spec.outputs == ("b",)
    assert spec.inputs[0].dtype == "float32"


def test_list_form_inputs_and_concat_dim_roundtrip():
    spec = na.load_spec({
        "inputs": [{"name": "x", "shape": [4, 6]}],
        "nodes": [{"id": "c", "block": "identity", "inputs": ["x", "x"], "merge": "concat", "merge_dim": -1}],
        "outputs": "c",
    })
    assert spec.nodes[0].merge_dim == -1
    assert na.load_spec(spec.to_dict()) == spec


def _problems(data) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        na.load_spec(data)
    return info.value.problems


def test_validation_collects_every_problem(mlp_spec):
    bad = json.loads(json.dumps(mlp_spec))
    bad["nodes"][0]["block"] = "lineer"                          # unknown block
    bad["nodes"][1]["params"] = {"q": 0.1}                        # unknown param
    bad["nodes"][2]["params"]["out_features"] = "four"            # mistyped
    bad["nodes"].append({"id": "fc2", "block": "identity"})       # duplicate id
    bad["nodes"].append({"id": "z", "block": "identity", "inputs": ["missing"]})
    bad["outputs"] = ["fc2", "nowhere"]
    paths = {p.path: p.message for p in _problems(bad)}
    assert "did you mean 'linear'" in paths["nodes[0].block"]
    assert "unknown parameter" in paths["nodes[1].params.q"]
    assert "expected int, got str 'four'" in paths["nodes[2].params.out_features"]
    assert "duplicate id 'fc2'" in paths["nodes[3].id"]
    assert "unknown node or input 'missing'" in paths["nodes[4].inputs[0]"]
    assert "'nowhere' is not a node" in paths["outputs[1]"]


def test_cycle_detected():
    spec = {
        "inputs": {"x": [4]},
        "nodes": [
            {"id": "a", "block": "identity", "inputs": ["x", "c"], "merge": "add"},
            {"id": "b", "block": "identity", "inputs": ["a"]},
            {"id": "c", "block": "identity", "inputs": ["b"]},
        ],
        "outputs": ["c"],
    }
    problems = _problems(spec)
    assert any(p.path == "nodes" and "cycle through nodes 'a', 'b', 'c'" in p.message for p in problems)


def test_self_loop_and_merge_rules():
    problems = _problems({
        "inputs": {"x": [4]},
        "nodes": [
            {"id": "a", "block": "identity", "inputs": ["a"]},
            {"id": "b", "block": "identity", "inputs": ["x", "x"]},
            {"id": "c", "block": "identity", "inputs": ["x", "x", "x", "x"], "merge": "gate"},
            {"id": "d", "block": "identity", "inputs": ["x", "x"], "merge": "sum"},
        ],
    })
    messages = {p.path: p.message for p in problems}
    assert "uses itself" in messages["nodes[0].inputs[0]"]
    assert "need a merge" in messages["nodes[1].merge"]
    assert "gate takes 2 inputs" in messages["nodes[2].merge"]
    assert "unknown merge 'sum'" in messages["nodes[3].merge"]


def test_missing_required_parameter():
    problems = _problems({"inputs": {"x": [4]}, "nodes": [{"id": "a", "block": "linear"}]})
    assert problems == [Problem("nodes[0].params.out_features", "missing required parameter of block 'linear'")]


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ([], "", "must be a mapping"),
        ({"inputs": {"x": [4]}, "nodes": []}, "nodes", "non-empty"),
        ({"inputs": {}, "nodes": [{"id": "a", "block": "identity"}]}, "inputs", "at least one"),
        ({"inputs": 3, "nodes": [{"id": "a", "block": "identity"}]}, "inputs", "must be a mapping"),
        ({"inputs": {"x": [0]}, "nodes": [{"id": "a", "block": "identity"}]}, "inputs.x.shape", "positive"),
        ({"inputs": {"x": {"shape": [2], "dtype": "float31"}}, "nodes": [{"id": "a", "block": "identity"}]},
         "inputs.x.dtype", "did you mean 'float32'"),
        ({"inputs": {"x": {"shape": [2], "size": 1}}, "nodes": [{"id": "a", "block": "identity"}]},
         "inputs.x", "unknown key"),
        ({"inputs": {"x": 5}, "nodes": [{"id": "a", "block": "identity"}]}, "inputs.x", "must be a mapping"),
        ({"inputs": {"1x": [2]}, "nodes": [{"id": "a", "block": "identity"}]}, "inputs.1x", "identifier"),
        ({"inputs": [{"shape": [2]}], "nodes": [{"id": "a", "block": "identity"}]}, "inputs[0]", "'name'"),
        ({"inputs": {"x": [2]}, "nodes": [5]}, "nodes[0]", "must be a mapping"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a.b", "block": "identity"}]}, "nodes[0].id", "identifier"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": 3}]}, "nodes[0].block", "block name"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity", "params": [1]}]},
         "nodes[0].params", "mapping"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity", "inputs": []}]},
         "nodes[0].inputs", "non-empty"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity", "merge_dim": "1"}]},
         "nodes[0].merge_dim", "integer"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity", "bloc": 1}]},
         "nodes[0]", "did you mean 'block'"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity"}], "outputs": []}, "outputs", "non-empty"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity"}], "extra": 1}, "", "unknown top-level"),
        ({"name": 3, "inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity"}]}, "name", "string"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "x", "block": "identity"}]}, "nodes[0].id", "name of an input"),
        ({"inputs": {"x": [2]}, "nodes": [{"id": "a", "block": "identity"}], "init": 3}, "init", "list"),
    ],
)
def test_bad_input_names_path(data, path, fragment):
    problems = _problems(data)
    assert any(p.path == path and fragment in p.message for p in problems), problems


def test_malformed_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="malformed YAML/JSON at line 3, column 3"):
        na.load_spec("name: x\nnodes: [\n  - {id: a\n")
    with pytest.raises(SpecError, match="does not exist"):
        na.load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"name\": ")
    with pytest.raises(SpecError, match="bad.json: malformed"):
        na.load_spec(bad)


def test_save_spec_is_atomic(tmp_path, monkeypatch, mlp_spec):
    spec = na.load_spec(mlp_spec)
    target = tmp_path / "out.yaml"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("yaml.safe_dump", boom)
    with pytest.raises(RuntimeError):
        na.save_spec(spec, target)
    assert list(tmp_path.iterdir()) == []


def test_direct_construction_and_validate():
    spec = NetworkSpec("n", (na.InputSpec("x", (3,)),), (NodeSpec("a", "identity", {}, ("x",)),), ("a",))
    assert validate_spec(spec) == []
    assert spec.to_dict()["nodes"] == [{"id": "a", "block": "identity", "inputs": ["x"]}]
