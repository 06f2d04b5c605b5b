"""The parallelism planner: per-rank memory, compute and communication of DP/ZeRO/FSDP x TP x PP
layouts from a model's exact per-block figures, and the feasible layouts ranked by step time.

Memory per rank (bytes), for the rank of the pipeline stage that needs the most:

* model states — mixed-precision Adam keeps ``param + grad`` in the training dtype and an
  fp32 master copy plus two fp32 moments (the ZeRO paper's ``2 + 2 + 12 = 16`` bytes per
  parameter for bf16; ``4 + 4 + 8`` for fp32, where the parameter is its own master), plus
  a 4-byte ``step`` per tensor (FSDP2 with a bf16 ``MixedPrecisionPolicy`` keeps the fp32
  shard as the parameter and its fp32 gradient instead: ``4 + 4 + 8``, the same 16 bytes).
  ZeRO-1 shards the optimizer state over the ``dp`` ranks,
  ZeRO-2 also the gradients (flat, ``ceil(P/N)``), ZeRO-3/FSDP2 also the parameters (dim 0
  of each tensor, :func:`~netarchitect.parallel.memory_model.fsdp_rows`);
* activations of one micro-batch (``--checkpointing``: the block inputs plus one block
  recomputed) times the micro-batches in flight: 1F1B keeps ``pp - s`` on stage ``s``;
* communication buffers: FSDP gathers the largest unit twice (the running one and the
  prefetched one) and holds its unsharded gradient for the reduce-scatter; tensor parallel
  one all-reduced activation ``b x s x h``; pipeline stages a send and a receive buffer.
  DDP's buckets are taken as the gradients themselves (``gradient_as_bucket_view``).

Step time (stated model, not a measurement): ``compute = FLOPs per rank / (peak x
efficiency)`` (checkpointing adds one forward), ``bubble = (pp - 1) / m x compute``;
tensor-parallel and pipeline traffic is exposed (``bytes / bandwidth``, NVLink inside a
node); data-parallel traffic overlaps the compute and only its excess shows. Ring
collectives move ``(N-1)/N`` of the buffer per all-gather or reduce-scatter and twice that
per all-reduce; FSDP2 gathers each unit in forward and backward and reduce-scatters its
gradient in every micro-batch.

Limits: activations are those of the profiled dtype scaled to the training dtype (pure
bf16 training; autocast keeps some saved tensors in fp32); sequence parallel, tied weights
shared across pipeline stages, allocator fragmentation and the CUDA context are not
modelled; the step time is linear in the micro-batch size, so ties go to the layout that
sends fewer bytes, then the one that needs less memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ParallelError
from .memory_model import ModelProfile, UnitInfo, fsdp_rows

__all__ = ["Hardware", "LayoutEstimate", "PlanReport", "Training", "plan_training", "rank_memory"]

_MOMENTS = {"adamw": 2, "adam": 2, "sgd_momentum": 1, "sgd": 0}
ZERO_NAMES = {0: "DDP", 1: "ZeRO-1", 2: "ZeRO-2", 3: "FSDP"}


@dataclass(frozen=True)
class Hardware:
    """The cluster: GPUs, memory per GPU (bytes), peak FLOP/s and link bandwidths (bytes/s)."""

    gpus: int
    gpu_memory: float
    gpus_per_node: int = 8
    peak_flops: float = 312e12
    efficiency: float = 0.5
    intra_bandwidth: float = 150e9
    inter_bandwidth: float = 25e9


@dataclass(frozen=True)
class Training:
    """What one step trains: ``global_tokens`` of ``seq_len`` sequences, dtype bytes, optimiser."""

    seq_len: int
    global_tokens: int
    param_bytes: int = 2
    optimizer: str = "adamw"
    checkpointing: bool | None = None  # None: try both

    def __post_init__(self) -> None:
        if self.optimizer not in _MOMENTS:
            raise ParallelError(
                f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(_MOMENTS)}"
            )

    @property
    def sequences(self) -> int:
        return self.global_tokens // self.seq_len

    @property
    def state_bytes(self) -> int:
        """Optimiser bytes per parameter: fp32 master (when training below fp32) + moments."""
        master = 4 if self.param_bytes < 4 else 0
        return master + 4 * _MOMENTS[self.optimizer]


@dataclass
class LayoutEstimate:
    """One layout: degrees, micro-batching, per-rank memory (bytes), FLOPs, traffic, time."""

    dp: int
    tp: int
    pp: int
    zero: int
    micro_batch: int
    micro_batches: int
    checkpointing: bool
    memory: dict[str, float]
    flops_per_rank: float
    comm_bytes: dict[str, float]
    step_time: float
    fits: bool
    stage: int = 0

    @property
    def name(self) -> str:
        parts = [f"{ZERO_NAMES[self.zero]} {self.dp}"] if self.dp > 1 else []
        parts += [f"TP {self.tp}"] if self.tp > 1 else []
        parts += [f"PP {self.pp}"] if self.pp > 1 else []
        return " x ".join(parts) or "single"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass
class PlanReport:
    """Every layout evaluated, best first (feasible ones before the rest)."""

    model: str
    num_params: int
    hardware: Hardware
    training: Training
    plans: list[LayoutEstimate] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def feasible(self) -> list[LayoutEstimate]:
        return [p for p in self.plans if p.fits]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "num_params": self.num_params,
            "hardware": asdict(self.hardware), "training": asdict(self.training),
            "plans": [p.to_dict() for p in self.plans], "rejected": dict(self.rejected),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)



@dataclass
class _Stage:
    """One pipeline stage under ``tp``: its units, local parameter shapes and FLOPs per sequence."""

    units: list[UnitInfo]
    shapes: list[tuple[int, ...]]
    largest_unit: int
    blocks: int
    flops: float
    fwd_flops: float


def _stages(profile: ModelProfile, pp: int, tp: int) -> list[_Stage]:
    out = []
    for s, idx in enumerate(profile.stages(pp)):
        names = {profile.units[i].name for i in idx}
        params = [p for p in profile.params if p.unit in names or (
            not p.unit and (p.pre and s == 0 or not p.pre and s == pp - 1))]
        units = [profile.units[i] for i in idx]
        units = ([profile.pre] if s == 0 else []) + units + ([profile.post] if s == pp - 1 else [])
        by_unit: dict[str, int] = {}
        for p in params:
            by_unit[p.unit] = by_unit.get(p.unit, 0) + math.prod(p.tp_shape(tp))
        out.append(_Stage(units, [p.tp_shape(tp) for p in params], max(by_unit.values(), default=0),
                          len(idx), sum(u.fwd_flops + u.bwd_flops for u in units),
                          sum(u.fwd_flops for u in units)))
    return out


def _numel(shapes: list[tuple[int, ...]], dp: int = 1, sharded: bool = False, rank: int = 0) -> int:
    if not sharded:
        return sum(math.prod(s) for s in shapes)
    return sum(fsdp_rows(s[0], dp, rank) * math.prod(s[1:]) if s else int(rank == 0)
               for s in shapes)


def model_states(shapes: list[tuple[int, ...]], *, dp: int, zero: int, training: Training,
                 rank: int = 0) -> dict[str, float]:
    """Parameter, gradient and optimiser bytes of data-parallel ``rank`` (the largest is 0)
    holding tensors of local ``shapes``."""
    full = _numel(shapes)
    flat = math.ceil(full / dp)
    fsdp = _numel(shapes, dp, sharded=True, rank=rank) if zero == 3 else 0
    own = {0: (full, full, full), 1: (full, full, flat), 2: (full, flat, flat),
           3: (fsdp, fsdp, fsdp)}[zero]
    steps = 4 * len(shapes) if _MOMENTS[training.optimizer] == 2 else 0
    return {
        "params": own[0] * training.param_bytes,
        "grads": own[1] * training.param_bytes,
        "optimizer": own[2] * training.state_bytes + steps,
    }


def _activations(units: list[UnitInfo], b: int, tp: int, ckpt: bool, inflight: int) -> float:
    if not ckpt:
        return inflight * sum(u.activations(b, tp) for u in units)
    blocks = [u for u in units if u.name not in ("pre", "post")]
    sides = sum(u.activations(b, tp) for u in units if u.name in ("pre", "post"))
    kept = sum(u.inputs * b for u in blocks)
    recompute = max((u.activations(b, tp, checkpointed=True) for u in blocks), default=0.0)
    return inflight * (sides + kept) + recompute


def rank_memory(profile: ModelProfile, training: Training, *, dp: int, tp: int = 1, pp: int = 1,
                zero: int = 3, micro_batch: int = 1, micro_batches: int = 1,
                checkpointing: bool = False, rank: int = 0) -> tuple[int, dict[str, float]]:
    """``(stage, bytes by kind)`` of the pipeline stage that needs the most memory under the
    layout, for data-parallel ``rank`` (0 holds the most)."""
    stages = _stages(profile, pp, tp)
    states = [model_states(st.shapes, dp=dp, zero=zero, training=training, rank=rank)
              for st in stages]
    return _rank_memory(profile, training, stages, states, dp=dp, tp=tp, zero=zero,
                        b=micro_batch, m=micro_batches, ckpt=checkpointing)


def _rank_memory(profile: ModelProfile, training: Training, stages: list[_Stage],
                 states: list[dict[str, float]], *, dp: int, tp: int, zero: int, b: int, m: int,
                 ckpt: bool) -> tuple[int, dict[str, float]]:
    best: tuple[int, dict[str, float]] | None = None
    scale = training.param_bytes / profile.act_bytes
    pp = len(stages)
    act = profile.boundary * b * scale
    for s, stage in enumerate(stages):
        mem = dict(states[s])
        mem["activations"] = scale * _activations(stage.units, b, tp, ckpt, min(pp - s, m))
        if s == pp - 1:
            mem["activations"] += scale * profile.outputs * b  # the head is replicated
        mem["buffers"] = profile.buffers
        comm = 3 * stage.largest_unit * training.param_bytes if zero == 3 and dp > 1 else 0.0
        comm += (act if tp > 1 else 0.0) + (2 * act if pp > 1 else 0.0)
        mem["comm_buffers"] = comm  # two gathered units + one unsharded grad; TP; send/recv
        mem["total"] = sum(mem.values())
        if best is None or mem["total"] > best[1]["total"]:
            best = (s, mem)
    assert best is not None
    return best


def _comm(profile: ModelProfile, training: Training, stage: _Stage, *, dp: int, tp: int,
          pp: int, zero: int, b: int, m: int, ckpt: bool) -> dict[str, float]:
    full = _numel(stage.shapes) * training.param_bytes
    ring = (dp - 1) / dp
    data = 3 * m * ring * full if zero == 3 else 2 * ring * full
    act = profile.boundary * b * training.param_bytes / profile.act_bytes
    tp_calls = (6 if ckpt else 4) * stage.blocks * m
    tensor = tp_calls * 2 * (tp - 1) / tp * act if tp > 1 else 0.0
    pipe = 2 * m * act if pp > 1 else 0.0
    return {"dp": data, "tp": tensor, "pp": pipe}


def _step_time(hw: Hardware, flops: float, comm: dict[str, float], *, dp: int, tp: int,
               pp: int, m: int) -> float:
    compute = flops / (hw.peak_flops * hw.efficiency)
    bubble = (pp - 1) / m * compute
    dp_bw = hw.intra_bandwidth if dp * tp <= hw.gpus_per_node else hw.inter_bandwidth
    pp_bw = hw.intra_bandwidth if dp * tp * pp <= hw.gpus_per_node else hw.inter_bandwidth
    exposed = comm["tp"] / hw.intra_bandwidth + comm["pp"] / pp_bw
    return compute + bubble + exposed + max(0.0, comm["dp"] / dp_bw - compute)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan_training(profile: ModelProfile, hardware: Hardware, training: Training, *,
                  zero_stages: tuple[int, ...] = (0, 1, 2, 3)) -> PlanReport:
    """Evaluate every ``dp x tp x pp = gpus`` layout (each ZeRO stage, micro-batch size and
    checkpointing choice) and return them best first: those that fit in ``gpu_memory``
    by estimated step time, then the rest by memory. Raises :class:`ParallelError` when no
    layout of ``hardware.gpus`` can split the model and the batch."""
    if training.seq_len != profile.seq_len:
        raise ParallelError(f"the profile is for seq_len={profile.seq_len}, "
                            f"not {training.seq_len}")
    if training.global_tokens % training.seq_len:
        raise ParallelError(f"the batch of {training.global_tokens} tokens is not a whole "
                            f"number of {training.seq_len}-token sequences")
    report = PlanReport(profile.name, profile.num_params, hardware, training)
    ckpts = (False, True) if training.checkpointing is None else (training.checkpointing,)
    for tp in _divisors(hardware.gpus):
        for pp in _divisors(hardware.gpus // tp):
            dp = hardware.gpus // (tp * pp)
            reason = _layout_problem(profile, hardware, training, dp=dp, tp=tp, pp=pp)
            if reason:
                report.rejected[f"dp={dp} tp={tp} pp={pp}"] = reason
                continue
            stages = _stages(profile, pp, tp)
            for zero in (z for z in zero_stages if dp > 1 or z == 0):
                states = [model_states(st.shapes, dp=dp, zero=zero, training=training)
                          for st in stages]
                for ckpt in ckpts:
                    report.plans.append(_best_micro_batch(
                        profile, hardware, training, stages, states, dp=dp, tp=tp, zero=zero,
                        ckpt=ckpt))
    if not report.plans:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(report.rejected.items())[:4])
        raise ParallelError(f"no layout of {hardware.gpus} GPUs can train {profile.name}: {reasons}")
    report.plans.sort(key=_rank_key)
    return report


def _layout_problem(profile: ModelProfile, hw: Hardware, training: Training, *, dp: int,
                    tp: int, pp: int) -> str:
    if tp > hw.gpus_per_node:
        return f"tp={tp} spans more than one node of {hw.gpus_per_node} GPUs"
    problems = profile.tp_problems(tp)
    if problems:
        return problems[0]
    if pp > 1 and pp > len(profile.units):
        return f"pp={pp} exceeds the model's {len(profile.units)} blocks"
    if training.sequences % dp:
        return f"the global batch of {training.sequences} sequences does not split over dp={dp}"
    return ""


def _rank_key(plan: LayoutEstimate) -> tuple[bool, float, float, float]:
    """Fitting plans first, by step time, then bytes sent, then memory; the others by memory."""
    total = plan.memory["total"]
    sent = sum(plan.comm_bytes.values())
    return (not plan.fits, plan.step_time if plan.fits else total, sent, total)


def _best_micro_batch(profile: ModelProfile, hw: Hardware, training: Training,
                      stages: list[_Stage], states: list[dict[str, float]], *, dp: int, tp: int,
                      zero: int, ckpt: bool) -> LayoutEstimate:
    per_rank = training.sequences // dp
    pp = len(stages)
    best: LayoutEstimate | None = None
    stage_flops = max(st.flops + (st.fwd_flops if ckpt else 0) for st in stages)
    flops = stage_flops * per_rank / tp
    for b in (d for d in _divisors(per_rank) if d & (d - 1) == 0 and d <= 64):
        m = per_rank // b
        s, mem = _rank_memory(profile, training, stages, states, dp=dp, tp=tp, zero=zero, b=b,
                              m=m, ckpt=ckpt)
        comm = _comm(profile, training, stages[s], dp=dp, tp=tp, pp=pp, zero=zero, b=b, m=m,
                     ckpt=ckpt)
        time = _step_time(hw, flops, comm, dp=dp, tp=tp, pp=pp, m=m)
        plan = LayoutEstimate(dp, tp, pp, zero, b, m, ckpt, mem, flops, comm, time,
                    mem["total"] <= hw.gpu_memory, s)
        if best is None or _rank_key(plan) < _rank_key(best):
            best = plan
    assert best is not None
    return best
