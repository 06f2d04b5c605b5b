"""The LoRA benchmark's pieces on a tiny model: a training step moves only adapters, and the
optimiser-state count is the AdamW moments' bytes."""

from __future__ import annotations

import torch

from benchmarks.bench_extend_lora import state_bytes, train_step
from netarchitect.extend import apply_lora, lora_parameters
from netarchitect.models.gpt import gpt


def test_step_and_state_bytes() -> None:
    model = gpt(vocab_size=32, dim=16, depth=1, num_heads=2, max_positions=16, seed=0)
    apply_lora(model, ["q_proj", "v_proj"], rank=2)
    ids = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    step, opt = train_step(model, lora_parameters(model), ids, lambda out: out)
    frozen = model.get_submodule("nodes.block_0.attn.fn.q_proj").weight.clone()
    step()
    n = sum(p.numel() for p in lora_parameters(model))
    assert n == 2 * (2 * 16 + 16 * 2)
    assert state_bytes(opt) == 2 * n * 4 + len(lora_parameters(model)) * 4  # moments + steps
    assert torch.equal(model.get_submodule("nodes.block_0.attn.fn.q_proj").weight, frozen)
