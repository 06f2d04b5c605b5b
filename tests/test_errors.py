import pytest

from netarchitect.errors import (
    BudgetError,
    NetArchitectError,
    Problem,
    RegistryError,
    ShapeError,
    SpecError,
)


def test_spec_error_carries_path_and_message():
    err = SpecError("7 does not divide dim=64", path="nodes[3].params.num_heads")
    assert err.path == "nodes[3].params.num_heads"
    assert str(err) == "nodes[3].params.num_heads: 7 does not divide dim=64"
    assert err.problems == [Problem("nodes[3].params.num_heads", "7 does not divide dim=64")]
    assert isinstance(err, ValueError) and isinstance(err, NetArchitectError)


def test_spec_error_lists_every_problem():
    err = SpecError(problems=[Problem("a", "x"), Problem("b", "y")])
    assert err.path == "a"
    assert str(err).splitlines() == ["2 problems:", "  a: x", "  b: y"]


def test_subclasses():
    assert issubclass(ShapeError, SpecError)
    assert issubclass(BudgetError, NetArchitectError)
    err = RegistryError("unknown block 'x'")
    assert isinstance(err, KeyError)
    assert str(err) == "unknown block 'x'"
    assert str(RegistryError()) == ""


def test_problem_value_semantics():
    p = Problem("", "no path")
    assert str(p) == "no path"
    assert p == Problem("", "no path") and p != "no path"
    assert len({p, Problem("", "no path")}) == 1
    assert "no path" in repr(p)
    with pytest.raises(SpecError, match="^x$"):
        raise SpecError("x")
