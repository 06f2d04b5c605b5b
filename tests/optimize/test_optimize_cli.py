"""``netarchitect optimize``: every step end to end on small specs, a design-run model folder,
and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.testing import assert_close

from netarchitect.cli import main
from netarchitect.network import build, sample_inputs
from netarchitect.search.config import RunConfig
from netarchitect.weights import load_weights, save_weights

CNN = {
    "name": "digits_cnn",
    "inputs": {"image": {"shape": [1, 8, 8]}},
    "nodes": [
        {"id": "stem", "block": "conv2d", "params": {"out_channels": 8, "kernel_size": 3, "bias": False}},
        {"id": "stem_bn", "block": "batchnorm2d"},
        {"id": "stem_act", "block": "relu"},
        {"id": "conv", "block": "conv2d", "params": {"out_channels": 8, "kernel_size": 3, "bias": False}},
        {"id": "bn", "block": "batchnorm2d"},
        {"id": "skip", "block": "relu", "inputs": ["bn", "stem_act"], "merge": "add"},
        {"id": "pool", "block": "adaptive_avgpool2d", "params": {"output_size": 1}},
        {"id": "flat", "block": "flatten"},
        {"id": "head", "block": "linear", "params": {"out_features": 10}},
    ],
    "outputs": ["head"],
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cnn_spec(tmp_path: Path) -> Path:
    path = tmp_path / "cnn.yaml"
    path.write_text(yaml.safe_dump(CNN), encoding="utf-8")
    return path


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_prune_fuse_export_writes_a_smaller_valid_spec(cnn_spec: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "deep" / "out"
    code, text, err = run(
        ["optimize", str(cnn_spec), "--prune", "0.5", "--fuse", "--export", "program",
         "--out", str(out)], capsys)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert names == {"spec.yaml", "weights.safetensors", "model.pt2", "report.md"}
    rebuilt = build(out / "spec.yaml")
    load_weights(rebuilt, out / "weights.safetensors")
    rebuilt.eval()
    x = sample_inputs(rebuilt.spec, batch=3)
    program = torch.export.load(out / "model.pt2").module()
    with torch.no_grad():
        assert_close(program(*x), rebuilt(*x), atol=1e-5, rtol=1e-5)
    before = sum(p.numel() for p in build(cnn_spec).parameters())
    assert sum(p.numel() for p in rebuilt.parameters()) < before
    assert not any(m.__class__.__name__.startswith("BatchNorm") for m in rebuilt.modules())
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "structured pruning 0.5" in report and f"| params | {before:,} |" in report
    assert "before / after" in text
    _no_leftovers(tmp_path)


def test_design_run_folder_uses_its_task_fine_tunes_and_quantises(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    folder = run_dir / "models" / "trial_00003"
    folder.mkdir(parents=True)
    RunConfig(study="s", storage="sqlite:///x.db", run_dir=str(run_dir), task="digits").save()
    model = build(CNN, seed=0)
    (folder / "spec.yaml").write_text(yaml.safe_dump(CNN), encoding="utf-8")
    save_weights(model, folder / "weights.safetensors")
    out = tmp_path / "small"
    code, _, err = run(
        ["optimize", str(folder), "--prune", "0.25", "--finetune-epochs", "1",
         "--quantize", "int8", "--out", str(out)], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"spec.yaml", "weights.int8.safetensors", "report.md"}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "fine-tuning 1 epochs" in report and "quantisation int8_dynamic" in report
    accuracy = next(line for line in report.splitlines() if line.startswith("| val accuracy"))
    assert accuracy.count("%") == 2 and "pts" in accuracy  # measured before and after
    from netarchitect.optimize.quantization import load_quantized

    loaded = load_quantized(out / "weights.int8.safetensors", out / "spec.yaml")
    x = sample_inputs(loaded.spec, batch=2)
    assert loaded(*x).shape == (2, 10)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prune", "1.5"], "outside [0, 1)"),
        (["--prune", "abc"], "invalid amount"),
        ([], "nothing to do"),
        (["--unstructured", "--fuse"], "--unstructured needs --prune"),
        (["--fuse", "--finetune-epochs", "2"], "applies after --prune"),
        (["--prune", "0.5", "--finetune-epochs", "2"], "needs --data"),
        (["--fuse", "--data", "moons"], "data set 'moons'"),
        (["--quantize", "int4"], "invalid choice"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(
    argv: list[str], message: str, cnn_spec: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    code, _, err = run(["optimize", str(cnn_spec), *argv, "--out", str(out)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_a_failing_step_leaves_nothing_and_an_existing_out_is_refused(
    tmp_path: Path, capsys
) -> None:
    spec = dict(CNN, nodes=CNN["nodes"][:-1], outputs=["flat"])  # no Linear to quantise
    path = tmp_path / "conv_only.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = run(["optimize", str(path), "--fuse", "--quantize", "int8", "--out", str(out)],
                       capsys)
    assert code == 2 and "Linear" in err, err
    assert not out.exists()
    _no_leftovers(tmp_path)
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    code, _, err = run(["optimize", str(path), "--fuse", "--out", str(out)], capsys)
    assert code == 2 and "not an empty folder" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_quantised_export_uses_the_exportable_backend(cnn_spec: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    code, _, err = run(["optimize", str(cnn_spec), "--quantize", "int8", "--export", "program",
                        "--out", str(out)], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"spec.yaml", "weights.int8.safetensors",
                                               "model.pt2", "report.md"}
    assert "quantisation int8_dynamic (torchao, exportable)" in (out / "report.md").read_text()
    x = sample_inputs(build(cnn_spec).spec, batch=3)
    assert torch.export.load(out / "model.pt2").module()(*x).shape == (3, 10)
