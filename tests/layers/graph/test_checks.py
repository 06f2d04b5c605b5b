"""Validation of graph inputs: GraphInputError naming the argument."""

from __future__ import annotations

import pytest
import torch

from netarchitect.errors import NetArchitectError
from netarchitect.layers.graph.checks import (
    GraphInputError,
    check_batch,
    check_edge_index,
    check_finite,
)


def test_error_type() -> None:
    assert issubclass(GraphInputError, NetArchitectError)
    assert issubclass(GraphInputError, ValueError)


@pytest.mark.parametrize(
    ("edge_index", "match"),
    [
        ([[0, 1], [1, 2]], "expected a tensor"),
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "dtype must be torch.int64"),
        (torch.tensor([0, 1]), "expected 2 dimension"),
        (torch.tensor([[0, 1], [1, 2], [2, 0]]), r"expected shape \(2, E\)"),
        (torch.tensor([[0, -1], [1, 2]]), r"edge_index\[0\]: negative index -1"),
        (torch.tensor([[0, 1], [1, 17]]), r"edge_index\[1\]: index 17 out of range for 10 nodes"),
    ],
)
def test_bad_edge_index(edge_index: object, match: str) -> None:
    with pytest.raises(GraphInputError, match=match):
        check_edge_index(edge_index, 10)  # type: ignore[arg-type]


def test_good_edge_index() -> None:
    check_edge_index(torch.tensor([[0, 9], [9, 0]]), 10)
    check_edge_index(torch.tensor([[0, 9], [9, 0]], dtype=torch.int32), 10)
    check_edge_index(torch.zeros(2, 0, dtype=torch.long), 0)
    check_edge_index(torch.full((2, 3), 99, device="meta"), 10)  # no values on meta
    with pytest.raises(GraphInputError, match="^g.edge_index"):
        check_edge_index(torch.tensor([[0], [10]]), 10, where="g.edge_index")


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (torch.tensor([0.0, 1.0]), "batch: dtype"),
        (torch.tensor([0, 0, 1]), "batch: length 3 does not match 2 nodes"),
        (torch.tensor([-1, 0]), "batch: negative graph id -1"),
        (torch.tensor([1, 0]), "batch: graph ids must be sorted"),
    ],
)
def test_bad_batch(batch: torch.Tensor, match: str) -> None:
    with pytest.raises(GraphInputError, match=match):
        check_batch(batch, 2)


def test_good_batch() -> None:
    check_batch(torch.tensor([0, 0, 2]), 3)  # graph 1 has no nodes: valid
    check_batch(torch.zeros(0, dtype=torch.long), 0)
    check_batch(torch.tensor([0]), 1)
    check_batch(torch.tensor([3, 1], device="meta"), 2)


def test_check_finite() -> None:
    check_finite(torch.randn(4, 3), "pos")
    check_finite(torch.tensor([1, 2]), "pos")  # integers are finite
    check_finite(torch.full((2,), float("nan"), device="meta"), "pos")
    with pytest.raises(GraphInputError, match="pos: contains NaN"):
        check_finite(torch.tensor([[0.0, float("nan")]]), "pos")
    with pytest.raises(GraphInputError, match="pos: expected a tensor"):
        check_finite([1.0], "pos")  # type: ignore[arg-type]
