"""The UNet inside the samplers: sampling cost counted exactly (steps × one UNet call), and
sampling runs with the class-conditional UNet (guidance, null class)."""

from __future__ import annotations

import pytest
import torch

from netarchitect.analysis import count_flops
from netarchitect.generative.errors import GenerativeError
from netarchitect.generative.samplers import ddim_sample
from netarchitect.generative.sampling_cost import (
    SamplingLoop,
    count_sampling_flops,
    predicted_sampling_flops,
    sampling_steps,
)
from netarchitect.generative.schedules import NoiseSchedule
from netarchitect.models.diffusion_unet import diffusion_unet

TINY = {"img_size": 8, "base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1,
        "attn_resolutions": (4,), "norm_layer": {"name": "groupnorm", "num_groups": 4}}
SHAPE = (2, 1, 8, 8)


@pytest.fixture(scope="module")
def model():
    return diffusion_unet(**TINY, num_classes=3, seed=0).eval()


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.linear(12)


@pytest.mark.parametrize(
    ("sampler", "options", "calls", "batch"),
    [
        ("ddim", {"steps": 4}, 4, 2),
        ("ddim", {"steps": 3, "eta": 1.0}, 3, 2),
        ("ddpm", {}, 12, 2),
        ("ddim", {"steps": 2, "y": torch.tensor([0, 1]), "guidance_scale": 3.0}, 2, 4),
    ],
)
def test_sampling_flops_are_steps_times_one_unet_call(model, schedule, sampler, options,
                                                      calls, batch) -> None:
    measured = count_sampling_flops(model, schedule, SHAPE, sampler=sampler, **options)
    x, labels = torch.zeros(batch, 1, 8, 8), torch.zeros(batch, dtype=torch.long)
    call = (x, labels, labels) if "y" in options else (x, labels)  # without y: the null class
    one = count_flops(model, call).forward
    # the UNet's share of the loop is exactly `calls` UNet calls
    assert measured.by_module["model"].macs == calls * one.macs
    assert measured.by_module["model"].other_flops == calls * one.other_flops
    # the sampler's own update is elementwise: no MACs, a few FLOPs per element and step
    assert measured.macs == calls * one.macs
    extra = measured.forward.other_flops - calls * one.other_flops
    assert 0 < extra <= 16 * calls * x.numel()
    predicted = predicted_sampling_flops(
        model, schedule, SHAPE, sampler=sampler, steps=options.get("steps", 50),
        y=options.get("y"), guidance_scale=options.get("guidance_scale", 1.0))
    assert predicted == measured.by_module["model"]


def test_predicted_flops_work_on_meta(schedule) -> None:
    meta = diffusion_unet(**TINY, device="meta")
    real = diffusion_unet(**TINY, seed=0)
    assert predicted_sampling_flops(meta, schedule, SHAPE, steps=5) == \
        predicted_sampling_flops(real, schedule, SHAPE, steps=5)
    assert sampling_steps(schedule, "ddpm") == 12 and sampling_steps(schedule, "ddim", 7) == 7


def test_unknown_sampler_is_refused(model, schedule) -> None:
    with pytest.raises(GenerativeError, match="sampler"):
        SamplingLoop(model, schedule, "euler")


def test_sampling_loop_is_the_sampler(model, schedule) -> None:
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    loop = SamplingLoop(model, schedule, "ddim", steps=3)
    torch.testing.assert_close(loop(x_T), ddim_sample(model, schedule, x_T=x_T, steps=3))


def test_guided_sampling_with_the_unet_uses_the_null_class(model, schedule) -> None:
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    plain = ddim_sample(model, schedule, x_T=x_T, steps=3, y=y)
    guided = ddim_sample(model, schedule, x_T=x_T, steps=3, y=y, guidance_scale=3.0)
    uncond = ddim_sample(model, schedule, x_T=x_T, steps=3, y=torch.full((2,), 3))
    zero_w = ddim_sample(model, schedule, x_T=x_T, steps=3, y=y, guidance_scale=0.0)
    assert guided.shape == SHAPE and not torch.allclose(plain, guided)
    torch.testing.assert_close(zero_w, uncond, atol=1e-5, rtol=1e-5)  # w = 0: unconditional


def test_benchmark_peer_loop_matches_ddim_sample(model) -> None:
    """The benchmark's diffusers DDIM loop (trailing, no clipping) around the same UNet gives
    our samples: the timing compares equal work."""
    pytest.importorskip("diffusers")
    from benchmarks.bench_generative import diffusers_loop

    schedule = NoiseSchedule.linear(1000)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    ours = ddim_sample(model, schedule, x_T=x_T, steps=10, y=y)
    peer = diffusers_loop(model, 1000, 10)(x_T, y)
    scale = float(ours.abs().max())
    torch.testing.assert_close(peer, ours, rtol=1e-4, atol=1e-5 * scale)


def test_benchmark_vae_baseline_trains(monkeypatch) -> None:
    from benchmarks import bench_generative

    vae = bench_generative.train_vae(steps=2)
    assert vae.sample(3).shape == (3, 1, 8, 8)
    monkeypatch.setattr(bench_generative, "train_vae", lambda steps: vae)
    assert bench_generative.vae_fd(2, 30) > 0

    def missing(steps: int) -> None:
        raise KeyError("vae_mlp")

    monkeypatch.setattr(bench_generative, "train_vae", missing)
    assert bench_generative.vae_fd(2, 30) is None
