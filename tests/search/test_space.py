"""Search spaces: dimension forms, listing, define-by-run sampling, repeats, invalid spaces."""

from __future__ import annotations

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from netarchitect import SpecError, infer_shapes
from netarchitect.search import Choice, FloatRange, IntRange, Repeat, SearchSpace
from netarchitect.search.config import packaged_space
from netarchitect.search.space import load_space_data

RICH = """
name: rich
inputs: {x: {shape: [8]}}
nodes:
  - {id: fc, block: linear, params: {out_features: !choice [8, 16]}}
  - !repeat
    id: stage
    times: !int [0, 2]
    body:
      - {id: a, block: linear, params: {out_features: !int {low: 4, high: 12, step: 4}}}
      - {id: act, block: !choice [relu, gelu]}
      - {id: b, block: linear, params: {out_features: !choice [8, 16]}}
      - {id: res, block: identity, inputs: [b, $in], merge: concat}
  - !choice
    id: tail
    options:
      - null
      - [{id: d, block: dropout, params: {p: !float [0.0, 0.5]}}]
      - {id: ln, block: layernorm, params: {eps: !float {low: 1.0e-6, high: 1.0e-4, log: true}}}
  - {id: head, block: linear, params: {out_features: $num_classes}, inputs: [tail]}
outputs: [head]
train: {lr: !float {low: 1.0e-4, high: 1.0e-2, log: true}, epochs: 3}
"""

RICH_PATHS = {
    "nodes[0].params.out_features",
    "nodes[1].times",
    "nodes[1].body[0].params.out_features",
    "nodes[1].body[1].block",
    "nodes[1].body[2].params.out_features",
    "nodes[2]",
    "nodes[2].options[1][0].params.p",
    "nodes[2].options[2].params.eps",
    "train.lr",
}


def rich_space() -> SearchSpace:
    return SearchSpace.from_spec(RICH, variables={"num_classes": 3})


def test_dimensions_are_listed_with_their_paths():
    space = rich_space()
    assert {d.path for d in space.dimensions} == RICH_PATHS
    described = dict(space.describe())
    assert described["nodes[1].times"].startswith("repeat int 0..2 times: linear")
    assert described["nodes[1].body[0].params.out_features"] == "int 4..12 step 4"
    assert described["nodes[2]"] == "choice of (nothing) | dropout | layernorm"
    assert described["train.lr"] == "float 0.0001..0.01 log"
    assert described["nodes[0].params.out_features"] == "choice [8, 16]"


class DrawTrial:
    """A define-by-run trial whose values hypothesis draws (every combination is reachable)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data, self.params = data, {}

    def suggest_int(self, name, low, high, *, step=1, log=False):
        if name not in self.params:
            self.params[name] = (
                self.data.draw(st.integers(0, (high - low) // step), label=name) * step + low
            )
        return self.params[name]

    def suggest_float(self, name, low, high, *, log=False):
        if name not in self.params:
            self.params[name] = self.data.draw(st.floats(low, high), label=name)
        return self.params[name]

    def suggest_categorical(self, name, choices):
        if name not in self.params:
            self.params[name] = self.data.draw(st.sampled_from(list(choices)), label=name)
        return self.params[name]


SPACES = {
    "rich": rich_space,
    "digits default": lambda: SearchSpace.from_spec(
        packaged_space("default_space.yaml"), variables={"num_classes": 10}, inputs={"x": (1, 8, 8)}
    ),
    "vector default": lambda: SearchSpace.from_spec(
        packaged_space("mlp_space.yaml"), variables={"num_classes": 2}, inputs={"x": (2,)}
    ),
}


@pytest.mark.parametrize("name", sorted(SPACES))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_sample_is_a_valid_spec(name, data):
    space = SPACES[name]()
    trial = DrawTrial(data)
    spec = space.sample(trial)  # load_spec validation
    shapes = infer_shapes(spec)  # and it builds on meta
    assert shapes[spec.outputs[0]][-1] in (2, 3, 10)
    assert set(trial.params) <= {d.path for d in space.dimensions}
    assert (
        SearchSpace.sample(space, FixedTrial(trial.params)) == spec
    )  # the params reproduce the spec


@pytest.mark.parametrize("name", sorted(SPACES))
def test_sampling_reaches_every_dimension(name):
    space = SPACES[name]()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    seen: set[str] = set()
    for _ in range(120):
        trial = study.ask()
        space.sample(trial)
        space.sample_train(trial)
        seen |= set(trial.params)
        study.tell(trial, 0.0)
    assert seen == {d.path for d in space.dimensions}


def fixed(**params):
    return FixedTrial(params)


def test_repeat_renames_ids_links_in_and_aliases_last_copy():
    space = rich_space()
    params = {
        "nodes[0].params.out_features": 8,
        "nodes[1].times": 2,
        "nodes[1].body[0].params.out_features": 4,
        "nodes[1].body[1].block": "gelu",
        "nodes[1].body[2].params.out_features": 8,
        "nodes[2]": 0,
    }
    spec = space.sample(FixedTrial(params))
    ids = [n.id for n in spec.nodes]
    assert ids == ["fc", "a_0", "act_0", "b_0", "res_0", "a_1", "act_1", "b_1", "res_1", "head"]
    assert spec.node("res_0").inputs == ("b_0", "fc")  # $in: the repetition's input
    assert spec.node("res_1").inputs == ("b_1", "res_0")
    assert spec.node("head").inputs == (
        "res_1",
    )  # `tail` chose nothing: alias of the repeat's output
    assert spec.node("act_1").block == "gelu"  # repetitions share the sampled values


def test_zero_repetitions_alias_the_input_and_choice_alias_names_the_option():
    space = rich_space()
    params = {
        "nodes[0].params.out_features": 16,
        "nodes[1].times": 0,
        "nodes[2]": 1,
        "nodes[2].options[1][0].params.p": 0.25,
        "train.lr": 1e-3,
    }
    spec = space.sample(FixedTrial(params))
    assert [n.id for n in spec.nodes] == ["fc", "d", "head"]
    assert spec.node("d").inputs == ("fc",)
    assert spec.node("head").inputs == ("d",)
    assert space.sample_train(FixedTrial(params)) == {"lr": 1e-3, "epochs": 3}


def test_dict_form_and_python_objects_equal_the_yaml_tags():
    yaml_space = SearchSpace.from_spec("""
inputs: {x: [4]}
nodes:
  - {id: fc, block: linear, params: {out_features: !int {low: 2, high: 8, step: 2}}}
  - !repeat {body: [{id: r, block: relu}], times: !choice [1, 2]}
  - {id: drop, block: dropout, params: {p: !float [0.0, 0.5]}}
""")
    dict_space = SearchSpace.from_spec(
        {
            "inputs": {"x": [4]},
            "nodes": [
                {
                    "id": "fc",
                    "block": "linear",
                    "params": {"out_features": {"$int": [2, 8], "step": 2}},
                },
                {"$repeat": {"id": "r", "block": "relu"}, "times": {"$choice": [1, 2]}},
                {"id": "drop", "block": "dropout", "params": {"p": {"$float": [0.0, 0.5]}}},
            ],
        }
    )
    py_space = SearchSpace.from_spec(
        {
            "inputs": {"x": [4]},
            "nodes": [
                {"id": "fc", "block": "linear", "params": {"out_features": IntRange(2, 8, step=2)}},
                Repeat([{"id": "r", "block": "relu"}], Choice([1, 2])),
                {"id": "drop", "block": "dropout", "params": {"p": FloatRange(0.0, 0.5)}},
            ],
        }
    )
    params = {"nodes[0].params.out_features": 6, "nodes[1].times": 2, "nodes[2].params.p": 0.1}
    specs = [s.sample(FixedTrial(params)) for s in (yaml_space, dict_space, py_space)]
    assert specs[0] == specs[1] == specs[2]
    assert [d.path for d in yaml_space.dimensions] == [d.path for d in py_space.dimensions]
    assert [n.id for n in specs[0].nodes] == ["fc", "r_0", "r_1", "drop"]


def test_a_choice_between_structured_values_samples_nested_dimensions():
    space = SearchSpace.from_spec(
        {
            "inputs": {"x": [1, 8, 8]},
            "nodes": [
                {
                    "id": "c",
                    "block": "conv2d",
                    "params": Choice(
                        [
                            {"out_channels": 4, "kernel_size": 3},
                            {"out_channels": IntRange(2, 6), "kernel_size": 1},
                        ]
                    ),
                }
            ],
        }
    )
    assert {d.path for d in space.dimensions} == {
        "nodes[0].params",
        "nodes[0].params.options[1].out_channels",
    }
    spec = space.sample(
        fixed(**{"nodes[0].params": 1, "nodes[0].params.options[1].out_channels": 5})
    )
    assert dict(spec.node("c").params) == {"out_channels": 5, "kernel_size": 1}


def test_inputs_are_filled_from_the_task_or_checked():
    text = "nodes: [{id: fc, block: linear, params: {out_features: !choice [2, 4]}}]"
    space = SearchSpace.from_spec(text, inputs={"x": (5,)})
    assert space.sample(fixed(**{"nodes[0].params.out_features": 2})).inputs[0].shape == (5,)
    with pytest.raises(SpecError) as info:
        SearchSpace.from_spec("inputs: {x: [3]}\n" + text, inputs={"x": (5,)})
    assert info.value.path == "inputs.x.shape" and "expects [3] but the task gives [5]" in str(
        info.value
    )
    with pytest.raises(SpecError, match="does not declare"):
        SearchSpace.from_spec("inputs: {y: [5]}\n" + text, inputs={"x": (5,)})


def test_space_files_and_yaml_floats(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "inputs: {x: [3]}\nnodes: [{id: d, block: dropout, params: {p: !float [1e-3, 5e-1]}}]\n"
    )
    space = SearchSpace.from_spec(path)
    assert space.dimensions[0].dim == FloatRange(1e-3, 0.5)
    assert SearchSpace.from_spec(str(path)).describe() == space.describe()
    assert load_space_data({"a": 1}) == {"a": 1}


BAD = [
    (
        "nodes: [{id: f, block: linear, params: {out_features: !int [9, 3]}}]",
        "nodes[0].params.out_features",
        "low=9 is greater than high=3",
    ),
    (
        (
            "nodes: [{id: f, block: linear, "
            "params: {out_features: !int {low: 0, high: 8, log: true}}}]"
        ),
        "nodes[0].params.out_features",
        "log int range needs low >= 1",
    ),
    (
        "nodes: [{id: f, block: linear, params: {out_features: !int {low: 1, high: 8, step: 0}}}]",
        "nodes[0].params.out_features.step",
        "positive integer",
    ),
    (
        "nodes: [{id: f, block: linear, params: {out_features: !int {low: 1, high: 8, log: 3}}}]",
        "nodes[0].params.out_features.log",
        "true or false",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: !float [0.0, 0.5, 0.7]}}]",
        "nodes[0].params.p",
        "needs [low, high]",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: !float {low: 0.0, high: 0.5, log: true}}}]",
        "nodes[0].params.p",
        "log float range needs low > 0",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: !float {low: 0.1, high: 0.5, log: x}}}]",
        "nodes[0].params.p.log",
        "true or false",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: !choice []}}]",
        "nodes[0].params.p",
        "non-empty list",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: {$chioce: [1, 2]}}}]",
        "nodes[0].params.p",
        "unknown dimension '$chioce'",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: {$choice: [1, 2], $int: [1, 2]}}}]",
        "nodes[0].params.p",
        "one dimension per value",
    ),
    (
        "nodes: [{id: d, block: dropout, params: {p: {$float: [0, 1], step: 2}}}]",
        "nodes[0].params.p",
        "unknown key(s) ['step']",
    ),
    ("nodes: [!choice {options: [{id: a, block: relu}], id: 3x}]", "nodes[0].id", "identifier"),
    ("nodes: [!repeat {body: [], times: 2}]", "nodes[0].body", "non-empty list of nodes"),
    ("nodes: [!repeat {body: [{id: a, block: relu}], times: -1}]", "nodes[0].times", "int >= 0"),
    (
        "nodes: [!repeat {body: [{id: a, block: relu}], times: !choice [1, x]}]",
        "nodes[0].times",
        "int >= 0",
    ),
    (
        "nodes: [!choice [[{id: a, block: relu}], [{id: b, block: rleu}]]]",
        "nodes[0].options[1][0].block",
        "unknown block 'rleu'",
    ),
    ("nodes: [{id: a, block: !choice [relu, gleu]}]", "nodes[0].block.options[1]", "did you mean"),
    (
        "nodes: [!repeat {body: {id: a, block: rleu}, times: 1}]",
        "nodes[0].body[0].block",
        "unknown block",
    ),
    (
        "nodes: [{id: a, block: relu}]\ntrain: {lr: 0.1, epoch: !int [1, 3]}",
        "train.epoch",
        "unknown training hyper-parameter",
    ),
    ("nodes: [{id: a, block: relu}]\ntrain: [1]", "train", "must be a mapping"),
    (
        "nodes: [{id: a, block: !choice [relu]}]\nsearch: 1",
        "",
        "unknown top-level key(s) ['search']",
    ),
]


@pytest.mark.parametrize(("text", "path", "message"), BAD)
def test_invalid_spaces_are_spec_errors_with_the_path(text, path, message):
    with pytest.raises(SpecError) as info:
        SearchSpace.from_spec("inputs: {x: [4]}\n" + text)
    assert info.value.path == path
    assert message in str(info.value)


def test_more_invalid_spaces():
    with pytest.raises(SpecError, match="no free dimension"):
        SearchSpace.from_spec(
            "inputs: {x: [4]}\nnodes: [{id: f, block: linear, params: {out_features: !choice [3]}}]"
        )
    with pytest.raises(
        SpecError, match="first candidate"
    ) as info:  # valid dimensions, invalid spec
        SearchSpace.from_spec(
            "inputs: {x: [4]}\nnodes: [{id: f, block: linear, params: {out_feature: !int [1, 3]}}]"
        )
    assert info.value.path.startswith("nodes[0]")
    with pytest.raises(SpecError, match="must be a mapping"):
        SearchSpace.from_spec("[1, 2]\n")
    with pytest.raises(SpecError, match="malformed YAML at line 2"):
        SearchSpace.from_spec("nodes:\n  - {id: [}\n")
    with pytest.raises(SpecError, match="does not exist"):
        SearchSpace.from_spec("missing_space.yaml")
    with pytest.raises(SpecError, match="int range needs"):
        SearchSpace.from_spec(
            "inputs: {x: [4]}\nnodes: [{id: f, block: linear, params: {out_features: !int 3}}]"
        )


def test_nested_repeats_fixed_counts_and_choices_inside_bodies():
    space = SearchSpace.from_spec("""
inputs: {x: [4]}
nodes:
  - !repeat
    times: 2
    body:
      - !choice [[{id: a, block: relu}], [{id: b, block: tanh}]]
      - !repeat
        body: [{id: c, block: linear, params: {out_features: !choice [4, 6]}}]
        times: !int [1, 2]
  - {id: out, block: identity, inputs: [c]}
""")
    assert space.dimensions[0].size == 1 and space.dimensions[0].describe().startswith(
        "repeat 2 times"
    )
    params = {
        "nodes[0].body[0]": 1,
        "nodes[0].body[1].times": 2,
        "nodes[0].body[1].body[0].params.out_features": 6,
    }
    spec = space.sample(FixedTrial(params))
    assert [n.id for n in spec.nodes] == [
        "b_0",
        "c_0_0",
        "c_0_1",
        "b_1",
        "c_1_0",
        "c_1_1",
        "out",
    ]  # outer, inner
    assert spec.node("b_1").inputs == ("c_0_1",) and spec.node("out").inputs == ("c_1_1",)
    assert space.data["nodes"][0].times == 2


def test_malformed_nodes_are_reported_by_the_spec_loader():
    with pytest.raises(SpecError) as info:
        SearchSpace.from_spec(
            {"inputs": {"x": [4]}, "nodes": [{"id": "r", "block": Choice(["relu", "tanh"])}, 3]}
        )
    assert info.value.path == "nodes[1]"
    with pytest.raises(SpecError, match="int range needs"):
        SearchSpace.from_spec(
            "inputs: {x: [4]}\n"
            "nodes: [{id: f, block: linear, params: {out_features: !int [true, 3]}}]"
        )
    with pytest.raises(SpecError, match="inputs"):
        SearchSpace.from_spec(
            "inputs: 3\nnodes: [{id: r, block: !choice [relu, tanh]}]", inputs={"x": (4,)}
        )


def test_suggest_all_samples_every_dimension_for_nsga2():
    space = rich_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(3))
    trial = study.ask()
    space.suggest_all(trial)
    assert set(trial.params) == RICH_PATHS  # also those inside options that are not chosen
    spec = space.sample(trial)
    assert space.sample(FixedTrial(trial.params)) == spec  # sampling reuses the values
    fixed_repeat = SearchSpace.from_spec(
        "inputs: {x: [4]}\nnodes: [!repeat {body: [{id: r, block: !choice [relu, tanh]}], times: 2}]"
    )
    trial = study.ask()
    fixed_repeat.suggest_all(trial)
    assert set(trial.params) == {"nodes[0].body[0].block"}  # a fixed count is not a parameter


def test_a_binary_space_file_is_a_spec_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(SpecError, match=r"binary\.yaml. is binary, not YAML or JSON text"):
        SearchSpace.from_spec(path)


def test_space_files_are_read_within_bounds(tmp_path) -> None:
    from netarchitect.errors import SpecError
    from netarchitect.search.space import load_space_data

    bomb = 'a: &a [1,1,1,1,1,1,1,1,1]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(SpecError, match="expands to more than"):
        load_space_data(path)
    with pytest.raises(SpecError, match="nested deeper than"):
        load_space_data("nodes: " + "[" * 100 + "]" * 100)
    binary = tmp_path / "space.yaml"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(SpecError, match="is binary"):
        load_space_data(binary)
