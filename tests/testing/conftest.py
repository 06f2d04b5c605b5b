"""Small reference modules shared by the conformance-harness tests."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class TinyMLP(nn.Module):
    """Linear -> LayerNorm -> GELU -> Dropout -> Linear; a module that follows the contract."""

    def __init__(
        self,
        in_features: int = 4,
        out_features: int = 3,
        *,
        hidden: int = 8,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(in_features, hidden, **kw)
        self.norm = nn.LayerNorm(hidden, **kw)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(hidden, out_features, **kw)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(F.gelu(self.norm(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.body(x))


class CheckpointedMLP(TinyMLP):
    """TinyMLP whose hidden part can run under activation checkpointing."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return self.fc2(checkpoint(self.body, x, use_reentrant=False))
        return self.fc2(self.body(x))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def mlp_factory():
    return functools.partial(TinyMLP, 4, 3)


@pytest.fixture
def tiny_mlp_cls():
    return TinyMLP


@pytest.fixture
def checkpointed_cls():
    return CheckpointedMLP
