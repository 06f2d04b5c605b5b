"""Conformer block/encoder: macaron structure, conv module, padding, subsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.conformer import ConformerBlock, ConformerConvModule, conformer


def feats(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_block_is_macaron_with_half_step_feed_forwards() -> None:
    torch.manual_seed(0)
    block = ConformerBlock(16, 2, kernel_size=5, mlp_ratio=2.0).eval()
    x = feats(2, 6, 16)
    h = x + 0.5 * block.ff1.fn.fn(block.ff1.norm(x))
    h = h + block.attn.fn(block.attn.norm(h))
    h = h + block.conv.fn(block.conv.norm(h))
    h = h + 0.5 * block.ff2.fn.fn(block.ff2.norm(h))
    torch.testing.assert_close(block(x), block.norm(h))


def test_conv_module_matches_its_formula() -> None:
    torch.manual_seed(0)
    conv = ConformerConvModule(8, kernel_size=3).eval()
    x = feats(2, 5, 8)
    y = F.glu(conv.pointwise1(x.transpose(1, 2)), dim=1)
    y = F.conv1d(y, conv.depthwise.weight, conv.depthwise.bias, padding=1, groups=8)
    y = F.silu(conv.norm(y))
    torch.testing.assert_close(conv(x), conv.pointwise2(y).transpose(1, 2))
    assert conv.pointwise1.out_channels == 16 and conv.depthwise.groups == 8


@pytest.mark.parametrize("pos", ["relative", "rope", None])
def test_padding_does_not_change_real_frames(pos) -> None:
    torch.manual_seed(0)
    model = conformer(in_features=6, dim=16, depth=2, num_heads=2, kernel_size=5, subsample=1,
                      pos=pos).eval()
    x = feats(1, 7, 6)
    padded = torch.cat((x, feats(1, 3, 6, seed=1)), dim=1)
    mask = torch.tensor([[1] * 7 + [0] * 3])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, :7], model(x))


def test_subsampling_and_head() -> None:
    torch.manual_seed(0)
    model = conformer(in_features=6, dim=16, depth=1, num_heads=2, kernel_size=5, subsample=4,
                      num_classes=11).eval()
    out = model(feats(2, 17, 6), attention_mask=torch.ones(2, 17))
    assert out.shape == (2, 5, 11)
    assert model.forward_features(feats(2, 17, 6)).shape == (2, 5, 16)


def test_named_sizes_and_errors() -> None:
    model = na.create_model("conformer-s", device="meta")
    assert len(model.blocks) == 16 and model.blocks[0].conv.fn.depthwise.kernel_size == (31,)
    with pytest.raises(SpecError, match="power of two"):
        conformer(subsample=3)
    with pytest.raises(ValueError, match="expected features"):
        conformer(in_features=4, dim=8, depth=1, num_heads=2)(torch.randn(3, 4))
