"""Normalisation layers: closed forms, statistics, train/eval behaviour, the factory."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from netarchitect.errors import RegistryError, SpecError
from netarchitect.layers import norm as N
from netarchitect.layers.basic import Identity


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


# --- closed forms -------------------------------------------------------------------------------


def test_rmsnorm_closed_form() -> None:
    x = _x(2, 3, 8)
    m = N.RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2.0, 8))
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * m.weight
    assert_close(m(x), expected)


def test_rmsnorm_output_has_unit_rms() -> None:
    y = N.RMSNorm(16)(_x(4, 16) * 7 + 3)
    assert_close(y.pow(2).mean(-1), torch.ones(4), atol=1e-4, rtol=0)


def test_layernorm_statistics_and_parity() -> None:
    x = _x(4, 5, 32) * 3 + 2
    m = N.LayerNorm(32)
    y = m(x)
    assert_close(y.mean(-1), torch.zeros(4, 5), atol=1e-5, rtol=0)
    assert_close(y.var(-1, unbiased=False), torch.ones(4, 5), atol=1e-3, rtol=0)
    ref = nn.LayerNorm(32)
    assert_close(y, ref(x))


def test_layernorm_without_affine_or_bias() -> None:
    assert not list(N.LayerNorm(4, affine=False).parameters())
    m = N.LayerNorm(4, bias=False)
    assert m.bias is None and m.weight is not None


def test_layernorm2d_equals_permuted_layernorm() -> None:
    x = _x(2, 6, 4, 5)
    m = N.LayerNorm2d(6, eps=1e-6)
    ref = nn.LayerNorm(6, eps=1e-6)
    with torch.no_grad():
        m.weight.copy_(torch.arange(1.0, 7.0))
        m.bias.copy_(torch.arange(6.0) / 10)
        ref.load_state_dict(m.state_dict())
    assert_close(m(x), ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def test_scalenorm_closed_form() -> None:
    x = _x(3, 10)
    m = N.ScaleNorm(10)
    assert_close(m.scale.detach(), torch.tensor(math.sqrt(10.0)))
    expected = math.sqrt(10.0) * x / x.norm(dim=-1, keepdim=True)
    assert_close(m(x), expected)
    # the eps floor keeps zero vectors finite
    assert torch.equal(m(torch.zeros(2, 10)), torch.zeros(2, 10))


def test_dyt_closed_form_and_init() -> None:
    x = _x(2, 7, 6)
    m = N.DyT(6)
    assert m.alpha.item() == 0.5
    assert_close(m(x), torch.tanh(0.5 * x))
    with torch.no_grad():
        m.alpha.fill_(2.0)
        m.gamma.copy_(torch.arange(6.0))
        m.beta.fill_(0.25)
    assert_close(m(x), torch.arange(6.0) * torch.tanh(2 * x) + 0.25)


def test_layerscale_closed_form() -> None:
    m = N.LayerScale(4, init_value=0.1)
    x = _x(3, 4)
    assert_close(m(x), 0.1 * x)
    assert_close(m.gamma.detach(), torch.full((4,), 0.1))


def test_groupnorm_default_groups_and_parity() -> None:
    assert N.GroupNorm(64).num_groups == 32
    assert N.GroupNorm(48).num_groups == 24  # largest divisor of 48 not above 32
    assert N.GroupNorm(7).num_groups == 7
    m = N.GroupNorm(12, num_groups=3)
    ref = nn.GroupNorm(3, 12)
    x = _x(2, 12, 3, 3)
    assert_close(m(x), ref(x))


@pytest.mark.parametrize("shape", [(2, 4, 9), (2, 4, 5, 6), (2, 4, 3, 3, 3)])
def test_instancenorm_matches_torch_any_rank(shape: tuple[int, ...]) -> None:
    torch_cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[len(shape)]
    m = N.InstanceNorm(4, affine=True, track_running_stats=True)
    ref = torch_cls(4, affine=True, track_running_stats=True)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        m.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    ref.load_state_dict(m.state_dict())
    x = _x(*shape) * 2 + 1
    assert_close(m(x), ref(x))
    assert_close(m.running_mean, ref.running_mean)
    m.eval(), ref.eval()
    assert_close(m(x), ref(x))


def test_instancenorm_rejects_bad_input() -> None:
    m = N.InstanceNorm(4)
    with pytest.raises(ValueError, match=r"\(B, 4, \*spatial\)"):
        m(_x(2, 4))
    with pytest.raises(ValueError, match="got shape"):
        m(_x(2, 3, 5))
    assert "affine=False" in repr(m)


# --- batch norm train / eval ---------------------------------------------------------------------


def test_batchnorm_train_updates_running_stats_eval_uses_them() -> None:
    m = N.BatchNorm2d(3, momentum=0.5)
    x = _x(8, 3, 4, 4) * 2 + 5
    y = m(x)  # training: batch statistics
    assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert_close(m.running_mean, 0.5 * x.mean((0, 2, 3)))
    unbiased = x.transpose(0, 1).reshape(3, -1).var(1, unbiased=True)
    assert_close(m.running_var, 0.5 * 1.0 + 0.5 * unbiased)
    assert m.num_batches_tracked.item() == 1
    m.eval()
    expected = (x - m.running_mean.view(1, 3, 1, 1)) / torch.sqrt(
        m.running_var.view(1, 3, 1, 1) + m.eps
    )
    assert_close(m(x), expected)
    assert m.num_batches_tracked.item() == 1  # eval does not update


def test_batchnorm1d_matches_torch() -> None:
    m, ref = N.BatchNorm1d(5), nn.BatchNorm1d(5)
    x = _x(6, 5, 3)
    assert_close(m(x), ref(x))
    assert_close(m.running_var, ref.running_var)


# --- factory -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "x"),
    [
        ("batchnorm1d", N.BatchNorm1d, (3, 8)),
        ("BatchNorm2d", N.BatchNorm2d, (3, 8, 2, 2)),
        ("batchnorm", N.BatchNorm2d, (3, 8, 2, 2)),
        ("layer_norm", N.LayerNorm, (3, 8)),
        ("layernorm2d", N.LayerNorm2d, (3, 8, 2, 2)),
        ("groupnorm", N.GroupNorm, (3, 8, 2, 2)),
        ("instancenorm2d", N.InstanceNorm, (3, 8, 2, 2)),
        ("rms-norm", N.RMSNorm, (3, 8)),
        ("scalenorm", N.ScaleNorm, (3, 8)),
        ("layerscale", N.LayerScale, (3, 8)),
        ("dyt", N.DyT, (3, 8)),
        ("none", Identity, (3, 8)),
        (None, Identity, (3, 8)),
    ],
)
def test_get_norm_layer_names(name: str | None, cls: type, x: tuple[int, ...]) -> None:
    ctor = N.get_norm_layer(name)
    assert ctor is cls
    m = ctor(8, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert m(_x(*x).double()).shape == x


def test_get_norm_layer_class_partial_and_kwargs() -> None:
    assert N.get_norm_layer(N.RMSNorm) is N.RMSNorm
    ctor = N.get_norm_layer(functools.partial(N.GroupNorm, num_groups=2))
    assert ctor(8).num_groups == 2
    # torch's own classes take device/dtype and pass straight through
    assert N.get_norm_layer(nn.LayerNorm) is nn.LayerNorm
    m = N.get_norm_layer("groupnorm")(8, num_groups=4, eps=1e-3)
    assert (m.num_groups, m.eps) == (4, 1e-3)


def test_get_norm_layer_wraps_callables_without_factory_kwargs() -> None:
    def my_norm(n: int) -> nn.Module:
        return nn.LayerNorm(n)

    m = N.get_norm_layer(my_norm)(6, device="meta", dtype=torch.float16)
    assert m.weight.device.type == "meta" and m.weight.dtype == torch.float16
    assert isinstance(N.get_norm_layer(my_norm)(6), nn.LayerNorm)


def test_get_norm_layer_unknown_name_suggests() -> None:
    with pytest.raises(ValueError, match=r"unknown norm layer 'rmsnrom' \(did you mean 'rmsnorm'"):
        N.get_norm_layer("rmsnrom")
    with pytest.raises(RegistryError):
        N.get_norm_layer("nope")


def test_get_norm_layer_rejects_instances_and_non_callables() -> None:
    with pytest.raises(TypeError, match="module instance LayerNorm"):
        N.get_norm_layer(nn.LayerNorm(4))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got 3"):
        N.get_norm_layer(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ctor", "match"),
    [
        (lambda: N.GroupNorm(64, num_groups=3), "num_groups=3 does not divide in_channels=64"),
        (lambda: N.GroupNorm(0), "in_channels=0 must be a positive integer"),
        (lambda: N.BatchNorm2d(-1), "in_channels=-1"),
        (lambda: N.BatchNorm1d(4, eps=-1.0), "eps=-1.0"),
        (lambda: N.LayerNorm(2.5), "dim=2.5"),  # type: ignore[arg-type]
        (lambda: N.RMSNorm(True), "dim=True"),  # type: ignore[arg-type]
        (lambda: N.ScaleNorm(0), "dim=0"),
        (lambda: N.DyT(0), "dim=0"),
        (lambda: N.InstanceNorm(0), "in_channels=0"),
    ],
)
def test_bad_arguments(ctor, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ctor()


@pytest.mark.parametrize(
    "cls", [N.InstanceNorm, N.ScaleNorm, N.LayerScale, N.DyT, N.RMSNorm, N.LayerNorm2d]
)
def test_reset_parameters_restores_init(cls: type) -> None:
    kwargs = {"affine": True, "track_running_stats": True} if cls is N.InstanceNorm else {}
    m = cls(4, **kwargs)
    fresh = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
        for b in m.buffers():
            b.add_(1.0)
    m.reset_parameters()
    for k, v in m.state_dict().items():
        assert_close(v, fresh[k])


def test_extra_repr() -> None:
    assert "alpha_init=0.5" in repr(N.DyT(3))
    assert "init_value=1e-05" in repr(N.LayerScale(3))
    assert "eps=1e-05" in repr(N.ScaleNorm(3))
