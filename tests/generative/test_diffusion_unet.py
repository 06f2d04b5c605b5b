"""The diffusion UNet: a spec-built denoiser — shapes, gradients, conditioning, the call
convention, rebuild from its spec and refused sizes."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.errors import SpecError
from netarchitect.models.diffusion_unet import DiffusionUNet, diffusion_unet
from netarchitect.network import build

TINY = {"img_size": 8, "base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1,
        "attn_resolutions": (4,), "norm_layer": {"name": "groupnorm", "num_groups": 4}}


@pytest.fixture(scope="module")
def cond() -> DiffusionUNet:
    return diffusion_unet(**TINY, num_classes=3, seed=0).eval()


def _inputs(batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 1000, (batch,), generator=g)


def test_shape_and_gradient_to_every_parameter() -> None:
    model = diffusion_unet(**TINY, num_classes=3, seed=0)
    x, t = _inputs()
    out = model(x, t, torch.tensor([0, 1, 3]))
    assert out.shape == x.shape
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_out_channels_and_attention_placement() -> None:
    model = diffusion_unet(**TINY, in_channels=3, out_channels=6, seed=0)
    x = torch.randn(2, 3, 8, 8)
    assert model(x, torch.tensor([1, 2])).shape == (2, 6, 8, 8)
    attn = [n.id for n in model.spec.nodes if n.block == "spatial_self_attention"]
    # 4x4 is the second level: its down block, the middle, and its up blocks
    assert attn == ["down1_0_attn", "mid_attn", "up1_0_attn", "up1_1_attn"]
    skips = [n for n in model.spec.nodes if n.id.endswith("_cat")]
    assert all(n.merge == "concat" and len(n.inputs) == 2 for n in skips)
    assert len(skips) == 2 * (1 + 1)  # levels x (num_res_blocks + 1)


def test_class_conditioning_changes_the_output_and_null_class_is_the_default(cond) -> None:
    x, t = _inputs()
    a, b = cond(x, t, torch.tensor([0, 0, 0])), cond(x, t, torch.tensor([1, 1, 1]))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(cond(x, t), cond(x, t, torch.full((3,), 3)))
    torch.testing.assert_close(cond(x, t, y=torch.tensor([0, 0, 0])), a)
    assert cond.num_classes == 3 and cond.null_class == 3 and cond.context_names == ("t", "y")


def test_timestep_changes_the_output_and_scalar_t_broadcasts(cond) -> None:
    x, _ = _inputs()
    a = cond(x, torch.full((3,), 10))
    assert not torch.allclose(a, cond(x, torch.full((3,), 500)))
    torch.testing.assert_close(cond(x, 10), a)
    torch.testing.assert_close(cond(x, torch.tensor(10)), a)
    torch.testing.assert_close(cond(x, t=torch.full((3,), 10)), a)


def test_call_errors(cond) -> None:
    x, t = _inputs()
    with pytest.raises(TypeError, match="timesteps are required"):
        cond(x)
    with pytest.raises(TypeError, match="given twice"):
        cond(x, t, t=t)
    with pytest.raises(TypeError, match="positional arguments"):
        cond(x, t, t, t)
    with pytest.raises(ValueError, match="y must be in"):
        cond(x, t, torch.tensor([0, 1, 4]))
    uncond = diffusion_unet(**TINY, seed=0)
    assert uncond.num_classes is None and uncond.context_names == ("t",)
    with pytest.raises(TypeError, match="positional arguments"):
        uncond(x, t, torch.tensor([0, 1, 2]))


def test_rebuild_from_spec_and_yaml_roundtrip(cond) -> None:
    again = build(cond.spec, seed=0).eval()
    assert isinstance(again, DiffusionUNet)
    x, t = _inputs()
    torch.testing.assert_close(again(x, t), cond(x, t))
    text = na.spec.NetworkSpec.to_dict(cond.spec)
    assert build(text, device="meta").num_classes == 3


def test_meta_build_and_sample_inputs(cond) -> None:
    meta = na.create_model("diffusion_unet_digits", device="meta")
    x, t, y = meta.sample_inputs(2, device="meta")
    assert meta(x, t, y).shape == (2, 1, 8, 8)
    inputs = cond.sample_inputs(4)
    assert [tuple(v.shape) for v in inputs] == [(4, 1, 8, 8), (4,), (4,)]
    assert int(inputs[1].max()) < cond.num_train_timesteps and int(inputs[2].max()) <= 3
    assert len(diffusion_unet(**TINY, seed=0).sample_inputs()) == 2


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"img_size": 12, "channel_mult": (1, 2, 2, 2)}, "img_size"),
        ({"img_size": 6, "channel_mult": (1, 2, 2)}, "img_size"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": (1, 0)}, "channel_mult"),
        ({"num_classes": 0}, "num_classes"),
        ({"base_channels": 0}, "base_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"emb_dim": -1}, "emb_dim"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(kwargs, path) -> None:
    with pytest.raises(SpecError, match=path) as info:
        diffusion_unet(**{**TINY, **kwargs}, device="meta")
    assert info.value.path == path


def test_bad_roles_are_refused() -> None:
    spec = diffusion_unet(**TINY, device="meta").spec
    for roles, path in (({"num_classes": 0}, "roles.num_classes"),
                        ({"num_train_timesteps": 0}, "roles.num_train_timesteps")):
        bad = spec.replace(roles={**dict(spec.roles), **roles})
        with pytest.raises(SpecError, match=path):
            build(bad, device="meta")


def test_registered_variants() -> None:
    digits = na.create_model("diffusion_unet_digits", device="meta")
    assert digits.num_classes == 10 and digits.spec.inputs[0].shape == (1, 8, 8)
    assert na.count_params(digits).trainable == DIGITS_PARAMS
    digits16 = na.create_model("diffusion_unet_digits16", device="meta")
    assert digits16.spec.inputs[0].shape == (1, 16, 16)
    assert na.count_params(digits16).trainable == 1_828_129
    tiny = na.create_model("diffusion_unet_tiny", device="meta", num_classes=2)
    assert tiny.num_classes == 2 and tiny.spec.inputs[0].shape == (1, 8, 8)


# ---------------------------------------------------------------- training on digits

DIGITS_PARAMS = 1_081_569  # regression number of diffusion_unet_digits

SMOKE = {"model": "diffusion_unet_tiny", "model_kwargs": {"num_classes": 10}, "steps": 3,
         "batch_size": 8, "timesteps": 10, "warmup": 2}


def test_train_and_sample_smoke() -> None:
    from netarchitect.generative.digits_diffusion import train_digits_diffusion
    from netarchitect.generative.errors import GenerativeError

    trained = train_digits_diffusion(**SMOKE)
    assert len(trained.losses) == 3 and all(loss > 0 for loss in trained.losses)
    again = train_digits_diffusion(**SMOKE)
    assert again.losses == trained.losses  # seeded
    x, y = trained.sample(12, steps=2, batch=5)
    assert x.shape == (12, 1, 8, 8) and float(x.abs().max()) <= 1.0
    assert y.tolist() == [i % 10 for i in range(12)]
    x2, _ = trained.sample(3, sampler="ddpm", guidance_scale=2.0)
    assert x2.shape == (3, 1, 8, 8)
    with pytest.raises(GenerativeError, match="sampler"):
        trained.sample(2, sampler="euler")


def test_sample_passes_spacing_and_clip_to_the_samplers() -> None:
    """``spacing`` reaches DDIM (the same draw as ``ddim_sample`` itself), ``clip`` clamps
    x̂₀ in both samplers: their last step returns x̂₀, so samples stay inside the clip."""
    from netarchitect.generative.digits_diffusion import train_digits_diffusion
    from netarchitect.generative.samplers import ddim_sample

    trained = train_digits_diffusion(**SMOKE)
    x, y = trained.sample(4, steps=3, spacing="quadratic", eta=1.0, seed=5)
    g = torch.Generator().manual_seed(5)
    ref = ddim_sample(trained.ema, trained.schedule, (4, 1, 8, 8), steps=3, spacing="quadratic",
                      eta=1.0, y=y, generator=g).clamp(-1, 1)
    torch.testing.assert_close(x, ref)
    for sampler in ("ddim", "ddpm"):
        clipped, _ = trained.sample(4, sampler=sampler, steps=3, clip=(-0.1, 0.1))
        assert float(clipped.abs().max()) <= 0.1 + 1e-6


def test_image_grid_and_png(tmp_path) -> None:
    from netarchitect.generative.digits_diffusion import image_grid, save_image_grid
    from netarchitect.generative.errors import GenerativeError

    images = torch.full((12, 1, 4, 4), -1.0)
    images[1] = 1.0
    grid = image_grid(images, cols=5)
    assert grid.shape == (3 * 5, 5 * 5)
    assert float(grid[0, 0]) == 0.0 and float(grid[0, 5]) == 1.0 and float(grid[4, 4]) == 1.0
    path = save_image_grid(images, tmp_path / "grid.png", cols=5, scale=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(GenerativeError, match="images"):
        image_grid(torch.zeros(2, 3, 4, 4))


def _load_example():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "diffusion_digits.py"
    spec = importlib.util.spec_from_file_location("example_diffusion_digits", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_runs_and_writes_a_png(tmp_path, capsys) -> None:
    out = tmp_path / "samples.png"
    threads = torch.get_num_threads()
    try:
        metrics = _load_example().main(["--quick", "--steps", "3", "--samples", "20",
                                        "--sample-steps", "2", "--eta", "1", "--out", str(out),
                                        "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert metrics["samples"] == 20 and metrics["digits_fd"] > 0
    assert "digits-FD" in capsys.readouterr().out


@pytest.mark.slow
def test_short_training_learns_digits() -> None:
    """300 seeded steps of a small UNet: digits-FD of its DDIM samples far below noise's
    (about 65 against 237; real training digits score about 2.4)."""
    from netarchitect.generative.digits import class_coverage, digits_fd
    from netarchitect.generative.digits_diffusion import train_digits_diffusion

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread beats two on 2 shared cores
    try:
        trained = train_digits_diffusion(
            model_kwargs={"base_channels": 16, "num_res_blocks": 1}, steps=300, batch_size=64,
            warmup=50, ema_decay=0.99)
        x, _ = trained.sample(200, steps=20)
    finally:
        torch.set_num_threads(threads)
    noise = digits_fd(torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    fd = digits_fd(x)
    assert fd < noise / 3, (fd, noise)
    assert class_coverage(x).classes >= 8
