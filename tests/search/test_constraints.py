"""Constraints measured on the meta device (latency on a short real run), checked cheapest first."""

from __future__ import annotations

import math

import pytest

from netarchitect import BudgetError, build, load_spec
from netarchitect.analysis import count_params
from netarchitect.search import Budget, SearchSpace, check, find_feasible, measure
from netarchitect.search.constraints import Rejected, Violation

SPEC = load_spec(
    {
        "inputs": {"x": [8]},
        "nodes": [
            {"id": "fc1", "block": "linear", "params": {"out_features": 32}},
            {"id": "act", "block": "relu"},
            {"id": "fc2", "block": "linear", "params": {"out_features": 4}},
        ],
    }
)


def test_measure_counts_params_and_macs_on_meta():
    m = measure(SPEC)
    assert m.params == count_params(build(SPEC, seed=0)).total == 8 * 32 + 32 + 32 * 4 + 4
    assert m.macs == 8 * 32 + 32 * 4
    assert m.activation_bytes is None and m.latency_ms is None
    assert measure(SPEC, activation=True).activation_bytes > 0
    assert m.to_dict() == {"params": m.params, "macs": m.macs}


def test_check_reports_the_first_violated_constraint_cheapest_first():
    m, v = check(Budget(max_params=100, max_macs=10), SPEC)
    assert v == Violation("params", m.params, 100) and str(v) == "params 420 > 100"
    assert m.macs is None  # not measured once a cheaper limit failed
    _, v = check(Budget(max_params=10_000, max_macs=10), SPEC)
    assert v is not None and v.name == "macs"
    _, v = check(Budget(max_activation_bytes=1), SPEC)
    assert v is not None and v.name == "activation_bytes"
    m, v = check(Budget(max_params=10_000), SPEC)
    assert v is None and m.latency_ms is None  # latency is only measured when it matters
    m, v = check(Budget(max_params=10_000), SPEC, need_latency=True)
    assert v is None and m.latency_ms > 0
    m, v = check(Budget(max_latency_ms=1e-9), SPEC)
    assert v is not None and v.name == "latency_ms" and "latency_ms" in str(v)
    _, v = check(Budget(max_params=10, max_latency_ms=1e-9), SPEC)
    assert v.name == "params"  # rejected before the real run


@pytest.mark.parametrize("bad", [0, -5, math.nan, True, "10"])
def test_invalid_budgets_are_budget_errors(bad):
    with pytest.raises(BudgetError, match="max-params must be"):
        Budget(max_params=bad)


def test_budget_description():
    assert Budget().describe() == "unlimited"
    assert (
        Budget(max_params=50_000, max_latency_ms=2.5).describe()
        == "params ≤ 50,000, latency_ms ≤ 2.5"
    )


def space() -> SearchSpace:
    return SearchSpace.from_spec(
        {
            "inputs": {"x": [8]},
            "nodes": [
                {"id": "fc", "block": "linear", "params": {"out_features": {"$choice": [64, 128]}}},
                {"id": "head", "block": "linear", "params": {"out_features": 2}},
            ],
        }
    )


def test_find_feasible_and_an_empty_feasible_region():
    assert find_feasible(space(), Budget(max_params=1_000)).params == 8 * 64 + 64 + 64 * 2 + 2
    with pytest.raises(BudgetError) as info:
        find_feasible(space(), Budget(max_params=100), attempts=7)
    message = str(info.value)
    assert "after 7 attempts" in message and "params exceeded its limit in 7" in message
    assert "smallest seen 706" in message


def test_a_space_whose_candidates_never_fit_together():
    never = SearchSpace.from_spec(
        {
            "inputs": {"x": [8]},
            "nodes": [
                {"id": "fc", "block": "linear", "params": {"out_features": {"$choice": [4, 6]}}},
                {"id": "res", "block": "identity", "inputs": ["fc", "x"], "merge": "add"},
            ],
        }
    )
    with pytest.raises(BudgetError, match="no valid candidate in 5 samples.*incompatible shapes"):
        find_feasible(never, Budget(max_params=1_000), attempts=5)


def test_rejected_carries_the_reason():
    err = Rejected("params", "params 420 > 100")
    assert err.reason == "params" and str(err) == "params: params 420 > 100"


def test_a_classifier_has_one_output_of_num_classes():
    from netarchitect import SpecError, load_spec
    from netarchitect.search.constraints import check_classifier

    def spec(shape, outputs=("head",)):
        return load_spec(
            {
                "name": "c",
                "inputs": {"x": {"shape": shape}},
                "nodes": [
                    {"id": "body", "block": "linear", "params": {"out_features": 4}},
                    {"id": "head", "block": "linear", "params": {"out_features": 3}},
                ],
                "outputs": list(outputs),
            }
        )

    check_classifier(spec([8]), 3)
    with pytest.raises(SpecError, match=r"outputs per-sample shape \[2, 3\] for inputs \[2, 8\]"):
        check_classifier(spec([2, 8]), 3)
    with pytest.raises(SpecError, match=r"must output \[5\]"):
        check_classifier(spec([8]), 5)
    with pytest.raises(SpecError, match="one output, got \\['body', 'head'\\]"):
        check_classifier(spec([8], ("body", "head")), 3)
