"""Parallel training on 2 gloo processes: the parity checks' wall time, FSDP2 memory and step time.

``python -m benchmarks.bench_parallel``; results go to ``benchmarks/results/parallel.json``.
Cases:

* ``two_process_checks``: wall time of the 2-process checks of ``tests/parallel``
  (DDP, FSDP2, TP, sequence parallel and FSDP x TP on GPT-2/LLaMA/ResNet-shaped models,
  then a 2-stage GPipe and 1F1B pipeline), spawns and imports included — target ≤ 30 s;
* ``fsdp2_vs_ddp_step``: one AdamW training step of gpt2-tiny (float32, 4 x 32 tokens per
  rank, 1 thread per rank) under FSDP2 (ours, via ``parallelize``) vs DDP (the peer):
  the ratio is FSDP2's step-time overhead. ``extra`` holds the per-rank parameter +
  optimizer-state bytes under FSDP2, measured from the real sharded tensors after a step,
  over those of one process — target ≤ 0.52;
* ``planner_llama2_70b``: ``netarchitect plan llama2-70b --gpus 64 --gpu-memory 80GB
  --seq-len 4096 --batch 4M-tokens`` in this process (imports warm): building the 80-block
  model on ``meta``, profiling it (two activation traces and a FLOP count) and ranking every
  layout — target < 5 s; ``extra`` holds the FSDP (ZeRO-3) model-state bytes per rank at 64
  ranks over the closed form ``16 Ψ / 64`` (target within 1%).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import RESULTS_DIR, _measure, compare, parse_args, time_one, time_parser
from netarchitect.parallel._spawn import run_ranks

NAME = "parallel"
MEMORY_TARGET = 0.52
BATCH, SEQ = 4, 32


def _checks() -> None:
    from tests.parallel import _ranks_plans as R

    run_ranks(R.all_checks_rank, 2, timeout=300)


def _local_bytes(tensors: Any) -> int:
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this process holds of parameters and optimizer state (local shards)."""
    params = {id(p): p for p in model.parameters()}.values()
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"params": _local_bytes(params), "optimizer": _local_bytes(states)}


def _model() -> torch.nn.Module:
    import netarchitect as na

    return na.create_model("gpt2-tiny", seed=0)


def _stepper(model: torch.nn.Module, ids: torch.Tensor) -> tuple[Any, torch.optim.Optimizer]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.roll(ids, -1, dims=1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).backward()
        opt.step()

    return step, opt


def memory_and_step_rank(rank: int, world_size: int, warmup: int, repeats: int,
                         results_dir: str) -> dict[str, Any]:
    """FSDP2 vs DDP step times (recorded by rank 0) and each rank's FSDP2 bytes."""
    from torch.distributed.device_mesh import init_device_mesh

    from netarchitect.parallel.apply import parallelize
    from netarchitect.parallel.plan import derive_plan

    mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("dp",))
    ids = torch.randint(0, 50257, (BATCH, SEQ), generator=torch.Generator().manual_seed(rank))
    fsdp_model = _model()
    fsdp_step, fsdp_opt = _stepper(parallelize(fsdp_model, mesh, derive_plan(fsdp_model)), ids)
    ddp_model = _model()
    ddp_step, _ = _stepper(
        parallelize(ddp_model, mesh, derive_plan(ddp_model, fsdp=False)), ids
    )
    fsdp_step()
    sharded = state_bytes(fsdp_model, fsdp_opt)
    if rank:
        _measure([fsdp_step, ddp_step], warmup, repeats, 1, time.perf_counter)
        return {"bytes": sharded}
    single_model = _model()
    single_step, single_opt = _stepper(single_model, ids)
    single_step()
    single = state_bytes(single_model, single_opt)
    ratio = sum(sharded.values()) / sum(single.values())
    print(f"FSDP2 2 ranks: {sum(sharded.values())} B/rank (params + AdamW) vs "
          f"{sum(single.values())} B in one process = {ratio:.4f}x (target <= {MEMORY_TARGET})")
    entry = compare(
        NAME, fsdp_step, ddp_step, case="fsdp2_vs_ddp_step", target=None,
        label_ours="FSDP2 (parallelize, 2 ranks)", label_peer="DDP (2 ranks)",
        extra={"model": "gpt2-tiny", "dtype": "float32", "tokens_per_rank": BATCH * SEQ,
               "ranks": world_size, "threads_per_rank": 1,
               "fsdp2_bytes_per_rank": sharded, "single_process_bytes": single,
               "memory_ratio": ratio, "memory_target": MEMORY_TARGET},
        warmup=warmup, repeats=repeats, threads=1, results_dir=results_dir,
    )
    return {"bytes": sharded, "ratio": entry["ratio"], "memory_ratio": ratio}


def _plan_70b() -> Any:
    from netarchitect.parallel.plan_command import _profile
    from netarchitect.parallel.planner import Hardware, Training, plan_training

    profile = _profile("llama2-70b", 4096, "bf16", {})
    return plan_training(profile, Hardware(64, 80e9), Training(4096, 4 * 2**20)), profile


def planner_case(*, repeats: int, threads: int, results_dir: str) -> dict[str, Any]:
    from netarchitect.parallel.planner import Training, rank_memory

    report, profile = _plan_70b()
    psi = profile.num_params
    _, memory = rank_memory(profile, Training(4096, 4 * 2**20), dp=64, zero=3)
    states = memory["params"] + memory["grads"] + memory["optimizer"]
    ratio = states / (16 * psi / 64)
    entry = time_one(
        NAME, _plan_70b, case="planner_llama2_70b", warmup=0, repeats=repeats,
        threads=threads, label="plan llama2-70b on 64 GPUs (build + profile + rank)",
        extra={"target_s": 5.0, "params": psi, "layouts": len(report.plans),
               "feasible": len(report.feasible), "fsdp64_states_over_closed_form": ratio},
        results_dir=results_dir,
    )
    print(f"planner llama2-70b: {entry['ours']['median_s']:.2f} s (target < 5 s); FSDP model states "
          f"per rank / (16 psi / 64) = {ratio:.6f}")
    return entry


def run(*, warmup: int, repeats: int, threads: int,
        results_dir: str = RESULTS_DIR) -> dict[str, Any]:
    checks = time_one(
        NAME, _checks, case="two_process_checks", warmup=0, repeats=1, threads=threads,
        label="2-process parity checks (DDP, FSDP2, TP, SP, FSDPxTP, GPipe, 1F1B)",
        extra={"target_s": 30.0}, results_dir=results_dir,
    )
    planner = planner_case(repeats=min(repeats, 3), threads=threads, results_dir=results_dir)
    ranks = run_ranks(memory_and_step_rank, 2, warmup, repeats, results_dir, timeout=600)
    worst = max(sum(r["bytes"].values()) for r in ranks)
    print(f"largest rank holds {worst} B; FSDP2 / DDP step time = {ranks[0]['ratio']:.2f}x")
    return {"two_process_checks": checks, "planner": planner, "fsdp2": ranks}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(time_parser(__doc__, warmup=2, repeats=10), argv)
    return run(warmup=args.warmup, repeats=args.repeats, threads=args.threads,
               results_dir=args.results_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
