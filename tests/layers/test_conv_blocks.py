"""Conv blocks: exact parameter counts of torchvision's reference blocks, parity with
transcriptions of torchvision's forward passes (shared weights), residual logic, bad args."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import SpecError
from netarchitect.layers import conv_blocks as CB
from netarchitect.layers.activation import SiLU
from netarchitect.layers.channel_attention import ECA, SqueezeExcite
from netarchitect.layers.norm import GroupNorm


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3))


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _randomise_norms(m: nn.Module) -> None:
    """Non-trivial norm affine params and running stats so parity tests mean something."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)


# --- ConvNormAct ---------------------------------------------------------------------------------


def test_conv_norm_act_matches_manual_composition() -> None:
    m = CB.ConvNormAct(3, 6, kernel_size=3, stride=2, act_layer="silu").eval()
    _randomise_norms(m)
    x = _x(2, 3, 8, 8)
    assert m.conv.bias is None and m.conv.padding == (1, 1)
    assert_close(m(x), nn.functional.silu(m.norm(m.conv(x))))
    assert m(x).shape == (2, 6, 4, 4)
    assert (m.in_channels, m.out_channels) == (3, 6)


def test_conv_norm_act_bias_follows_norm() -> None:
    assert CB.ConvNormAct(3, 4, norm_layer=None).conv.bias is not None
    assert CB.ConvNormAct(3, 4, norm_layer=None, bias=False).conv.bias is None
    assert CB.ConvNormAct(3, 4, bias=True).conv.bias is not None
    m = CB.ConvNormAct(4, 8, kernel_size=1, norm_layer="groupnorm", act_layer=None)
    assert isinstance(m.norm, GroupNorm) and _count(m) == 4 * 8 + 2 * 8


# --- MobileNet / EfficientNet blocks -------------------------------------------------------------


def test_inverted_residual_torchvision_mobilenet_v2_counts() -> None:
    # torchvision mobilenet_v2 features[1] (t=1, 32->16) and features[2] (t=6, 16->24, s2)
    assert _count(CB.InvertedResidual(32, 16, expand_ratio=1)) == 896
    assert _count(CB.InvertedResidual(16, 24, stride=2, expand_ratio=6)) == 5136
    assert isinstance(CB.InvertedResidual(32, 16, expand_ratio=1).conv_pw, nn.Identity)


def test_inverted_residual_efficientnet_b0_count_with_se() -> None:
    # torchvision efficientnet_b0 features[2][0]: MBConv(16->24, k3, s2, t6, SE squeeze 16//4=4)
    m = CB.InvertedResidual(16, 24, stride=2, expand_ratio=6, se_ratio=0.25, act_layer="silu")
    assert isinstance(m.se, SqueezeExcite) and m.se.rd_channels == 4
    assert isinstance(m.se.mlp.act, SiLU)
    assert _count(m) == 6004


def test_inverted_residual_skip_and_manual_forward() -> None:
    m = CB.InvertedResidual(8, 8, expand_ratio=3, se_ratio=0.25).eval()
    _randomise_norms(m)
    x = _x(2, 8, 5, 5)
    branch = m.conv_pwl(m.se(m.conv_dw(m.conv_pw(x))))
    assert m.has_skip
    assert_close(m(x), x + branch)
    strided = CB.InvertedResidual(8, 8, stride=2)
    assert not strided.has_skip and strided(x).shape == (2, 8, 3, 3)
    assert not CB.InvertedResidual(8, 12).has_skip


def test_inverted_residual_se_layer_by_name() -> None:
    m = CB.InvertedResidual(8, 8, expand_ratio=2, se_layer="eca")
    assert isinstance(m.se, ECA)
    assert m(_x(2, 8, 4, 4)).shape == (2, 8, 4, 4)


def test_fused_mbconv_torchvision_efficientnet_v2_counts() -> None:
    # torchvision efficientnet_v2_s features[1][0] (t=1, 24->24) and features[2][0] (t=4, 24->48)
    one = CB.FusedMBConv(24, 24, expand_ratio=1)
    assert _count(one) == 5232 and isinstance(one.conv_pwl, nn.Identity) and one.has_skip
    four = CB.FusedMBConv(24, 48, stride=2, expand_ratio=4)
    assert _count(four) == 25632 and not four.has_skip
    assert four(_x(1, 24, 8, 8)).shape == (1, 48, 4, 4)


def test_fused_mbconv_with_se() -> None:
    m = CB.FusedMBConv(8, 8, expand_ratio=2, se_ratio=0.25)
    assert m.se.rd_channels == 2 and m.se.mlp.fc1.in_channels == 16
    assert m(_x(2, 8, 4, 4)).shape == (2, 8, 4, 4)


def test_depthwise_separable_conv() -> None:
    m = CB.DepthwiseSeparableConv(8, 16, stride=2)
    # dw 8*9 + bn 16, pw 8*16 + bn 32
    assert _count(m) == 72 + 16 + 128 + 32
    assert not m.has_skip and m(_x(2, 8, 6, 6)).shape == (2, 16, 3, 3)
    assert isinstance(m.conv_pw.act, nn.Identity)
    v1 = CB.DepthwiseSeparableConv(8, 8, pw_act=True, residual=False)
    assert not v1.has_skip and not isinstance(v1.conv_pw.act, nn.Identity)
    se = CB.DepthwiseSeparableConv(8, 8, se_ratio=0.25).eval()
    x = _x(2, 8, 4, 4)
    assert se.has_skip
    assert_close(se(x), x + se.conv_pw(se.se(se.conv_dw(x))))


def test_mbconv_drop_path_drops_branch_in_training() -> None:
    torch.manual_seed(0)
    m = CB.InvertedResidual(4, 4, expand_ratio=2, drop_path=0.5).train()
    x = _x(64, 4, 3, 3)
    y = m(x)
    dropped = torch.isclose(y, x).flatten(1).all(1)
    assert 0 < int(dropped.sum()) < 64


# --- ResNet blocks -------------------------------------------------------------------------------


class _TVBasicBlock(nn.Module):
    """Transcription of torchvision.models.resnet.BasicBlock (v0.20)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class _TVBottleneck(nn.Module):
    """Transcription of torchvision.models.resnet.Bottleneck (v0.20, stride on the 3x3)."""

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


@pytest.mark.parametrize(
    ("args", "kwargs", "params"),
    [
        ((64, 64), {}, 73_984),  # resnet18 layer1[0]
        ((64, 128), {"stride": 2}, 230_144),  # resnet18 layer2[0]
    ],
)
def test_basic_block_counts(args: tuple, kwargs: dict, params: int) -> None:
    assert _count(CB.BasicBlock(*args, **kwargs, device="meta")) == params


@pytest.mark.parametrize(
    ("args", "kwargs", "params"),
    [
        ((256, 256), {}, 70_400),  # resnet50 layer1[1]: inplanes 256, planes 64
        ((64, 256), {}, 75_008),  # resnet50 layer1[0] with projection
        ((64, 256), {"groups": 32, "base_width": 4}, 63_488),  # resnext50_32x4d layer1[0]
        ((64, 256), {"base_width": 128}, 206_336),  # wide_resnet50_2 layer1[0]
    ],
)
def test_bottleneck_counts(args: tuple, kwargs: dict, params: int) -> None:
    assert _count(CB.Bottleneck(*args, **kwargs, device="meta")) == params


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_basic_block_matches_torchvision_forward(stride: int, train: bool) -> None:
    ours = CB.BasicBlock(4, 6, stride=stride)
    _randomise_norms(ours)
    ref = _TVBasicBlock(4, 6, stride)
    ref.load_state_dict(ours.state_dict())
    ours.train(train), ref.train(train)
    x = _x(2, 4, 6, 6)
    assert_close(ours(x), ref(x))


@pytest.mark.parametrize(("stride", "groups", "base_width"), [(1, 1, 64), (2, 2, 32)])
def test_bottleneck_matches_torchvision_forward(stride: int, groups: int, base_width: int) -> None:
    ours = CB.Bottleneck(8, 16, stride=stride, groups=groups, base_width=base_width).eval()
    _randomise_norms(ours)
    ref = _TVBottleneck(8, 4, stride, groups, base_width).eval()
    ref.load_state_dict(ours.state_dict())
    x = _x(2, 8, 6, 6)
    assert_close(ours(x), ref(x))
    ours(x).sum().backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_zero_init_last_starts_as_identity_of_shortcut() -> None:
    x = _x(2, 8, 4, 4).abs()
    m = CB.BasicBlock(8, 8, zero_init_last=True).eval()
    assert_close(m(x), torch.relu(x))
    b = CB.Bottleneck(8, 8, zero_init_last=True, expansion=2)
    assert bool((b.bn3.weight == 0).all())
    with torch.no_grad():
        b.bn3.weight.fill_(1.0)
    b.reset_parameters()
    assert bool((b.bn3.weight == 0).all())
    plain = CB.BasicBlock(8, 8)
    assert bool((plain.bn2.weight == 1).all())


def test_resnet_blocks_bad_arguments() -> None:
    with pytest.raises(SpecError, match="groups=2"):
        CB.BasicBlock(8, 8, groups=2)
    with pytest.raises(SpecError, match="expansion=4 does not divide out_channels=6"):
        CB.Bottleneck(8, 6)
    with pytest.raises(SpecError, match="inner width of 0"):
        CB.Bottleneck(8, 8, base_width=1)
    with pytest.raises(SpecError, match="stride=0"):
        CB.BasicBlock(8, 8, stride=0)


# --- ConvNeXt ------------------------------------------------------------------------------------


class _TVCNBlock(nn.Module):
    """Transcription of torchvision.models.convnext.CNBlock (v0.20)."""

    def __init__(self, dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


def test_convnext_block_count_and_torchvision_parity() -> None:
    assert _count(CB.ConvNeXtBlock(96, device="meta")) == 79_296  # convnext_tiny stage-1 block
    ours = CB.ConvNeXtBlock(8, layerscale_init=0.5)
    ref = _TVCNBlock(8, 0.5)
    sd = ours.state_dict()
    ref.load_state_dict(
        {
            "dw.weight": sd["conv_dw.weight"],
            "dw.bias": sd["conv_dw.bias"],
            "norm.weight": sd["norm.weight"],
            "norm.bias": sd["norm.bias"],
            "fc1.weight": sd["fc1.weight"],
            "fc1.bias": sd["fc1.bias"],
            "fc2.weight": sd["fc2.weight"],
            "fc2.bias": sd["fc2.bias"],
            "layer_scale": sd["ls.gamma"].view(8, 1, 1),
        }
    )
    x = _x(2, 8, 9, 9)
    assert_close(ours(x), ref(x))
    assert ours.norm.eps == 1e-6


def test_convnext_block_options() -> None:
    m = CB.ConvNeXtBlock(4, layerscale_init=None, mlp_ratio=2, kernel_size=3, norm_layer="rmsnorm")
    assert isinstance(m.ls, nn.Identity) and m.fc1.out_features == 8
    assert m(_x(2, 4, 5, 5)).shape == (2, 4, 5, 5)
    m.reset_parameters()
    with pytest.raises(SpecError, match="mlp_ratio=0"):
        CB.ConvNeXtBlock(4, mlp_ratio=0)


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        (lambda: CB.InvertedResidual(8, 8, expand_ratio=0.5), "expand_ratio=0.5"),
        (lambda: CB.InvertedResidual(8, 8, se_ratio=-1), "se_ratio=-1"),
        (lambda: CB.InvertedResidual(8, 8, se_ratio=0.25, se_layer="eca"), "either se_ratio"),
        (lambda: CB.FusedMBConv(0, 8), "in_channels=0"),
        (lambda: CB.DepthwiseSeparableConv(8, 8, drop_path=1.0), "p=1.0"),
        (lambda: CB.ConvNormAct(6, 4, groups=4), "groups=4 does not divide in_channels=6"),
    ],
)
def test_bad_arguments(ctor, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ctor()


def test_unknown_se_layer_name() -> None:
    with pytest.raises(ValueError, match="unknown channel attention layer 'sqe'"):
        CB.InvertedResidual(8, 8, se_layer="sqe")
