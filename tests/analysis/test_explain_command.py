"""``netarchitect explain`` through ``netarchitect.cli.main``: files written, and bad inputs
answered with one line, exit status 2 and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netarchitect.cli import main
from netarchitect.spec import save_spec

from .test_explain import MLP_SPEC, images, model_folder, npz, tiny_vit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    model_folder(root)
    return root


def _explain(*args: object) -> int:
    return main(["explain", *map(str, args)])


def test_ig_on_a_design_run(run_dir, tmp_path, capsys):
    data = npz(tmp_path / "x.npz", x=images(2), y=np.array([0, 2]))
    out = tmp_path / "out"
    assert _explain(run_dir, "--input", data, "--method", "ig", "--steps", 16, "--out", out) == 0
    assert "IG completeness gap" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "0000_ig.png", "0001_ig.png", "attributions.npz"]
    with np.load(out / "attributions.npz") as result:
        assert result["attributions"].shape == (2, 3, 16, 16)
        assert result["targets"].tolist() == [0, 2]
        assert np.abs(result["delta"]).max() < 1e-3  # completeness with 16 Gauss-Legendre steps


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_on_a_model_folder_with_layer_and_target(run_dir, tmp_path, method):
    data = npz(tmp_path / "x.npz", x=images(1))
    out = tmp_path / "out"
    folder = run_dir / "models" / "trial_00001"
    assert _explain(folder, "--input", data, "--method", method, "--layer", "s1_b0",
                    "--target", 1, "--out", out) == 0
    with np.load(out / "attributions.npz") as result:
        assert result["attributions"].shape == (1, 1, 4, 4)  # s1_b0: stride 4 on 16x16
        assert str(result["layer"]) == "s1_b0" and result["targets"].tolist() == [1]


def test_tabular_smoothgrad_bar_charts(tmp_path, capsys):
    data = npz(tmp_path / "t.npz", x=np.ones((4, 64), np.float32))
    assert _explain(MLP_SPEC, "--input", data, "--method", "smoothgrad", "--out",
                    tmp_path / "tab") == 0
    assert len(list((tmp_path / "tab").glob("*_smoothgrad.png"))) == 4
    assert capsys.readouterr().out.rstrip().endswith("...")


def test_rollout_on_a_vit_spec(tmp_path):
    spec = tmp_path / "vit.yaml"
    save_spec(tiny_vit().spec, spec)
    data = npz(tmp_path / "x.npz", x=images(1))
    assert _explain(spec, "--input", data, "--method", "rollout", "--head-fusion", "max",
                    "--discard-ratio", 0.5, "--out", tmp_path / "r") == 0
    with np.load(tmp_path / "r" / "attributions.npz") as result:
        assert result["attributions"].shape == (1, 4, 4)
        assert int(result["num_prefix_tokens"]) == 1
    assert _explain(spec, "--input", data, "--method", "rollout", "--discard-ratio", 1.0,
                    "--out", tmp_path / "bad") == 2
    assert not (tmp_path / "bad").exists()


def _fails(capsys, *args: object) -> str:
    out = Path(str(args[-1]))
    assert _explain(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return err


def test_bad_inputs_exit_2_and_write_nothing(run_dir, tmp_path, capsys):
    good = npz(tmp_path / "good.npz", x=images(1))
    out = tmp_path / "out"
    err = _fails(capsys, run_dir, "--input", good, "--method", "gradcam", "--layer", "s9",
                 "--out", out)
    assert "'s9'" in err and "stem, s1_b0, s2_b0" in err
    bad_base = npz(tmp_path / "b.npz", x=images(1), baseline=np.zeros((3, 4), np.float32))
    err = _fails(capsys, run_dir, "--input", bad_base, "--method", "ig", "--out", out)
    assert "baseline: shape (3, 4)" in err
    no_x = npz(tmp_path / "n.npz", images=images(1))
    assert "no array 'x'" in _fails(capsys, run_dir, "--input", no_x, "--method", "ig",
                                    "--out", out)
    small = npz(tmp_path / "s.npz", x=images(1)[:, :, :8, :8])
    assert "the model takes (3, 16, 16)" in _fails(
        capsys, run_dir, "--input", small, "--method", "saliency", "--out", out)
    for steps in (0, "many"):
        assert "--steps" in _fails(capsys, run_dir, "--input", good, "--method", "ig",
                                   "--steps", steps, "--out", out)
    for target in (-1, "cat"):
        assert "--target" in _fails(capsys, run_dir, "--input", good, "--method", "ig",
                                    "--target", target, "--out", out)
    assert "invalid choice" in _fails(capsys, run_dir, "--input", good, "--method", "lime",
                                      "--out", out)


def test_non_empty_out_is_refused_before_any_work(run_dir, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    data = npz(tmp_path / "x.npz", x=images(1))
    assert _explain(run_dir, "--input", data, "--method", "ig", "--out", out) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
