"""The registered GAN networks: shapes, spec round trip, spectral normalisation, bad
arguments, and a short seeded training on the ring of 8 Gaussians."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.init import initialize, materialize
from netarchitect.models.gan import GeneratorNetwork, SpectralConv2d, SpectralLinear
from netarchitect.spec import spec_hash


def test_mlp_pair_shapes_and_round_trip() -> None:
    g = na.create_model("gan_mlp_generator", seed=0, latent_dim=3, hidden=[8, 8])
    d = na.create_model("gan_mlp_discriminator", seed=0, hidden=[8])
    assert isinstance(g, GeneratorNetwork) and g.latent_dim == 3
    x = g.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 2) and d(x).shape == (5, 1)
    again = na.build(g.spec, seed=0)
    assert type(again) is GeneratorNetwork and spec_hash(again.spec) == spec_hash(g.spec)
    z = torch.randn(4, 3)
    torch.testing.assert_close(again(z), g(z))


def test_dcgan_pair_shapes() -> None:
    g = na.create_model("dcgan_generator", seed=0, latent_dim=4, channels=[8, 4]).eval()
    d = na.create_model("dcgan_discriminator", seed=0, channels=[4, 8])
    x = g.sample(3)
    assert x.shape == (3, 1, 16, 16) and x.abs().max() <= 1  # tanh
    assert d(x).shape == (3, 1)
    g8 = na.create_model("dcgan_generator", img_size=8, channels=[4], latent_dim=2)
    assert g8.sample(2).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("name", ["gan_mlp_discriminator_sn", "dcgan_discriminator_sn"])
def test_spectral_norm_bounds_every_layer(name: str) -> None:
    d = na.create_model(name, seed=0)
    layers = [m for m in d.modules() if isinstance(m, SpectralLinear | SpectralConv2d)]
    assert layers and not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    shape = (2, 2) if "mlp" in name else (2, 1, 16, 16)
    with torch.no_grad():  # raw weights far from norm 1
        for layer in layers:
            layer.parametrizations.weight.original.mul_(10)
    d.train()
    for _ in range(30):  # power iterations converge during training-mode forwards
        d(torch.randn(shape))
    for layer in layers:
        w = layer.weight.detach().flatten(1)
        raw = layer.parametrizations.weight.original.detach().flatten(1)
        assert torch.linalg.matrix_norm(raw, ord=2) > 5
        assert torch.linalg.matrix_norm(w, ord=2) == pytest.approx(1.0, abs=0.1)
    assert any("parametrizations.weight.original" in k for k in d.state_dict())


def test_spectral_layers_initialise_from_the_seed() -> None:
    a = initialize(SpectralLinear(4, 3), seed=5)
    b = materialize(SpectralLinear(4, 3, device="meta"), "cpu", seed=5)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    u = a.parametrizations.weight[0]._u
    assert u.norm().item() == pytest.approx(1.0, abs=1e-5)
    conv = SpectralConv2d(2, 3, kernel_size=3)
    assert conv(torch.randn(1, 2, 5, 5)).shape == (1, 3, 5, 5)


@pytest.mark.parametrize(("builder", "kwargs", "match"), [
    ("gan_mlp_generator", {"latent_dim": 0}, "latent_dim=0"),
    ("gan_mlp_generator", {"hidden": []}, "hidden"),
    ("gan_mlp_discriminator", {"in_features": 0}, "in_features"),
    ("dcgan_generator", {"latent_dim": 0}, "latent_dim=0"),
    ("dcgan_generator", {"img_size": 12, "channels": [8, 8, 8]}, "img_size=12"),
    ("dcgan_discriminator", {"img_size": 10}, "img_size=10"),
    ("dcgan_discriminator_sn", {"channels": 4}, "channels"),
])
def test_bad_arguments_name_the_argument(builder: str, kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        na.create_model(builder, **kwargs)
    with pytest.raises(SpecError, match="n_power_iterations"):
        SpectralLinear(2, 2, n_power_iterations=0)


@pytest.mark.slow
def test_gan_covers_the_ring_of_gaussians() -> None:
    """Non-saturating GAN (3 × 64 MLPs), seeded, 3,000 steps of 128 with a linearly decaying
    learning rate: >= 7 of 8 modes and >= 80% of samples within 3 std (0.06) of a mode
    (measured: 8 modes, 91%)."""
    from netarchitect.generative.datasets2d import gaussian_ring, ring_modes
    from netarchitect.generative.gan import GANTrainer
    from netarchitect.generative.mmd import mode_coverage

    data, _ = gaussian_ring(20_000, std=0.02, seed=0)
    g = na.create_model("gan_mlp_generator", seed=0, hidden=[64] * 3)
    d = na.create_model("gan_mlp_discriminator", seed=1, hidden=[64] * 3)
    trainer = GANTrainer(g, d, lr=2e-3, betas=(0.5, 0.9), seed=0)
    chunks, steps = 10, RING_STEPS
    for i in range(chunks):
        trainer.set_lr(2e-3 * (1 - i / chunks))
        trainer.fit(data, steps // chunks, batch_size=128)
    modes, quality = mode_coverage(trainer.sample(4000), ring_modes(), 0.02)
    assert modes >= 7 and quality >= 0.8, (modes, quality)
    assert len(trainer.history) == steps


RING_STEPS = 3000


@pytest.mark.slow
def test_gan_ring_example_quick(capsys, tmp_path) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "gan_ring.py"
    spec = importlib.util.spec_from_file_location("example_gan_ring", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    png = tmp_path / "ring.png"
    result = module.main(["--quick", "--out", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert len(result.history) == 20 and 0 <= result.quality <= 1 and result.mmd >= 0
    assert "modes" in capsys.readouterr().out
