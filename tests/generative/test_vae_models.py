"""The registered VAEs: spec round trip, encode/decode/reconstruct/sample, the reparameterise
node, bad arguments, and a short seeded training on the digits."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.generative.vae import elbo, iwae_bound, vae_loss
from netarchitect.models.vae import Reparameterize, Unflatten, VAENetwork
from netarchitect.spec import spec_hash


@pytest.mark.parametrize(("name", "kwargs", "size"), [
    ("vae_mlp", {"hidden": [16], "latent_dim": 3}, 8),
    ("vae_conv", {"channels": [4, 8], "latent_dim": 3}, 16),
])
def test_vae_methods_and_spec_round_trip(name: str, kwargs: dict, size: int) -> None:
    model = na.create_model(name, seed=0, img_size=size, **kwargs).eval()
    assert isinstance(model, VAENetwork) and model.latent_dim == 3
    assert model.data_shape == (1, size, size) and model.likelihood == "bernoulli"
    x = torch.rand(4, 1, size, size)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (4, 3)
    out = model(x)  # eval: z is the posterior mean
    torch.testing.assert_close(out, model.decoder_output(mean))
    torch.testing.assert_close(model.reconstruct(x), out.sigmoid())
    rebuilt = na.build(model.spec, seed=0).eval()
    assert type(rebuilt) is VAENetwork and spec_hash(rebuilt.spec) == spec_hash(model.spec)
    torch.testing.assert_close(rebuilt(x), out)
    g = torch.Generator().manual_seed(0)
    a, b = model.sample(5, generator=g), model.sample(5, generator=g.manual_seed(0))
    assert a.shape == (5, 1, size, size) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    # the noise context fixes eps: z = mean + sigma * noise
    noise = torch.randn(4, 3)
    z = mean + (0.5 * logvar).exp() * noise
    torch.testing.assert_close(model(x, noise=noise), model.decoder_output(z))


def test_gaussian_likelihood_decodes_the_mean() -> None:
    model = na.create_model("vae_mlp", seed=0, hidden=[8], latent_dim=2, likelihood="gaussian")
    z = torch.randn(3, 2)
    torch.testing.assert_close(model.decode(z), model.decoder_output(z))
    x = torch.randn(3, 1, 8, 8)  # any range: no [0, 1] check for the Gaussian
    assert elbo(model, x, obs_std=0.5).elbo.shape == (3,)


def test_reparameterize_node_modes() -> None:
    node = Reparameterize()
    x = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(node.eval()(x), torch.tensor([[1.0, 2.0]]))
    torch.manual_seed(0)
    a = node.train()(x)
    assert not torch.equal(a, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="2L features"):
        node(torch.zeros(1, 3))


@pytest.mark.parametrize(("builder", "kwargs", "match"), [
    ("vae_mlp", {"latent_dim": 0}, "latent_dim=0"),
    ("vae_conv", {"latent_dim": 0}, "latent_dim=0"),
    ("vae_mlp", {"likelihood": "poisson"}, "likelihood"),
    ("vae_mlp", {"hidden": []}, "hidden"),
    ("vae_conv", {"img_size": 12, "channels": [4, 8, 8]}, "img_size=12"),
    ("vae_conv", {"channels": 8}, "channels"),
])
def test_bad_arguments_name_the_argument(builder: str, kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        na.create_model(builder, **kwargs)


def test_bad_unflatten_and_roles() -> None:
    with pytest.raises(SpecError, match="shape"):
        Unflatten(shape=[])
    with pytest.raises(SpecError, match=r"shape\[1\]"):
        Unflatten(shape=[2, 0])
    spec = na.create_model("vae_mlp", hidden=[4], latent_dim=2, device="meta").spec
    bad = spec.replace(roles={**dict(spec.roles), "latent": "nope", "likelihood": "laplace"})
    with pytest.raises(SpecError) as err:
        na.build(bad, device="meta")
    assert "roles.latent" in str(err.value) and "roles.likelihood" in str(err.value)


@pytest.mark.slow
def test_vae_training_improves_the_test_elbo() -> None:
    """8 epochs of the MLP VAE on the 8x8 digits raise the held-out ELBO by >= 10 nats
    (from ~ -44: every pixel at p = 0.5) and IWAE-64 is at least the ELBO."""
    from netarchitect.generative.digits import digits_images

    torch.manual_seed(0)
    x_train, _ = digits_images("train", 8)
    x_test, _ = digits_images("test", 8)
    x_train, x_test = (x_train + 1) / 2, (x_test + 1) / 2  # Bernoulli: [0, 1]
    model = na.create_model("vae_mlp", seed=0, hidden=[128], latent_dim=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = elbo(model, x_test, generator=g).elbo.mean().item()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(8):
        for batch in x_train[torch.randperm(len(x_train), generator=g)].split(64):
            loss = vae_loss(model, batch, generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        after = elbo(model, x_test, generator=g).elbo.mean().item()
        iwae = iwae_bound(model, x_test, 64, generator=g).mean().item()
    assert after > before + 10, (before, after)
    assert iwae >= after - 0.5, (iwae, after)


def _example(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_vae_digits_example_quick(capsys, tmp_path) -> None:
    png = tmp_path / "vae.png"
    result = _example("vae_digits").main(["--quick", "--out", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert result.elbo_after > result.elbo_before and result.fd > 0
    assert result.samples.shape == (200, 1, 8, 8) and result.samples.min() >= -1
    assert "digits-FD" in capsys.readouterr().out
