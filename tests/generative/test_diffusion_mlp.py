"""The 2-D MLP denoiser: spec round trip, call convention, guidance, FLOPs, and a seeded short
training on the swiss roll (MMD to data ≤ 1/5 of the initial noise's)."""

from __future__ import annotations

import pytest
import torch

import netarchitect as na
from netarchitect.analysis import count_flops
from netarchitect.errors import SpecError
from netarchitect.generative import (
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    diffusion_loss,
    mmd_rbf,
    swiss_roll,
    train_denoiser,
)
from netarchitect.models.diffusion_mlp import DiffusionMLP, diffusion_mlp
from netarchitect.spec import spec_hash


@pytest.fixture
def one_thread():
    """Tiny models train many times faster on one thread than on contended cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_spec_round_trip_and_call_convention() -> None:
    m = na.create_model("diffusion_mlp_2d", hidden_dim=16, num_blocks=2, seed=0)
    assert isinstance(m, DiffusionMLP) and m.num_classes is None
    assert m.spec.context == ("t",) and m.num_train_timesteps == 1000
    again = na.build(m.spec, seed=0)
    assert type(again) is DiffusionMLP and spec_hash(again.spec) == spec_hash(m.spec)
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    torch.testing.assert_close(again(x, t), m(x, t))
    assert m(x, t).shape == (5, 2)
    assert m(x, t=t).shape == (5, 2)
    torch.testing.assert_close(m(x, torch.tensor(7)), m(x, torch.full((5,), 7)))  # 0-d t
    with pytest.raises(TypeError, match="timesteps are required"):
        m(x)
    nodes = [n.id for n in m.spec.nodes]
    assert nodes[:3] == ["emb", "emb_act", "inp"] and nodes[-1] == "out"
    assert "block1_res" in nodes


def test_class_conditional_uses_the_null_class_without_y() -> None:
    m = diffusion_mlp(hidden_dim=16, num_blocks=1, num_classes=3, seed=0)
    assert m.num_classes == 3 and m.spec.context == ("t", "y")
    x, t = torch.randn(4, 2), torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(m(x, t), m(x, t, torch.full((4,), 3)))
    assert not torch.allclose(m(x, t), m(x, t, torch.zeros(4, dtype=torch.long)))
    loss = diffusion_loss(m, x, NoiseSchedule.linear(1000), y=torch.tensor([0, 1, 2, 0]),
                          p_uncond=0.5)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    out = ddim_sample(m, NoiseSchedule.linear(1000), (4, 2), steps=3, y=torch.tensor([0, 1, 2, 0]),
                      guidance_scale=2.0)
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_higher_dimensional_data_and_meta_device() -> None:
    m = diffusion_mlp(dim=5, hidden_dim=8, num_blocks=1, seed=0)
    assert m(torch.randn(3, 5), torch.tensor([0, 1, 2])).shape == (3, 5)
    with torch.device("meta"):
        big = na.create_model("diffusion_mlp_2d")
    assert next(big.parameters()).device.type == "meta"
    assert big.sample_inputs(4)[0].shape == (4, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"dim": 0}, "dim=0"), ({"hidden_dim": -1}, "hidden_dim"), ({"num_blocks": 0}, "num_blocks"),
     ({"num_classes": 0}, "num_classes"), ({"num_train_timesteps": 0}, "num_train_timesteps")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        diffusion_mlp(**kwargs)


def test_sampling_flops_are_steps_times_one_call() -> None:
    m = diffusion_mlp(hidden_dim=16, num_blocks=2, seed=0)
    s = NoiseSchedule.linear(40)
    x = torch.randn(8, 2)
    one = count_flops(m, (x, torch.zeros(8, dtype=torch.long))).forward.macs
    assert one > 0

    class Run(torch.nn.Module):
        def __init__(self, steps: int | None) -> None:
            super().__init__()
            self.m, self.steps = m, steps

        def forward(self, x_T: torch.Tensor) -> torch.Tensor:
            if self.steps is None:
                return ddpm_sample(self.m, s, x_T=x_T)
            return ddim_sample(self.m, s, x_T=x_T, steps=self.steps)

    assert count_flops(Run(10), (x,)).forward.macs == 10 * one
    assert count_flops(Run(None), (x,)).forward.macs == 40 * one


@pytest.mark.slow
def test_swiss_roll_training_reaches_a_fifth_of_the_noise_mmd(one_thread) -> None:
    data, held_out = swiss_roll(4000, seed=0), swiss_roll(1000, seed=1)
    schedule = NoiseSchedule.linear(1000)
    m = diffusion_mlp(hidden_dim=64, num_blocks=2, seed=0)
    losses = train_denoiser(m, data, schedule, steps=600, batch_size=256, lr=2e-3, seed=0)
    assert sum(losses[-50:]) < sum(losses[:50])
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(1000, 2, generator=g)
    samples = ddim_sample(m, schedule, x_T=x_T, steps=20)
    noise_mmd, sample_mmd = mmd_rbf(x_T, held_out), mmd_rbf(samples, held_out)
    assert sample_mmd <= noise_mmd / 5, (sample_mmd, noise_mmd)


def test_swissroll_example_writes_a_png_and_a_metrics_line(tmp_path, capsys) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "swissroll_diffusion.py"
    spec = importlib.util.spec_from_file_location("example_swissroll_diffusion", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    out = tmp_path / "roll.png"
    threads = torch.get_num_threads()
    result = module.main(["--steps", "5", "--sample-steps", "3", "--out", str(out)])
    assert torch.get_num_threads() == threads
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert result.noise_mmd > 0 and 0 <= result.precision <= 1
    assert "swiss roll: MMD² noise" in capsys.readouterr().out
