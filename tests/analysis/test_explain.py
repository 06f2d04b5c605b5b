"""The logic of ``netarchitect explain``: model and input loading, methods, files written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import netarchitect as na
from netarchitect.analysis import explain as ex
from netarchitect.analysis.attribution import (
    AttributionError,
    grad_cam,
    integrated_gradients,
    saliency,
)
from netarchitect.spec import save_spec
from netarchitect.weights import save_weights

RESNET = {"layers": (1, 1), "widths": (4, 8), "stem_width": 4, "img_size": 16,
          "num_classes": 3}
MLP_SPEC = Path(__file__).parents[2] / "examples" / "specs" / "residual_mlp.yaml"


def tiny_resnet(seed: int = 0) -> torch.nn.Module:
    return na.create_model("resnet18", seed=seed, **RESNET).eval()


def model_folder(root: Path, name: str = "trial_00001", seed: int = 1) -> Path:
    folder = root / "models" / name
    folder.mkdir(parents=True)
    model = tiny_resnet(seed)
    save_spec(model.spec, folder / "spec.yaml")
    save_weights(model, folder / "weights.safetensors")
    return folder


def images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)


def npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_model_folder_and_run_dir_load_the_trained_weights(tmp_path):
    folder = model_folder(tmp_path)
    x = torch.from_numpy(images())
    want = tiny_resnet(1)(x)
    assert_close(ex.load_explain_model(str(folder))(x), want)
    assert_close(ex.load_explain_model(str(tmp_path))(x), want)  # run dir with one model
    model_folder(tmp_path, "trial_00002")
    with pytest.raises(AttributionError, match="2 models .*trial_00001, trial_00002"):
        ex.load_explain_model(str(tmp_path))


def test_registered_name_and_spec_file_load():
    assert not ex.load_explain_model("resnet18").training
    assert ex.load_explain_model(str(MLP_SPEC)).spec.inputs[0].shape == (64,)


def test_inputs_are_checked_against_the_spec(tmp_path):
    model = tiny_resnet()
    good = ex.load_explain_inputs(npz(tmp_path / "a.npz", x=images().astype(np.float64),
                                      y=np.array([0.0, 2.0])), model)
    assert good.x.dtype == torch.float32 and good.y.tolist() == [0, 2] and good.baseline is None
    cases = [
        ({"y": np.zeros(2)}, "no array 'x' .*its arrays: y"),
        ({"x": images()[:, :, :8]}, r"shape \(3, 8, 16\), the model takes \(3, 16, 16\)"),
        ({"x": images().astype(np.int64)}, "x is torch.int64, the model takes float32"),
        ({"x": images(), "y": np.array([0, 1, 2])}, "one integer class per sample"),
        ({"x": images(), "y": np.array([0.5, 1.0])}, "one integer class per sample"),
        ({"x": np.zeros(3, np.float32)}, r"expected \(N, ...\)"),
    ]
    for i, (arrays, match) in enumerate(cases):
        with pytest.raises(AttributionError, match=match):
            ex.load_explain_inputs(npz(tmp_path / f"b{i}.npz", **arrays), model)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(AttributionError, match="not a readable npz"):
        ex.load_explain_inputs(tmp_path / "bad.npz", model)
    plain = ex.load_explain_inputs(npz(tmp_path / "c.npz", x=images().astype(np.float64)))
    assert plain.x.dtype == torch.float32  # no spec: floats become float32


def test_multi_input_models_are_refused(tmp_path):
    t5 = na.create_model("t5-small", device="meta")
    with pytest.raises(AttributionError, match="takes 2 inputs"):
        ex.load_explain_inputs(npz(tmp_path / "a.npz", x=np.zeros((1, 4), np.int64)), t5)


def _inputs(n: int = 2, y: list[int] | None = None) -> ex.ExplainInputs:
    return ex.ExplainInputs(torch.from_numpy(images(n)), None if y is None else torch.tensor(y))


def test_methods_equal_the_attribution_functions():
    model = tiny_resnet()
    inputs = _inputs(y=[1, 2])
    x, t = inputs.x, torch.tensor([1, 2])
    sal = ex.explain(model, inputs, "saliency")
    assert sal.targets.tolist() == [1, 2]  # y is the default target
    assert_close(sal.attributions, saliency(model, x, t))
    ig = ex.explain(model, inputs, "ig", steps=16, baseline=0.5)
    ref = integrated_gradients(model, x, t, steps=16, baseline=0.5)
    assert_close(ig.attributions, ref.attributions)
    assert_close(ig.delta, ref.delta)
    cam = ex.explain(model, inputs, "gradcam++", target=0)
    assert cam.extra == {"layer": "s2_b0"}  # the last feature_info stage
    assert_close(cam.attributions, grad_cam(model, x, 0, "s2_b0", plusplus=True))
    smooth = ex.explain(model, _inputs(), "smoothgrad")
    assert_close(smooth.targets, smooth.predictions)  # no y, no --target: the prediction
    assert smooth.attributions.shape == x.shape


def test_ig_baseline_from_the_file_and_its_checks():
    model = tiny_resnet()
    base = torch.full((3, 16, 16), 0.25)
    inputs = ex.ExplainInputs(torch.from_numpy(images()), None, base)
    ig = ex.explain(model, inputs, "ig", steps=8)
    assert_close(ig.attributions, integrated_gradients(
        model, inputs.x, ig.targets, baseline=base, steps=8).attributions)
    with pytest.raises(AttributionError, match="pick one"):
        ex.explain(model, inputs, "ig", baseline=0.0)
    wrong = ex.ExplainInputs(inputs.x, None, torch.zeros(3, 8, 8))
    with pytest.raises(AttributionError, match=r"baseline: shape \(3, 8, 8\)"):
        ex.explain(model, wrong, "ig")


def test_bad_requests():
    model = tiny_resnet()
    with pytest.raises(AttributionError, match="'s2_b1'.*feature_info stages: stem, s1_b0"):
        ex.explain(model, _inputs(), "gradcam", layer="s2_b1")
    with pytest.raises(AttributionError, match="method 'lime'"):
        ex.explain(model, _inputs(), "lime")
    with pytest.raises(AttributionError, match="classes 0..2"):
        ex.explain(model, _inputs(), "saliency", target=3)
    with pytest.raises(AttributionError, match="labels must lie in 0..2"):
        ex.explain(model, _inputs(y=[0, 5]), "saliency")
    with pytest.raises(AttributionError, match="no attention modules"):
        ex.explain(model, _inputs(), "rollout")
    with pytest.raises(AttributionError, match="returns tuple"):
        ex.explain(lambda x: (x,), _inputs(), "saliency")
    mlp = ex.load_explain_model(str(MLP_SPEC))
    with pytest.raises(AttributionError, match="no feature_info stages"):
        ex.explain(mlp, ex.ExplainInputs(torch.randn(2, 64)), "gradcam")


def test_token_models():
    gpt = na.create_model("gpt2-tiny", vocab_size=20, dim=16, seed=0).eval()
    ids = ex.ExplainInputs(torch.randint(0, 20, (1, 5)))
    with pytest.raises(AttributionError, match=r"returns \(1, 5, 20\)"):
        ex.explain(gpt, ids, "saliency")
    bert = na.create_model("bert-tiny", vocab_size=20, dim=16, num_heads=2, head="classification",
                           num_classes=2, seed=0).eval()
    with pytest.raises(AttributionError, match="needs float inputs"):
        ex.explain(bert, ids, "ig")
    with pytest.raises(AttributionError, match="rollout needs image inputs"):
        ex.explain(bert, ids, "rollout")


def tiny_vit() -> torch.nn.Module:
    return na.create_model("vit_ti_16", img_size=16, patch_size=4, embed_dim=16, num_heads=2,
                           depth=2, num_classes=3, seed=0).eval()


def test_rollout_on_a_vit():
    vit = tiny_vit()
    result = ex.explain(vit, _inputs(), "rollout")
    assert result.attributions.shape == (2, 4, 4) and result.extra == {"num_prefix_tokens": 1}


def test_patch_grid():
    assert ex._patch_grid(17, 16, 16) == (1, (4, 4))
    assert ex._patch_grid(16, 16, 16) == (0, (4, 4))
    assert ex._patch_grid(9, 16, 32) == (1, (2, 4))
    assert ex._patch_grid(10, 8, 8) == (1, (3, 3))
    with pytest.raises(AttributionError, match="do not form a patch grid"):
        ex._patch_grid(24, 16, 16)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "ig"])
def test_write_explanation_images(tmp_path, method):
    model = tiny_resnet()
    inputs = ex.ExplainInputs(torch.from_numpy(images(3)))
    result = ex.explain(model, inputs, method, steps=4)
    files = ex.write_explanation(result, inputs, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(files)
    assert len(files) == 4 and all((tmp_path / "out" / f).stat().st_size > 1000 for f in files)
    with np.load(tmp_path / "out" / "attributions.npz") as data:
        assert data["attributions"].shape == tuple(result.attributions.shape)
        assert ("delta" in data.files) == (method == "ig")
        assert ("layer" in data.files) == (method == "gradcam")


def test_write_explanation_other_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "MAX_PLOTS", 1)
    mlp = ex.load_explain_model(str(MLP_SPEC))
    tab = ex.ExplainInputs(torch.randn(2, 64))
    files = ex.write_explanation(ex.explain(mlp, tab, "saliency"), tab, tmp_path / "tab")
    assert files == ["attributions.npz", "0000_saliency.png"]
    seq = ex.ExplainInputs(torch.randn(1, 4, 6))
    fake = ex.Explanation("gradcam++", torch.randn(1, 4, 6), torch.tensor([0]), torch.tensor([0]))
    assert ex.write_explanation(fake, seq, tmp_path / "seq")[1] == "0000_gradcampp.png"
    gray = ex.ExplainInputs(torch.randn(1, 1, 8, 8))
    two = ex.ExplainInputs(torch.randn(1, 2, 8, 8))
    for i, inputs in enumerate((gray, two)):
        cam = ex.Explanation("gradcam", torch.rand(1, 1, 2, 2), torch.tensor([0]),
                             torch.tensor([0]))
        ex.write_explanation(cam, inputs, tmp_path / f"img{i}")


def test_write_explanation_leaves_nothing_on_failure(tmp_path, monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(ex, "_plot", boom)
    inputs = ex.ExplainInputs(torch.randn(1, 64))
    fake = ex.Explanation("saliency", torch.randn(1, 64), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="plot failed"):
        ex.write_explanation(fake, inputs, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
