"""Dynamic int8 quantisation of a BERT-base-shaped encoder: latency, size and agreement vs fp32.

``python -m benchmarks.bench_optimize_quantize``; results go to
``benchmarks/results/optimize.json``. The model is ``create_model("bert-base")`` (12 layers,
dim 768, 12 heads, random weights, seeded) on ``input_ids`` of shape ``(B, 128)``, forward
only, float32 vs int8. Cases (ours / peer = fp32 eager):

* ``quantize_int8_dynamic_B{1,4}``: ``quantize(model)`` (``backend="auto"``) — target ≤ 0.4;
  ``extra`` holds the weight sizes (target ≤ 0.3 for the quantised Linears; the whole
  model's ratio includes the float embeddings), the cosine similarity of the outputs
  (target ≥ 0.99) and the backend ``auto`` chose;
* ``quantize_torchao_eager_B{1,4}``: torchao's int8 dynamic path, eager (no target: it
  records why ``auto`` does not pick it in eager mode);
* ``quantize_torchao_compiled_B{1,4}``: the same under ``torch.compile`` (inductor); the
  compile time goes into ``extra``. ``--no-compile`` skips these cases.

``--clock cpu`` times with the process's CPU time instead of the wall clock: on a machine
shared with other jobs it measures the work done rather than the share of cores received
(use it with ``--threads 1``, where idle OpenMP threads spin for no one).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.harness import RESULTS_DIR, compare, parse_args, time_parser
from netarchitect import create_model
from netarchitect.optimize._quant_backends import export_int8
from netarchitect.optimize.quantization import (
    default_backend,
    output_tensor,
    quantize,
    quantized_linears,
    quantized_size_bytes,
)

NAME = "optimize"
SEQ_LEN = 128
BATCHES = (1, 4)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _forward(model: nn.Module, ids: Tensor) -> Callable[[], Tensor]:
    def step() -> Tensor:
        with torch.no_grad():
            return output_tensor(model(ids))

    return step


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), 0))


def _linear_bytes(fp32: nn.Module, quantized: nn.Module) -> tuple[int, int]:
    """Bytes of the quantised Linears' weights and biases: float, then int8 + scales."""
    names = quantized_linears(quantized)
    before = sum(t.nbytes for n in names for t in fp32.get_submodule(n).parameters())
    after = sum(t.nbytes for m in names.values() for t in export_int8(m).values())
    return before, after


def run(
    *,
    warmup: int,
    repeats: int,
    threads: int,
    results_dir: str = RESULTS_DIR,
    compile: bool = True,
    clock: str = "wall",
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    fp32 = create_model("bert-base", seed=0).eval()
    auto = quantize(fp32)
    torchao = quantize(fp32, backend="torchao")
    common = {"warmup": warmup, "repeats": repeats, "threads": threads, "results_dir": results_dir,
              "clock": CLOCKS[clock]}
    lin_before, lin_after = _linear_bytes(fp32, auto)
    sizes = {
        "size_ratio_linear": lin_after / lin_before,
        "size_ratio_model": quantized_size_bytes(auto) / quantized_size_bytes(fp32),
        "size_bytes_model_fp32": quantized_size_bytes(fp32),
        "size_bytes_model_int8": quantized_size_bytes(auto),
        "size_target": 0.3,
        "cosine_target": 0.99,
        "backend": default_backend("int8_dynamic"),
    }
    results = {}
    gen = torch.Generator().manual_seed(0)
    for batch in BATCHES:
        ids = torch.randint(0, 30522, (batch, SEQ_LEN), generator=gen)
        ref = _forward(fp32, ids)()
        shape = {"model": "bert-base", "B": batch, "T": SEQ_LEN, "pass": "forward"}
        variants: list[tuple[str, nn.Module, float | None, dict[str, Any]]] = [
            ("quantize_int8_dynamic", auto, 0.4, sizes),
            ("quantize_torchao_eager", torchao, None, {}),
        ]
        if compile:
            compiled = torch.compile(torchao)
            start = time.perf_counter()
            _forward(compiled, ids)()
            variants.append(
                ("quantize_torchao_compiled", compiled, None,
                 {"compile_s": time.perf_counter() - start})
            )
        for case, model, target, extra in variants:
            fn = _forward(model, ids)
            results[f"{case}_B{batch}"] = compare(
                NAME, fn, _forward(fp32, ids), case=f"{case}_B{batch}", target=target,
                label_ours=case.removeprefix("quantize_"), label_peer="fp32 eager",
                extra={**shape, **extra, "cosine": _cosine(fn(), ref), "clock": clock}, **common,
            )
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = time_parser(__doc__, warmup=3, repeats=15)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parse_args(parser, argv)
    return run(
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        results_dir=args.results_dir,
        compile=args.compile,
        clock=args.clock,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
