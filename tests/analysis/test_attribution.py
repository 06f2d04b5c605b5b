"""Attributions: parity with Captum, completeness, Grad-CAM++ by hand, and the sanity checks of
Adebayo et al. (2018) on a small CNN trained on digits."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from netarchitect.analysis.attribution import (
    AttributionError,
    grad_cam,
    integrated_gradients,
    resolve_layer,
    saliency,
    smoothgrad,
)

captum_attr = pytest.importorskip("captum.attr")


def small_cnn(seed: int = 0, classes: int = 10) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    return x, torch.tensor(d.target)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 6) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    return _train(small_cnn(), x, y)


def test_saliency_matches_captum(trained, digits):
    x = digits[0][:4]
    target = torch.tensor([0, 1, 2, 3])
    ours = saliency(trained, x, target)
    theirs = captum_attr.Saliency(trained).attribute(x, target=target)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    signed = saliency(trained, x, 3, abs=False)
    theirs = captum_attr.Saliency(trained).attribute(x, target=3, abs=False)
    torch.testing.assert_close(signed, theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("steps", [8, 50])
def test_integrated_gradients_match_captum_and_are_complete(trained, digits, steps):
    x = digits[0][:3]
    baseline = torch.full_like(x, 0.1)
    ours = integrated_gradients(trained, x, [1, 4, 7], baseline=baseline, steps=steps)
    ig = captum_attr.IntegratedGradients(trained)
    theirs, delta = ig.attribute(
        x, baselines=baseline, target=torch.tensor([1, 4, 7]), n_steps=steps,
        method="gausslegendre", return_convergence_delta=True,
    )
    torch.testing.assert_close(ours.attributions, theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.delta, delta.to(ours.delta.dtype), atol=1e-4, rtol=1e-3)
    chunked = integrated_gradients(
        trained, x, [1, 4, 7], baseline=baseline[0], steps=steps, internal_batch_size=5
    )
    torch.testing.assert_close(chunked.attributions, ours.attributions, atol=1e-6, rtol=1e-5)


def test_integrated_gradients_completeness_with_enough_steps(trained, digits):
    """Σ attributions → f(x) − f(baseline). Quadrature converges fast on a smooth network (the
    trained weights with GELU for ReLU); ReLU kinks make it slow (0.005 at 512 steps here)."""
    x = digits[0][:3].double()
    model = copy.deepcopy(trained).double()
    for i in (1, 3):
        model[i] = nn.GELU()
    gaps = [
        float(integrated_gradients(model, x, [1, 4, 7], steps=n).delta.abs().max())
        for n in (4, 64)
    ]
    assert gaps[1] < 1e-3 and gaps[1] < gaps[0], gaps


def test_grad_cam_matches_captum_layer_grad_cam(trained, digits):
    x = digits[0][:4]
    ours = grad_cam(trained, x, [0, 3, 5, 9], "2")
    theirs = captum_attr.LayerGradCam(trained, trained[2]).attribute(
        x, target=torch.tensor([0, 3, 5, 9]), relu_attributions=True
    )
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    assert ours.shape == (4, 1, 8, 8)


def test_grad_cam_plusplus_by_hand(trained, digits):
    x = digits[0][:2]
    acts = []
    handle = trained[2].register_forward_hook(lambda m, i, o: acts.append(o))
    score = trained(x)[:, 5].sum()
    handle.remove()
    (g,) = torch.autograd.grad(score, acts[0])
    a = acts[0].detach()
    alpha = g**2 / (2 * g**2 + (a * g**3).sum((2, 3), keepdim=True))
    alpha = torch.nan_to_num(alpha)
    w = (alpha * g.clamp_min(0)).sum((2, 3), keepdim=True)
    want = (w * a).sum(1, keepdim=True).clamp_min(0)
    torch.testing.assert_close(grad_cam(trained, x, 5, trained[2], plusplus=True), want)


def test_smoothgrad_is_the_mean_saliency_of_noisy_copies(trained, digits):
    x = digits[0][:2]
    gen = torch.Generator().manual_seed(3)
    noisy = [x + 0.2 * torch.randn(x.shape, generator=gen) for _ in range(4)]
    want = torch.stack([saliency(trained, n, 2) for n in noisy]).mean(0)
    torch.testing.assert_close(smoothgrad(trained, x, 2, samples=4, stdev=0.2, seed=3), want)
    torch.testing.assert_close(
        smoothgrad(trained, x, 2, samples=1, stdev=0.0), saliency(trained, x, 2)
    )


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    values = [
        spearmanr(u.flatten().numpy(), v.flatten().numpy()).statistic for u, v in zip(a, b)
    ]
    return float(sum(values) / len(values))


def _randomised(model: nn.Sequential, upto: int) -> nn.Sequential:
    """Cascading randomisation: the layers from the top down to ``upto`` re-initialised."""
    out = copy.deepcopy(model)
    torch.manual_seed(123)
    for layer in list(out)[upto:]:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return out


METHODS = {
    "saliency": lambda m, x, t: saliency(m, x, t),
    # signed: |IG| ≈ |x ⊙ ∇f| is dominated by the input itself (rank correlation 0.92 with a
    # fully randomised network here), the failure Adebayo et al. report for input ⊙ gradient
    "ig": lambda m, x, t: integrated_gradients(m, x, t, steps=16).attributions,
    "grad_cam": lambda m, x, t: grad_cam(m, x, t, m[2]),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_sanity_check_model_randomisation(trained, digits, method):
    """Adebayo et al.: attributions of a randomised network must differ from the trained
    network's — measured rank correlation well below 0.5 once the convolutions are reset."""
    x, y = digits[0][:16], digits[1][:16]
    attribute = METHODS[method]
    base = attribute(trained, x, y)
    cascade = [_rank_correlation(base, attribute(_randomised(trained, k), x, y)) for k in (6, 2, 0)]
    assert cascade[-1] < 0.5, cascade
    assert _rank_correlation(base, attribute(trained, x, y)) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def shuffled_label_model(digits):
    """The same network fitted (full batch) to 400 digits with permuted labels: it memorises
    noise instead of learning digits (Adebayo et al.'s data randomisation test)."""
    x, y = digits
    gen = torch.Generator().manual_seed(1)
    x, y = x[:400], y[torch.randperm(len(y), generator=gen)][:400]
    model = small_cnn(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_sanity_check_label_randomisation(trained, shuffled_label_model, digits, method):
    """A network trained on shuffled labels must not explain digits like the real one."""
    x, y = digits[0][:16], digits[1][:16]
    attribute = METHODS[method]
    noise = attribute(shuffled_label_model, x, y)
    assert float(noise.abs().max()) > 0  # a live network, not a constant one
    corr = _rank_correlation(attribute(trained, x, y), noise)
    assert corr < 0.5, corr


def test_bad_requests_are_named(trained, digits):
    x = digits[0][:2]
    with pytest.raises(AttributionError, match="target: 3 targets for a batch of 2"):
        saliency(trained, x, [1, 2, 3])
    with pytest.raises(AttributionError, match="class 12 out of range for 10"):
        saliency(trained, x, 12)
    with pytest.raises(AttributionError, match=r"baseline: shape \(3, 8, 8\)"):
        integrated_gradients(trained, x, 1, baseline=torch.zeros(3, 8, 8))
    with pytest.raises(AttributionError, match="layer 'conv9' is not in the model"):
        grad_cam(trained, x, 1, "conv9")
    with pytest.raises(AttributionError, match="has no spatial dimensions"):
        grad_cam(trained, x, 1, "6")
    with pytest.raises(AttributionError, match="steps=0"):
        integrated_gradients(trained, x, 1, steps=0)
    with pytest.raises(AttributionError, match="samples=0"):
        smoothgrad(trained, x, 1, samples=0)
    with pytest.raises(AttributionError, match="expected \\(B, C\\)"):
        saliency(nn.Flatten(0), x, 1)


def test_layers_are_found_by_feature_info_stage():
    from netarchitect import create_model

    model = create_model("resnet18", num_classes=4, img_size=32, seed=0).eval()
    stage = model.feature_info[-1]["node"]
    assert resolve_layer(model, stage) is model.get_submodule(model.feature_info[-1]["module"])
    cam = grad_cam(model, torch.randn(2, 3, 32, 32), 1, stage)
    assert cam.shape == (2, 1, 1, 1) or cam.shape[:2] == (2, 1)
    with pytest.raises(AttributionError, match="feature_info stages"):
        resolve_layer(model, "stage9")
