"""GPT-2 training and generation speed: our DecoderLM vs Hugging Face transformers' GPT-2.

Same process, alternating, float32, 2 threads (``python -m benchmarks.bench_transformers``);
results go to ``benchmarks/results/transformers.json``. Both models are GPT-2 small
(vocab 50257, context 1024, 12 layers, 768 wide, 12 heads, tied embeddings, dropout 0),
holding the same weights (the peer is ``to_hf(ours)``, SDPA attention). Cases and target
ratios (ours / peer):

* ``train_step_gpt2_small``: forward + cross-entropy + backward + AdamW step, B=4, T=256
  — ≤ 1.0;
* ``greedy_generate_64``: greedy decoding of 64 new tokens with a KV cache from a
  32-token prompt (B=1), ``generate(...)`` vs ``GPT2LMHeadModel.generate`` — ≤ 1.0.
  Both produce the same tokens (checked).
* ``greedy_generate_64_roofline``: the same decoding vs its matrix-vector roofline — 64
  passes (one per new token) that each multiply a vector by every weight matrix of the
  model once (the tied embedding once, 497 MB for GPT-2 small) with the fastest
  matrix-vector kernel here (oneDNN's; ``torch.mv`` where torch lacks it). Decoding at
  B=1 must do at least this per token, so the ratio is our ms/token over the fastest
  that streaming the weights allows (the prompt's forward included) — ≤ 1.5.
* ``greedy_generate_64_read_bound``: the same against raw memory-read speed — 64 passes
  of a sum over every weight matrix (no target: how far even matrix-vector kernels
  stay from the machine's read bandwidth).

Each case's ``extra`` records the CPU model, ``torch.backends.cpu.get_cpu_capability()``
and the 1-minute load average at the start: on a shared machine, compare only ratios
measured in one run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.harness import RESULTS_DIR, compare, cpu_info, parse_args, time_parser
from netarchitect.generation import generate
from netarchitect.interop import to_hf
from netarchitect.models.gpt import gpt

NAME = "transformers"
NEW_TOKENS = 64


def weight_matrices(model: nn.Module) -> list[Tensor]:
    """Every distinct 2-D parameter of ``model`` (a tied embedding counted once)."""
    return list({id(p): p.detach() for p in model.parameters() if p.dim() == 2}.values())


def _matvec() -> Callable[[Tensor, Tensor], Tensor]:
    """The fastest matrix-vector product torch has here: oneDNN's, else ``torch.mv``."""
    try:
        onednn = torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # pragma: no cover - torch without oneDNN
        return lambda w, x: torch.mv(w, x[0])
    return lambda w, x: onednn(x, w, None, "none", [], "")


def weight_streaming(matrices: list[Tensor], passes: int) -> Callable[[], None]:
    """``passes`` times, one matrix-vector product per matrix: the least work that
    multiplies by every weight once per pass — decoding's roofline."""
    vectors = [torch.randn(1, w.shape[1], dtype=w.dtype) for w in matrices]
    matvec = _matvec()

    def stream() -> None:
        for _ in range(passes):
            for w, x in zip(matrices, vectors, strict=True):
                matvec(w, x)

    return stream


def weight_reading(matrices: list[Tensor], passes: int) -> Callable[[], None]:
    """``passes`` times, read every matrix once (a sum into a preallocated scalar): the
    machine's memory-read bound for touching every weight."""
    out = torch.empty((), dtype=matrices[0].dtype)

    def read() -> None:
        for _ in range(passes):
            for w in matrices:
                torch.sum(w, dim=(0, 1), out=out)

    return read


def train_step(
    model: nn.Module, ids: Tensor, logits_of: Callable[[nn.Module, Tensor], Tensor]
) -> Callable[[], None]:
    """One forward + loss + backward + AdamW step on next-token prediction."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step() -> None:
        logits = logits_of(model, inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def run(
    *,
    warmup: int = 1,
    repeats: int = 3,
    gen_repeats: int = 5,
    threads: int = 2,
    results_dir: str = RESULTS_DIR,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours = gpt()  # GPT-2 small, dropout 0
    peer = to_hf(ours, attn_implementation="sdpa")
    peer.generation_config.eos_token_id = None
    peer.generation_config.pad_token_id = 0
    common = {"threads": threads, "results_dir": results_dir, "label_peer": "transformers GPT-2"}
    results: dict[str, Any] = {}

    prompt = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(1))
    ours.eval(), peer.eval()
    with torch.no_grad():
        mine = generate(ours, prompt, NEW_TOKENS, temperature=0)
        theirs = peer.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)
    same = bool(torch.equal(mine, theirs))
    decode = {"B": 1, "prompt": 32, "new_tokens": NEW_TOKENS, "kv_cache": True}

    def ours_generate() -> Tensor:
        return generate(ours, prompt, NEW_TOKENS, temperature=0)

    results["greedy_generate_64"] = compare(
        NAME,
        ours_generate,
        lambda: peer.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False),
        case="greedy_generate_64",
        target=1.0,
        warmup=1,
        repeats=gen_repeats,
        extra={**decode, "same_tokens": same, **cpu_info()},
        **common,
    )
    matrices = weight_matrices(ours)
    mbytes = sum(w.numel() * w.element_size() for w in matrices) / 1e6
    results["greedy_generate_64_roofline"] = compare(
        NAME,
        ours_generate,
        torch.no_grad()(weight_streaming(matrices, NEW_TOKENS)),
        case="greedy_generate_64_roofline",
        target=1.5,
        warmup=1,
        repeats=gen_repeats,
        extra={**decode, "weight_matrices": len(matrices), "weight_mb": round(mbytes, 1),
               "peer": f"{NEW_TOKENS} passes of a matrix-vector product with every weight matrix",
               **cpu_info()},
        **{**common, "label_peer": "weight streaming (roofline)"},
    )

    results["greedy_generate_64_read_bound"] = compare(
        NAME,
        ours_generate,
        torch.no_grad()(weight_reading(matrices, NEW_TOKENS)),
        case="greedy_generate_64_read_bound",
        target=None,
        warmup=1,
        repeats=gen_repeats,
        extra={**decode, "weight_matrices": len(matrices), "weight_mb": round(mbytes, 1),
               "peer": f"{NEW_TOKENS} passes of a sum over every weight matrix", **cpu_info()},
        **{**common, "label_peer": "weight reading (bandwidth)"},
    )

    ids = torch.randint(0, 50257, (4, 257), generator=torch.Generator().manual_seed(2))
    ours.train(), peer.train()
    results["train_step_gpt2_small"] = compare(
        NAME,
        train_step(ours, ids, lambda m, x: m(x)),
        train_step(peer, ids, lambda m, x: m(x).logits),
        case="train_step_gpt2_small",
        target=1.0,
        warmup=warmup,
        repeats=repeats,
        extra={"B": 4, "T": 256, "dtype": "float32", "optimizer": "AdamW", "attn": "sdpa",
               **cpu_info()},
        **common,
    )
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=1, repeats=3)
    parser.add_argument("--gen-repeats", type=int, default=5)
    args = parse_args(parser, argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        gen_repeats=args.gen_repeats,
        threads=args.threads,
        results_dir=args.results_dir,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
