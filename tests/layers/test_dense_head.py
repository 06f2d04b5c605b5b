"""FPN segmentation head, resizing, segmentation models on several backbones, and losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.layers.dense_head import FPNHead, ResizeLike
from netarchitect.losses import dice_loss, pixel_cross_entropy
from netarchitect.models.segmentation import mean_iou, segmentation_model

SMALL = {
    "resnet18": {"widths": (4, 8), "layers": (1, 1), "stem_width": 8},
    "convnext_tiny": {"depths": (1, 1), "dims": (8, 16)},
    "mobilenet_v2": {"width_mult": 0.25},
    "efficientnet_b0": {"width_mult": 0.25, "depth_mult": 0.25},
}


def test_fpn_head_shapes_and_errors() -> None:
    head = FPNHead((4, 6), 3, decoder_channels=8, upscale=4)
    out = head(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4))
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="2 stages"):
        head(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(B, 6, H, W\)"):
        head(torch.randn(2, 4, 8, 8), torch.randn(2, 5, 4, 4))
    with pytest.raises(SpecError, match="in_channels"):
        FPNHead(4, 3)
    with pytest.raises(SpecError, match="num_classes"):
        FPNHead((4,), 0)
    assert "num_classes=3" in repr(head)


def test_resize_like() -> None:
    x = torch.randn(1, 2, 4, 4)
    assert ResizeLike()(x, torch.empty(1, 1, 4, 4)) is x
    assert ResizeLike(mode="nearest")(x, torch.empty(1, 1, 8, 6)).shape == (1, 2, 8, 6)
    with pytest.raises(SpecError, match="mode"):
        ResizeLike(mode="cubic")


@pytest.mark.parametrize("backbone", list(SMALL))
def test_segmentation_model_backbones(backbone: str) -> None:
    try:
        model = segmentation_model(backbone, 3, decoder_channels=8, seed=0, **SMALL[backbone])
    except TypeError as e:  # a backbone without these knobs: use its defaults
        pytest.skip(f"{backbone}: {e}")
    x = torch.randn(2, 3, 30, 34)
    rebuilt = na.build(model.spec, seed=0)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    out = model.train()(x)
    assert out.shape == (2, 3, 30, 34)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_segmentation_model_errors_and_out_indices() -> None:
    m = segmentation_model("resnet18", 2, out_indices=[-1, -2], decoder_channels=8, **SMALL["resnet18"])
    assert len(m.spec.node("decoder").params["in_channels"]) == 2
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(SpecError, match="not a stage"):
        segmentation_model("resnet18", 2, out_indices=[9], **SMALL["resnet18"])
    with pytest.raises(SpecError, match="not .C, H, W. feature maps"):
        segmentation_model("vit_ti_16", 2, img_size=32, depth=1)


def test_losses_by_hand() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    p = logits.softmax(1)
    ce = -(p[0, 0, 0, 0].log() + p[0, 1, 0, 1].log()) / 2
    torch.testing.assert_close(pixel_cross_entropy(logits, target), ce)
    d0 = 1 - (2 * p[0, 0, 0, 0] + 1) / (p[0, 0].sum() + 1 + 1)
    d1 = 1 - (2 * p[0, 1, 0, 1] + 1) / (p[0, 1].sum() + 1 + 1)
    torch.testing.assert_close(dice_loss(logits, target), (d0 + d1) / 2)
    assert mean_iou(logits, target) == 1.0
    assert mean_iou(logits, torch.tensor([[[1, 1]]])) == pytest.approx((0 + 0.5) / 2)
    with pytest.raises(ValueError, match="expected class indices"):
        pixel_cross_entropy(logits, target[0])


def _squares(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with one brighter square each; the label is the square's mask."""
    x = torch.randn(n, 1, size, size, generator=gen) * 0.5
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        s = int(torch.randint(4, 8, (1,), generator=gen))
        r, c = torch.randint(0, size - s, (2,), generator=gen).tolist()
        y[i, r : r + s, c : c + s] = 1
    return x + 1.5 * y[:, None].float(), y


@pytest.mark.slow
def test_tiny_model_segments_squares() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = _squares(256, 16, gen)
    xt, yt = _squares(64, 16, gen)
    model = segmentation_model(
        "resnet18", 2, in_chans=1, img_size=16, decoder_channels=16, seed=0, **SMALL["resnet18"]
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(120):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        out = model(x[idx])
        loss = pixel_cross_entropy(out, y[idx]) + dice_loss(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        iou = mean_iou(model(xt), yt)
    assert iou > 0.8, iou
    assert F.softmax(model(xt[:1]), 1).shape == (1, 2, 16, 16)


def test_non_feature_backbones_and_examples() -> None:
    from netarchitect.models.segmentation import _pick

    with pytest.raises(SpecError, match="no feature_info"):
        segmentation_model("bert-mini", 2)
    with pytest.raises(SpecError, match="no stages"):
        _pick([], None, "empty")
    for cls in (FPNHead, ResizeLike):
        ex = cls.example()
        assert cls(**ex.kwargs)(*ex.inputs).dim() == 4


def test_segmentation_network_kind() -> None:
    from netarchitect.models.segmentation import SegmentationNetwork

    model = segmentation_model("resnet18", 4, seed=0, **SMALL["resnet18"])
    assert isinstance(model, SegmentationNetwork) and model.num_classes == 4
    assert model.roles["kind"] == "segmentation" and model.roles["decoder"] == "decoder"
    assert model.eval().predict(torch.randn(1, 3, 20, 20)).shape == (1, 20, 20)
    assert isinstance(na.build(model.spec), SegmentationNetwork)
