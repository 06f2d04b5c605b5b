import pytest
import torch
from torch import nn

import netarchitect as na
from netarchitect.errors import NetArchitectError
from netarchitect.weights import load_weights, save_weights


def test_round_trip_with_tied_weights(tmp_path, mlp_spec):
    model = na.build(mlp_spec, seed=0)
    path = save_weights(model, tmp_path / "w.safetensors")
    other = load_weights(na.build(mlp_spec, seed=1), path)
    x = torch.randn(2, 8)
    torch.testing.assert_close(model(x), other(x))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata()["spec_hash"] == na.spec_hash(model.spec)

    tied = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    tied[1].weight = tied[0].weight
    save_weights(tied, tmp_path / "tied.safetensors")
    fresh = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    fresh[1].weight = fresh[0].weight
    load_weights(fresh, tmp_path / "tied.safetensors")
    assert torch.equal(fresh[0].weight, tied[0].weight)


def test_errors(tmp_path):
    with pytest.raises(NetArchitectError, match="does not exist"):
        load_weights(nn.Linear(2, 2), tmp_path / "none.safetensors")
    save_weights(nn.Linear(2, 2), tmp_path / "a.safetensors")
    with pytest.raises(NetArchitectError, match="do not fit"):
        load_weights(nn.Linear(2, 3), tmp_path / "a.safetensors")
