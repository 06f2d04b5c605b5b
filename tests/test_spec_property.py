"""Property: random mutations of valid specs either build or raise SpecError, nothing else."""

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netarchitect as na
from netarchitect.errors import SpecError

SPECS = [yaml.safe_load(p.read_text()) for p in sorted((Path(__file__).parents[1] / "examples/specs").glob("*.yaml"))]
BLOCKS = ["linear", "conv2d", "identity", "flatten", "dropout", "relu", "layernorm", "batchnorm2d", "nonexistent"]

values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.lists(st.integers(-2, 5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(draw(st.sampled_from(SPECS)))
    for _ in range(draw(st.integers(1, 3))):
        nodes = spec["nodes"]
        i = draw(st.integers(0, len(nodes) - 1))
        if not all(isinstance(n, dict) for n in nodes):
            break
        kind = draw(st.sampled_from(["block", "param", "new_param", "inputs", "merge", "drop", "shape", "outputs", "raw"]))
        if kind == "block":
            nodes[i]["block"] = draw(st.sampled_from(BLOCKS))
        elif kind == "param" and nodes[i].get("params"):
            key = draw(st.sampled_from(sorted(nodes[i]["params"])))
            nodes[i]["params"][key] = draw(values)
        elif kind == "new_param":
            nodes[i].setdefault("params", {})[draw(st.sampled_from(["out_features", "p", "kernel_size", "stride", "zz"]))] = draw(values)
        elif kind == "inputs":
            ids = [n.get("id") for n in nodes] + list(spec["inputs"]) + ["ghost"]
            nodes[i]["inputs"] = draw(st.lists(st.sampled_from(ids), min_size=0, max_size=3))
        elif kind == "merge":
            nodes[i]["merge"] = draw(st.sampled_from(["add", "concat", "mul", "gate", "max", None]))
        elif kind == "drop" and len(nodes) > 1:
            del nodes[i]
        elif kind == "shape":
            name = next(iter(spec["inputs"]))
            spec["inputs"][name]["shape"] = draw(st.lists(st.integers(-1, 40), max_size=4))
        elif kind == "outputs":
            spec["outputs"] = draw(st.lists(st.sampled_from([n.get("id") for n in nodes] + ["ghost"]), max_size=2))
        elif kind == "raw":
            nodes[i] = draw(values)
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_mutated_specs_build_or_raise_spec_error(spec):
    try:
        model = na.build(spec, device="meta")
    except SpecError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
    else:
        assert model.spec == na.load_spec(spec)
