"""MoE decoder: layer placement, aux loss formula, caching, Mixtral's size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import netarchitect as na
from netarchitect.layers.moe import MoEFeedForward
from netarchitect.models.moe_decoder import MoELMOutput, moe_decoder

TINY = {
    "vocab_size": 64, "dim": 32, "depth": 4, "num_heads": 4, "hidden_dim": 32,
    "num_experts": 4, "top_k": 2, "moe_every": 2, "max_positions": 32,
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def tiny(**kwargs):
    torch.manual_seed(0)
    return moe_decoder(**{**TINY, **kwargs}).eval()


def test_moe_every_k_layers() -> None:
    model = tiny()
    kinds = [type(b.mlp.fn).__name__ for b in model.blocks]
    assert kinds == ["SwiGLU", "MoEFeedForward", "SwiGLU", "MoEFeedForward"]
    assert model.blocks[1].mlp.fn.top_k == 2 and len(model.blocks[1].mlp.fn.experts) == 4


def test_aux_loss_equals_its_formula() -> None:
    model = tiny(aux_loss_weight=0.1)
    inputs = {}
    for name, module in model.named_modules():
        if isinstance(module, MoEFeedForward):
            module.register_forward_hook(lambda m, a, o, name=name: inputs.__setitem__(name, a[0]))
    out = model(ids(2, 9))
    assert isinstance(out, MoELMOutput) and out.logits.shape == (2, 9, 64)
    expected = torch.zeros(())
    for name, x in inputs.items():
        moe = model.get_submodule(name)
        tokens = x.reshape(-1, 32)
        probs = (tokens @ moe.router.weight.t()).softmax(-1)  # (N, E)
        chosen = probs.topk(2, dim=-1).indices  # (N, k)
        f = F.one_hot(chosen, 4).sum(dim=(0, 1)).float() / chosen.numel()
        expected = expected + 0.1 * 4 * (f * probs.mean(0)).sum()
    assert len(inputs) == 2
    torch.testing.assert_close(out.aux_loss, expected)
    out.aux_loss.backward()
    assert model.blocks[1].mlp.fn.router.weight.grad.abs().sum() > 0


def test_cached_decoding_equals_full_forward() -> None:
    model, x = tiny(), ids(2, 8)
    cache = model.new_cache()
    steps = [model(x[:, :4], kv_cache=cache).logits]
    steps += [model(x[:, t : t + 1], kv_cache=cache).logits for t in range(4, 8)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(x).logits, atol=1e-5, rtol=1e-5)


def test_gpt_style_moe_with_dense_mlp_override() -> None:
    model = tiny(pos="learned", norm_layer="layernorm", expert_layer="mlp", mlp_layer="mlp",
                 act_layer="gelu_tanh", moe_every=1)
    assert all(isinstance(b.mlp.fn, MoEFeedForward) for b in model.blocks)
    assert model(ids(1, 5)).logits.shape == (1, 5, 64)


def test_mixtral_8x7b_parameter_count() -> None:
    assert n_params(na.create_model("mixtral-8x7b", device="meta")) == 46_702_792_704
