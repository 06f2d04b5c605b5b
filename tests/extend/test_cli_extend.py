"""``netarchitect extend``: the written folder rebuilds the edited model exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect import build, extend
from netarchitect.cli import main
from netarchitect.extend import freeze, remove_layers, replace_head
from netarchitect.network import sample_inputs
from netarchitect.spec import spec_hash
from netarchitect.weights import load_weights, save_weights

REPO = Path(__file__).parents[2]
MLP = str(REPO / "examples/specs/residual_mlp.yaml")
LM = str(REPO / "examples/specs/tiny_transformer.yaml")


def load(folder: Path) -> nn.Module:
    model = build(folder / "spec.yaml")
    load_weights(model, folder / "weights.safetensors")
    return model.eval()


def test_head_freeze_and_remove_write_an_exact_folder(tmp_path, capsys) -> None:
    out = tmp_path / "o"
    code = main(["extend", MLP, "--head", "5", "--remove", "norm2", "--freeze", "fc1*",
                 "--seed", "3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "trainable" in printed and "written to" in printed
    assert sorted(p.name for p in out.iterdir()) == ["spec.yaml", "summary.json",
                                                    "weights.safetensors"]
    expected = replace_head(remove_layers(build(MLP, seed=3), "norm2"), 5, seed=3).eval()
    got = load(out)
    x = sample_inputs(got.spec)
    assert_close(got(*x), expected(*x), rtol=0, atol=0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == ["removed norm2", "new 5-way head", "froze 4 tensors (fc1*)"]
    frozen = sum(p.numel() for n, p in expected.named_parameters() if n.startswith("nodes.fc1"))
    assert summary["parameters"]["frozen"] == frozen
    assert summary["files"] == ["spec.yaml", "weights.safetensors", "summary.json"]


def test_weights_are_loaded_first_and_a_model_folder_works(tmp_path) -> None:
    model = build(MLP, seed=11)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "spec.yaml").write_text(Path(MLP).read_text())
    save_weights(model, folder / "weights.safetensors")
    other = tmp_path / "w.safetensors"
    save_weights(build(MLP, seed=12), other)
    assert main(["extend", str(folder), "--head", "0", "--out", str(tmp_path / "a")]) == 0
    assert main(["extend", MLP, "--weights", str(other), "--head", "0",
                 "--out", str(tmp_path / "b")]) == 0
    x = sample_inputs(model.spec)
    assert_close(load(tmp_path / "a")(*x), replace_head(model, 0).eval()(*x))
    assert_close(load(tmp_path / "b")(*x),
                 replace_head(build(MLP, seed=12), 0).eval()(*x))


def test_swap_resize_and_unfreeze_on_a_language_model(tmp_path) -> None:
    out = tmp_path / "o"
    assert main(["extend", LM, "--resize-vocab", "300", "--swap", "rmsnorm=layernorm",
                 "--freeze", "*", "--unfreeze", "head", "--out", str(out)]) == 0
    # rmsnorm has no bias to give layernorm: a layernorm bias is new, which is allowed
    model = load(out)
    assert model.vocab_size == 300 and model.tie_embeddings
    assert model.spec.node("norm").block == "layernorm"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["trainable"] == 300 * 64  # the tied head/embedding only


def test_a_failing_edit_writes_nothing(tmp_path, capsys) -> None:
    assert main(["extend", MLP, "--head", "3", "--freeze", "nothing*",
                 "--out", str(tmp_path / "o")]) == 2
    assert "matches nothing" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_lora_writes_adapters_and_keeps_the_new_head_trainable(tmp_path, monkeypatch) -> None:
    """The CLI's use of extend-lora's API (stubbed here: only the wiring is tested)."""
    calls = {}

    def apply_lora(model, targets, **options):
        calls["apply"] = (targets, options)
        freeze(model)
        return ["nodes.fc1a"]

    def save_adapters(model, path):
        Path(path).write_bytes(b"adapters")

    monkeypatch.setattr(extend, "apply_lora", apply_lora, raising=False)
    monkeypatch.setattr(extend, "save_adapters", save_adapters, raising=False)
    out = tmp_path / "o"
    assert main(["extend", MLP, "--head", "4", "--lora", "fc*", "--rank", "2", "--alpha", "4",
                 "--lora-dropout", "0.1", "--dora", "--rslora", "--out", str(out)]) == 0
    assert calls["apply"] == (["fc*"], {"rank": 2, "alpha": 4.0, "dropout": 0.1, "dora": True,
                                        "rslora": True})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lora"]["adapted"] == ["nodes.fc1a"] and (out / "adapters.safetensors").exists()
    assert summary["parameters"]["trainable"] == 64 * 4 + 4  # the new head only
    assert summary["files"][-2:] == ["adapters.safetensors", "summary.json"]


def test_a_failing_lora_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    from netarchitect.errors import SpecError

    def apply_lora(model, targets, **options):
        raise SpecError("rank 4096 is larger than fc1a's dims", path="rank")

    monkeypatch.setattr(extend, "apply_lora", apply_lora, raising=False)
    monkeypatch.setattr(extend, "save_adapters", lambda m, p: None, raising=False)
    assert main(["extend", MLP, "--lora", "fc*", "--rank", "4096",
                 "--out", str(tmp_path / "o")]) == 2
    assert "rank 4096" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (hasattr(extend, "apply_lora") and hasattr(extend, "save_adapters")),
                    reason="extend-lora not on main yet")
def test_real_lora_adapters(tmp_path) -> None:
    out = tmp_path / "o"
    assert main(["extend", MLP, "--head", "3", "--lora", "fc1*", "--rank", "4",
                 "--unfreeze", "norm2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lora"]["adapted"] == ["nodes.fc1a", "nodes.fc1b"]
    assert (out / "adapters.safetensors").stat().st_size > 0
    lora = 4 * (64 + 128) * 2  # A and B of two 64<->128 layers
    assert summary["parameters"]["trainable"] == lora + (64 * 3 + 3) + 2 * 64
    model = load(out)
    assert model(torch.randn(2, 64)).shape == (2, 3)
    assert summary["spec_hash"] == spec_hash(model.spec)
