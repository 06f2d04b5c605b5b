import pytest
from torch import nn

import netarchitect as na
from netarchitect import registry
from netarchitect.errors import RegistryError


def test_unknown_block_suggests_closest_names():
    with pytest.raises(RegistryError, match=r"unknown block 'lineer'.*did you mean 'linear'"):
        na.get_block("lineer")


def test_unknown_model_raises():
    with pytest.raises(RegistryError, match="unknown model 'no_such_model'"):
        na.create_model("no_such_model")


def test_register_block_twice_raises():
    @na.register_block("_test_twice")
    class A(nn.Identity):
        pass

    assert na.get_block("_test_twice") is A
    assert A.block_name == "_test_twice"
    na.register_block("_test_twice")(A)  # same class again is harmless
    with pytest.raises(RegistryError, match="already registered"):

        @na.register_block("_test_twice")
        class B(nn.Identity):
            pass

    del registry._BLOCKS["_test_twice"]


def test_register_block_rejects_non_modules():
    with pytest.raises(RegistryError, match="not an nn.Module"):
        na.register_block("_bad")(int)


def test_register_and_create_model():
    ex = lambda: na.Example({"n": 3}, ())

    @na.register_model("_test_model", example=ex)
    def build(n: int = 2) -> nn.Module:
        return nn.Linear(n, n)

    try:
        assert "_test_model" in na.list_models("_test_*")
        assert na.create_model("_test_model", n=5).in_features == 5
        assert registry.model_example("_test_model").kwargs == {"n": 3}
        with pytest.raises(RegistryError, match="already registered"):
            na.register_model("_test_model")(lambda: nn.Identity())
    finally:
        del registry._MODELS["_test_model"], registry._MODEL_EXAMPLES["_test_model"]


def test_model_without_example():
    @na.register_model("_test_plain")
    def build() -> nn.Module:
        return nn.Identity()

    try:
        assert registry.model_example("_test_plain") is None
    finally:
        del registry._MODELS["_test_plain"], registry._MODEL_EXAMPLES["_test_plain"]


def test_list_blocks_glob_and_sorted():
    names = na.list_blocks()
    assert names == sorted(names)
    assert {"linear", "conv2d", "identity", "flatten", "dropout"} <= set(names)
    assert na.list_blocks("conv*") == [n for n in names if n.startswith("conv")]


def test_suggest_empty_when_nothing_close():
    assert registry.suggest("zzzzzz", ["linear"]) == ""
