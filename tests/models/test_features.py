"""FeatureExtractor / create_model(features_only=True): stage outputs of classifiers."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.features import FeatureExtractor


def test_resnet_features_match_feature_info_and_intermediates() -> None:
    kwargs = {"num_classes": 10, "img_size": 64, "seed": 0}
    backbone = na.create_model("resnet18", features_only=True, **kwargs)
    assert backbone.channels() == [64, 64, 128, 256, 512]
    assert backbone.reductions() == [2, 4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    feats = backbone.eval()(x)  # train mode would update BatchNorm's running statistics
    assert [f.shape[1:] for f in feats] == [
        (c, 64 // r, 64 // r) for c, r in zip(backbone.channels(), backbone.reductions())
    ]
    reference = na.create_model("resnet18", **kwargs).eval()
    backbone.eval()
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True)
        for got, want in zip(backbone(x), expected):
            torch.testing.assert_close(got, want)
    # the classifier is gone; only the body has parameters with gradients
    assert backbone.model.num_classes == 0
    sum(f.mean() for f in backbone.train()(x)).backward()
    unused = [n for n, p in backbone.named_parameters() if p.grad is None]
    assert unused == []


def test_selected_and_negative_indices() -> None:
    model = na.create_model("vit_ti_16", img_size=32, patch_size=8, depth=2, num_classes=0)
    backbone = FeatureExtractor(model, out_indices=(-1, 0))
    assert backbone.out_indices == (0, 1)
    out = backbone(torch.randn(1, 3, 32, 32))
    assert len(out) == 2
    assert [o.shape for o in out] == [(1, 17, 192)] * 2  # tokens: (B, 1 + N, channels)
    assert backbone.channels() == [192, 192]


@pytest.mark.parametrize("indices", [(5,), (-6,), (), (1, 1), (True,)])
def test_bad_indices(indices) -> None:
    with pytest.raises(SpecError, match="out_indices"):
        na.create_model("resnet18", device="meta", features_only=True, out_indices=indices)


def test_bad_uses() -> None:
    with pytest.raises(TypeError, match="features_only=True"):
        na.create_model("resnet18", device="meta", out_indices=(1,))
    with pytest.raises(TypeError, match="classifier contract"):
        FeatureExtractor(torch.nn.Linear(2, 2))
