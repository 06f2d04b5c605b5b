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


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "header too small"),
        (b"this is not a safetensors file at all, just some text", "header too large"),
        (None, "invalid header length|incomplete|invalid"),  # truncated: half a real file
        (b"\x05\x00\x00\x00\x00\x00\x00\x00{abc}", "invalid JSON in header"),
    ],
)
def test_unreadable_weights_files_name_the_file(tmp_path, content, reason):
    path = tmp_path / "w.safetensors"
    if content is None:
        save_weights(nn.Linear(4, 4), path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(
        NetArchitectError, match=rf"w\.safetensors: not a readable safetensors file \(.*({reason})"
    ):
        load_weights(nn.Linear(4, 4), path)


def test_weights_path_that_is_not_a_file(tmp_path):
    with pytest.raises(NetArchitectError, match="is not a file"):
        load_weights(nn.Linear(2, 2), tmp_path)
    with pytest.raises(NetArchitectError, match=r"/proc/self/mem: not a readable safetensors file"):
        load_weights(nn.Linear(2, 2), "/proc/self/mem")


def test_written_weights_have_the_usual_permissions_and_replace_stale_temporaries(tmp_path):
    import os
    import socket
    import stat
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a writer killed before its rename left this behind
    stale = tmp_path / f".w.safetensors.{socket.gethostname()}.{proc.pid}.0badc0de.tmp"
    stale.write_bytes(b"half a file")
    saved = os.umask(0o022)
    try:
        path = save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    finally:
        os.umask(saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    load_weights(nn.Linear(2, 2), path)


def test_save_weights_to_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NetArchitectError, match="cannot write"):
        save_weights(nn.Linear(2, 2), tmp_path)


def test_missing_and_unexpected_keys(tmp_path):
    path = save_weights(nn.Linear(2, 2), tmp_path / "a.safetensors")
    with pytest.raises(
        NetArchitectError,
        match=r"missing \['0.bias', '0.weight'\], unexpected \['bias', 'weight'\]",
    ):
        load_weights(nn.Sequential(nn.Linear(2, 2)), path)
    load_weights(nn.Sequential(nn.Linear(2, 2)), path, strict=False)
