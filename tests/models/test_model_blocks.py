"""The blocks the vision families register: token blocks, ViT block, DenseNet transition,
MobileNetV3 bottleneck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netarchitect.errors import SpecError
from netarchitect.init import initialize
from netarchitect.models._blocks_conv import DenseTransition, MobileNetV3Block
from netarchitect.models._blocks_tokens import ClassToken, TokenGrid, TokenPool, ViTBlock


def test_vit_block_equals_torch_pre_norm_encoder_layer() -> None:
    torch.manual_seed(0)
    ours = initialize(ViTBlock(16, 4, mlp_ratio=2.0), seed=0).eval()
    ref = nn.TransformerEncoderLayer(
        16,
        4,
        dim_feedforward=32,
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=1e-6,
        batch_first=True,
        norm_first=True,
    ).eval()
    attn = ours.attn.fn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        ref.self_attn.in_proj_bias.copy_(
            torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
        )
        ref.self_attn.out_proj.load_state_dict(attn.out_proj.state_dict())
        ref.linear1.load_state_dict(ours.mlp.fn.fc1.state_dict())
        ref.linear2.load_state_dict(ours.mlp.fn.fc2.state_dict())
        ref.norm1.load_state_dict(ours.attn.norm.state_dict())
        ref.norm2.load_state_dict(ours.mlp.norm.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    assert ours.attn.norm.eps == 1e-6


def test_class_token() -> None:
    block = ClassToken(8, num_tokens=2, init_std=0.0)
    assert block.token.eq(0).all()
    x = torch.randn(3, 4, 8)
    y = block(x)
    assert y.shape == (3, 6, 8) and torch.equal(y[:, 2:], x)
    with pytest.raises(SpecError, match="init_std"):
        ClassToken(8, init_std=-1.0)


def test_token_pool() -> None:
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(TokenPool()(x), x[:, 0])
    torch.testing.assert_close(TokenPool(pool_type="avg")(x), x.mean(1))
    torch.testing.assert_close(TokenPool(pool_type="avg", num_prefix_tokens=2)(x), x[:, 2:].mean(1))
    assert "avg" in repr(TokenPool(pool_type="avg"))
    with pytest.raises(SpecError, match="pool_type"):
        TokenPool(pool_type="max")
    with pytest.raises(SpecError, match="num_prefix_tokens"):
        TokenPool(num_prefix_tokens=-1)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        TokenPool()(torch.randn(2, 3))


def test_token_grid_inverts_patch_flattening() -> None:
    fmap = torch.randn(2, 4, 3, 5)
    tokens = fmap.flatten(2).transpose(1, 2)  # (B, H*W, C), as PatchEmbed
    torch.testing.assert_close(TokenGrid(height=3)(tokens), fmap)
    square = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(TokenGrid()(square.flatten(2).transpose(1, 2)), square)
    assert "height=3" in repr(TokenGrid(height=3))
    with pytest.raises(ValueError, match="do not form a grid"):
        TokenGrid()(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        TokenGrid()(torch.randn(2, 7))
    with pytest.raises(SpecError, match="height"):
        TokenGrid(height=0)


def test_dense_transition_is_norm_act_conv_pool() -> None:
    block = initialize(DenseTransition(6, 3), seed=0).eval()
    x = torch.randn(2, 6, 8, 8)
    bn = block.norm
    ref = F.avg_pool2d(
        F.conv2d(
            F.relu(
                F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
            ),
            block.conv.weight,
        ),
        2,
    )
    torch.testing.assert_close(block(x), ref)
    assert block.conv.bias is None
    with pytest.raises(SpecError, match="out_channels"):
        DenseTransition(4, 0)


def test_mobilenet_v3_block() -> None:
    block = MobileNetV3Block(16, 16, hidden_channels=72, kernel_size=5, se_ratio=0.25)
    assert block.has_skip and block.se.rd_channels == 24  # make_divisible(72 / 4, 8)
    assert type(block.se.gate).__name__ == "HardSigmoid"
    assert type(block.se.mlp.act).__name__ == "ReLU" and type(block.conv_dw.act).__name__ == (
        "HardSwish"
    )
    no_expand = MobileNetV3Block(16, 24, hidden_channels=16, stride=2, act_layer="relu")
    assert isinstance(no_expand.conv_pw, nn.Identity) and not no_expand.has_skip
    assert isinstance(no_expand.se, nn.Identity)
    assert no_expand(torch.randn(2, 16, 8, 8)).shape == (2, 24, 4, 4)
    with pytest.raises(SpecError, match="hidden_channels=8 must be >= in_channels=16"):
        MobileNetV3Block(16, 16, hidden_channels=8)
    with pytest.raises(SpecError, match="se_ratio"):
        MobileNetV3Block(16, 16, hidden_channels=16, se_ratio=-0.1)
