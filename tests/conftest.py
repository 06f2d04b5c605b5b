"""Shared fixtures: deterministic seeds and small specs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)  # pytest-xdist runs 2 workers on 2 cores

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SPECS = sorted((REPO / "examples" / "specs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def mlp_spec() -> dict:
    """A three-node MLP spec as plain data."""
    return {
        "name": "mlp",
        "inputs": {"x": {"shape": [8], "dtype": "float32"}},
        "nodes": [
            {"id": "fc1", "block": "linear", "params": {"out_features": 16}, "inputs": ["x"]},
            {"id": "drop", "block": "dropout", "params": {"p": 0.0}},
            {"id": "fc2", "block": "linear", "params": {"out_features": 4}},
        ],
        "outputs": ["fc2"],
    }


@pytest.fixture
def repo_root() -> Path:
    return REPO
