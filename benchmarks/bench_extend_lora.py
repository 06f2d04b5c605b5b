"""LoRA fine-tuning steps: LoRA vs full fine-tuning, and ours vs PEFT's LoRA.

``python -m benchmarks.bench_extend_lora``; results go to
``benchmarks/results/extend_lora.json``. A GPT-2-small-shaped model (dim 768, 12 layers,
12 heads, vocab 50257) at a short batch (``--batch`` × ``--seq``, default 2 × 64) so the
case stays quick; float32, 2 threads. One step = forward, causal-LM loss, backward, AdamW
step. Cases (ours / peer):

* ``lora_vs_full_finetune``: our GPT-2 with ``apply_lora`` rank 8 on q/k/v/out_proj vs the
  same model fully fine-tuned — step time target ≤ 0.75; ``extra`` also records the AdamW
  state bytes of each (target ratio ≤ 0.01);
* ``lora_vs_peft``: transformers' ``GPT2LMHeadModel`` with our ``apply_lora`` rank 8 on
  ``c_attn`` + ``attn.c_proj`` (q/k/v/o) vs ``peft.get_peft_model`` with the same
  ``LoraConfig`` — step time target ≤ 1.0.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect.extend import apply_lora, lora_parameters
from netarchitect.models.gpt import gpt

NAME = "extend_lora"
RANK, VOCAB = 8, 50257


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held by the optimiser's state (AdamW: ``exp_avg``, ``exp_avg_sq``, ``step``)."""
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def train_step(model: nn.Module, params: list[nn.Parameter], ids: torch.Tensor,
               logits: Callable[[Any], torch.Tensor]) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """One causal-LM step: forward, next-token loss, backward, AdamW."""
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = logits(model(ids))
        loss = F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()

    return step, opt


def _lora_vs_full(ids: torch.Tensor, warmup: int, repeats: int, threads: int,
                  results_dir: str) -> dict[str, Any]:
    full = gpt(vocab_size=VOCAB, seed=0)
    lora = copy.deepcopy(full)
    apply_lora(lora, ["q_proj", "k_proj", "v_proj", "out_proj"], rank=RANK)
    lora_step, lora_opt = train_step(lora, lora_parameters(lora), ids, lambda o: o)
    full_step, full_opt = train_step(full, list(full.parameters()), ids, lambda o: o)
    lora_step()
    full_step()
    ours_b, full_b = state_bytes(lora_opt), state_bytes(full_opt)
    extra = {
        "model": "gpt2 (124M)", "batch": list(ids.shape), "rank": RANK,
        "targets": "q_proj, k_proj, v_proj, out_proj",
        "optimizer_state_bytes_lora": ours_b, "optimizer_state_bytes_full": full_b,
        "optimizer_state_ratio": ours_b / full_b, "optimizer_state_target": 0.01,
    }
    return compare(NAME, lora_step, full_step, case="lora_vs_full_finetune", target=0.75,
                   label_ours="apply_lora r=8 (q/k/v/o)", label_peer="full fine-tuning",
                   extra=extra, warmup=warmup, repeats=repeats, threads=threads,
                   results_dir=results_dir)


def _lora_vs_peft(ids: torch.Tensor, warmup: int, repeats: int, threads: int,
                  results_dir: str) -> dict[str, Any]:
    import peft
    import transformers

    torch.manual_seed(0)
    base = transformers.GPT2LMHeadModel(transformers.GPT2Config()).train()
    ours = copy.deepcopy(base)
    targets = ["c_attn", "attn.c_proj"]
    apply_lora(ours, targets, rank=RANK, alpha=RANK)
    config = peft.LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets,
                             fan_in_fan_out=True, lora_dropout=0.0)
    theirs = peft.get_peft_model(base, config)
    peer_params = [p for p in theirs.parameters() if p.requires_grad]
    assert sum(p.numel() for p in peer_params) == sum(p.numel() for p in lora_parameters(ours))
    ours_step, _ = train_step(ours, lora_parameters(ours), ids, lambda o: o.logits)
    peer_step, _ = train_step(theirs, peer_params, ids, lambda o: o.logits)
    extra = {"model": "transformers GPT2LMHeadModel (124M)", "batch": list(ids.shape),
             "rank": RANK, "targets": "c_attn, attn.c_proj"}
    return compare(NAME, ours_step, peer_step, case="lora_vs_peft", target=1.0,
                   label_ours="apply_lora r=8", label_peer="peft LoRA r=8", extra=extra,
                   warmup=warmup, repeats=repeats, threads=threads, results_dir=results_dir)


def run(*, warmup: int, repeats: int, threads: int, batch: int = 2, seq: int = 64,
        results_dir: str = RESULTS_DIR) -> dict[str, Any]:
    ids = torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0))
    return {
        "lora_vs_full_finetune": _lora_vs_full(ids, warmup, repeats, threads, results_dir),
        "lora_vs_peft": _lora_vs_peft(ids, warmup, repeats, threads, results_dir),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=2, repeats=7)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=64)
    args = parse_args(parser, argv)
    return run(warmup=args.warmup, repeats=args.repeats, threads=args.threads,
               batch=args.batch, seq=args.seq, results_dir=args.results_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
