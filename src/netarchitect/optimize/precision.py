"""Mixed precision: an autocast policy that keeps sensitive ops in float32, fp16 gradient
scaling, a native-bf16 probe and a per-block conformance check against float32.

:func:`autocast_policy` is ``torch.autocast`` plus one rule PyTorch applies on CUDA but not
on CPU. ``torch.autocast`` runs matmul-like ops (``linear``, ``conv*``, ``matmul``/``bmm``,
``scaled_dot_product_attention``, ``prelu``) in the low-precision dtype on both devices and
losses in float32 on both; but its CPU tables leave ``softmax``, ``log_softmax``, the norms
(``layer_norm``, ``group_norm``, ``batch_norm``, ``rms_norm``, ``vector_norm``, ...) and
``logsumexp``/``cumsum`` *unlisted*, so there they run in whatever dtype arrives — bf16
after a bf16 matmul. The policy intercepts those functions (:data:`FP32_OPS`, a
``TorchFunctionMode``) and runs them in float32 with autocast off, as CUDA's ``fp32`` list
does. Attention logits inside ``scaled_dot_product_attention`` are accumulated in float32
by the fused kernels (CPU flash attention and CUDA flash/memory-efficient kernels use a
float32 accumulator for bf16/fp16 inputs); a hand-written ``q @ kᵀ`` is a matmul and runs
in low precision, but its softmax is then done in float32 by the policy.

Tolerances of :func:`check_precision` (relative L2 error ``‖y_amp − y₃₂‖ / ‖y₃₂‖`` of all
floating outputs, in units of the dtype's machine epsilon ``ε``: bf16 ``ε = 2⁻⁷ ≈ 7.8e-3``
(about 3 significant digits), fp16 ``ε = 2⁻¹⁰ ≈ 9.8e-4``)::

    kind         runs in low precision               tolerance  why
    elementwise  nothing (inputs stay float32)       1e-5       no rounding at all
    norm         nothing (float32 by the policy)     1e-5       no rounding at all
    gemm         one matmul/conv (+ fp32 norm/act)   1 ε        inputs, weights and output
                                                                rounded once each (u = ε/2,
                                                                RMS u/√3 each): ≈ 0.4 ε seen
    composite    ≥ 2 matmul-like ops (attention,     2 ε        k roundings in a chain grow
                 MLPs, residual blocks)                         like √k: ≤ 0.75 ε seen
    routing      a discrete choice on a low-         4 ε        as composite plus room for a
                 precision score (MoE, early exit)              near-tie: ≤ 1 ε seen; a
                                                                flipped index is reported

Measured on the registry's examples (bf16, this CPU): largest errors 0.41 ε (gemm),
0.74 ε (composite: multi-head attention), 0.96 ε (routing: MoE); fp16 alike in its ε.
The kind is found at run time by counting the matmul-like calls the block makes
(:data:`LOW_PRECISION_OPS`); ``routing`` is declared by :data:`ROUTING_BLOCKS`.
"""

from __future__ import annotations

import contextlib
import math
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..analysis._common import Inputs, call_model, tensors_in
from ..errors import SpecError

__all__ = [
    "FP32_OPS",
    "KIND_TOLERANCE_EPS",
    "LOW_PRECISION_OPS",
    "NATIVE_BF16_RATIO",
    "ROUTING_BLOCKS",
    "BF16Support",
    "PrecisionReport",
    "active_policy",
    "autocast_policy",
    "bf16_support",
    "bf16_supported",
    "check_precision",
    "make_grad_scaler",
    "precision_kind",
    "resolve_dtype",
    "scaled_step",
    "tolerance_for",
]

_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}

FP32_OPS: frozenset[Callable[..., Any]] = frozenset(
    {
        F.softmax, torch.softmax, Tensor.softmax,
        F.log_softmax, torch.log_softmax, Tensor.log_softmax,
        torch.logsumexp, Tensor.logsumexp, torch.cumsum, Tensor.cumsum,
        F.layer_norm, torch.layer_norm, F.group_norm, torch.group_norm,
        F.batch_norm, torch.batch_norm, F.instance_norm, torch.instance_norm,
        F.rms_norm, torch.rms_norm, F.normalize, F.cosine_similarity,
        torch.norm, Tensor.norm, torch.linalg.vector_norm, torch.linalg.norm,
        F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss,
        F.huber_loss, F.kl_div, F.binary_cross_entropy_with_logits,
    }
)  # fmt: skip
"""Functions the policy runs in float32 (autocast off, floating inputs upcast)."""

LOW_PRECISION_OPS: frozenset[str] = frozenset(
    {
        "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "conv_tbc", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm",
        "baddbmm", "addbmm", "einsum", "scaled_dot_product_attention", "prelu", "bilinear",
    }
)  # fmt: skip
"""Names of the matmul-like functions autocast runs in low precision (counted to find the
kind of a block)."""

ROUTING_BLOCKS: frozenset[str] = frozenset({"moe", "early_exit"})
"""Registered blocks whose output depends on a discrete choice made on a score."""

KIND_TOLERANCE_EPS: Mapping[str, float] = {"gemm": 1.0, "composite": 2.0, "routing": 4.0}
"""Relative L2 tolerance in machine epsilons of the low-precision dtype (see module doc)."""

EXACT_TOLERANCE = 1e-5
"""Tolerance of the kinds that run nothing in low precision (``elementwise``, ``norm``)."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"``/``"fp16"`` (or their long names) or ``torch.bfloat16``/``torch.float16``."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.bfloat16, torch.float16):
            return dtype
    elif isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise SpecError(
        f"{dtype!r} is not a mixed-precision dtype; expected 'bf16', 'fp16', "
        "torch.bfloat16 or torch.float16",
        path="dtype",
    )


def _upcast(obj: Any) -> Any:
    if isinstance(obj, Tensor) and obj.is_floating_point() and obj.dtype != torch.float32:
        return obj.float()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_upcast(o) for o in obj)
    return obj


class _Float32Ops(TorchFunctionMode):
    """Runs the functions of ``fp32_ops`` in float32 with autocast off; counts the
    matmul-like calls (names in :data:`LOW_PRECISION_OPS`) in ``low_precision_calls``."""

    def __init__(self, fp32_ops: frozenset[Callable[..., Any]], device_type: str) -> None:
        super().__init__()
        self.fp32_ops = fp32_ops
        self.device_type = device_type
        self.low_precision_calls = 0
        self.fp32_calls = 0

    def __enter__(self) -> Self:
        _active_stack().append(self)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        _active_stack().pop()
        super().__exit__(*exc)  # type: ignore[arg-type]

    def replay(self) -> _Float32Ops:
        """A fresh mode with the same settings (for a checkpoint's recompute)."""
        return _Float32Ops(self.fp32_ops, self.device_type)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in self.fp32_ops:
            self.fp32_calls += 1
            with torch.autocast(self.device_type, enabled=False):
                return func(*_upcast(args), **{k: _upcast(v) for k, v in kwargs.items()})
        if getattr(func, "__name__", "") in LOW_PRECISION_OPS:
            self.low_precision_calls += 1
        return func(*args, **kwargs)


_ACTIVE = threading.local()


def _active_stack() -> list[_Float32Ops]:
    if not hasattr(_ACTIVE, "stack"):
        _ACTIVE.stack = []
    return _ACTIVE.stack


def active_policy() -> _Float32Ops | None:
    """The innermost :func:`autocast_policy` mode active in this thread, or ``None``
    (checkpointing re-enters it when it recomputes a block in backward)."""
    stack = _active_stack()
    return stack[-1] if stack else None


@contextlib.contextmanager
def autocast_policy(
    dtype: str | torch.dtype = "bf16",
    *,
    device_type: str | None = None,
    enabled: bool = True,
    fp32_ops: Iterable[Callable[..., Any]] = FP32_OPS,
) -> Iterator[_Float32Ops | None]:
    """``torch.autocast(device_type, dtype)`` with :data:`FP32_OPS` forced to float32.

    ``device_type`` defaults to the default device's type (``"cpu"`` or ``"cuda"``);
    ``enabled=False`` runs everything in float32 (a no-op context). Yields the active mode
    (its ``low_precision_calls`` counts matmul-like calls) or ``None`` when disabled.
    Works forward and backward; run ``backward()`` outside the context, as with autocast
    (:func:`~netarchitect.optimize.checkpointing.apply_checkpointing` recomputes under the
    same policy).
    """
    low = resolve_dtype(dtype)
    device_type = device_type or torch.get_default_device().type
    if device_type not in ("cpu", "cuda", "xpu", "mps", "hpu"):
        raise SpecError(f"autocast does not support device type {device_type!r}", path="device_type")
    if not enabled:
        yield None
        return
    mode = _Float32Ops(frozenset(fp32_ops), device_type)
    with torch.autocast(device_type, dtype=low), mode:
        yield mode


def make_grad_scaler(
    dtype: str | torch.dtype = "fp16", *, device_type: str | None = None, **kwargs: Any
) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler``, enabled only for fp16 (bf16 has float32's exponent range
    and needs no loss scaling: the scaler is then a pass-through). ``kwargs`` go to
    ``GradScaler`` (``init_scale``, ``growth_interval``, ...)."""
    low = resolve_dtype(dtype)
    device_type = device_type or torch.get_default_device().type
    return torch.amp.GradScaler(device_type, enabled=low == torch.float16, **kwargs)


def scaled_step(
    loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> bool:
    """Backward of ``loss`` scaled by ``scaler``, optimiser step (skipped when a gradient is
    inf/NaN) and scale update; gradients are zeroed afterwards. Returns whether the step
    was taken."""
    scaler.scale(loss).backward()
    before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return before is None or scaler.get_scale() >= before


# ---------------------------------------------------------------- native bf16 probe


@dataclass
class BF16Support:
    """Whether bf16 matmuls run at native speed here, and the evidence."""

    device_type: str
    native: bool
    capability: str
    cpu_flags: list[str] = field(default_factory=list)
    cpu_model: str = ""
    bf16_over_fp32: float | None = None  # matmul time ratio measured by the probe

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _cpu_flags_and_model() -> tuple[list[str], str]:
    flags: set[str] = set()
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    flags |= {w for w in value.split() if "bf16" in w or w.startswith("amx")}
                elif key.strip() == "model name" and value.strip():
                    model = value.strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return sorted(flags), model


def _matmul_ratio(size: int, repeats: int) -> float:
    """Best bf16 time / best fp32 time of a ``size``³ matmul, the two timed alternately (so
    load from other processes hits both alike)."""
    pairs = {dt: (torch.randn(size, size).to(dt), torch.randn(size, size).to(dt))
             for dt in (torch.bfloat16, torch.float32)}  # fmt: skip
    best = dict.fromkeys(pairs, math.inf)
    for _ in range(repeats + 1):  # the first round warms up oneDNN's primitives
        for dt, (a, b) in pairs.items():
            start = time.perf_counter()
            a @ b
            best[dt] = min(best[dt], time.perf_counter() - start)
    return best[torch.bfloat16] / best[torch.float32]


NATIVE_BF16_RATIO = 4.0
"""bf16/fp32 matmul time at or below which bf16 counts as native: native kernels run at
0.3-1.5x fp32 time, emulated ones tens to hundreds of times slower; the wide margin keeps
a loaded machine from flipping the verdict."""


def bf16_support(device_type: str = "cpu", *, probe: bool = True, size: int = 256) -> BF16Support:
    """Is bfloat16 native here? On CUDA: ``torch.cuda.is_bf16_supported()``. On CPU: the
    ``/proc/cpuinfo`` flags (``avx512_bf16``, ``amx_bf16``) recorded with
    ``torch.backends.cpu.get_cpu_capability()``, decided by a timing probe (a ``size``³
    matmul in bf16 and fp32, best of 5 each: native when bf16 takes at most
    :data:`NATIVE_BF16_RATIO` times as long). Without ``probe`` the flags decide.
    """
    if device_type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return BF16Support("cuda", ok, "cuda")
    flags, model = _cpu_flags_and_model()
    capability = torch.backends.cpu.get_cpu_capability()
    by_flags = any(f in flags for f in ("avx512_bf16", "amx_bf16"))
    if not probe:
        return BF16Support("cpu", by_flags, capability, flags, model)
    ratio = _matmul_ratio(size, 5)
    return BF16Support("cpu", ratio <= NATIVE_BF16_RATIO, capability, flags, model, ratio)


def bf16_supported(device_type: str = "cpu", *, probe: bool = True) -> bool:
    """True when bf16 runs at native speed on ``device_type`` (see :func:`bf16_support`)."""
    return bf16_support(device_type, probe=probe).native


# ---------------------------------------------------------------- conformance check


@dataclass
class PrecisionReport:
    """Autocast output vs float32 for one block or model (see the module's tolerance table)."""

    name: str
    kind: str
    dtype: str
    rel_error: float
    max_abs_error: float
    tolerance: float
    low_precision_calls: int
    mismatched_exact: int = 0  # non-floating outputs (indices, masks) that differ

    @property
    def passed(self) -> bool:
        return self.mismatched_exact == 0 and self.rel_error <= self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        extra = f", {self.mismatched_exact} non-float outputs differ" if self.mismatched_exact else ""
        return (
            f"{self.name} [{self.kind}, {self.dtype}]: rel error {self.rel_error:.2e} "
            f"(tolerance {self.tolerance:.2e}){extra} — {verdict}"
        )


def precision_kind(name: str, low_precision_calls: int, fp32_calls: int) -> str:
    """The tolerance kind of a block from what it ran (see the module's table)."""
    if name in ROUTING_BLOCKS:
        return "routing"
    if low_precision_calls == 0:
        return "norm" if fp32_calls else "elementwise"
    return "gemm" if low_precision_calls == 1 else "composite"


def tolerance_for(kind: str, dtype: torch.dtype) -> float:
    """Relative L2 tolerance of ``kind`` for ``dtype`` (the module's table)."""
    if kind in KIND_TOLERANCE_EPS:
        return KIND_TOLERANCE_EPS[kind] * torch.finfo(dtype).eps
    return EXACT_TOLERANCE


def _errors(ref: list[Tensor], got: list[Tensor]) -> tuple[float, float, int]:
    if len(ref) != len(got):
        raise RuntimeError(f"autocast changed the number of outputs: {len(ref)} -> {len(got)}")
    diff_sq = ref_sq = 0.0
    max_abs = 0.0
    mismatched = 0
    for r, g in zip(ref, got, strict=True):
        if r.is_floating_point() or r.is_complex():
            r, g = r.detach().double(), g.detach().double()
            d = g - r
            diff_sq += float(d.abs().pow(2).sum())
            ref_sq += float(r.abs().pow(2).sum())
            if d.numel():
                max_abs = max(max_abs, float(d.abs().max()))
        elif not torch.equal(r, g):
            mismatched += 1
    rel = math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq > 0 else math.sqrt(diff_sq)
    return rel, max_abs, mismatched


def check_precision(
    block_or_model: nn.Module,
    inputs: Inputs,
    dtype: str | torch.dtype = "bf16",
    *,
    forward_kwargs: Mapping[str, Any] | None = None,
    name: str | None = None,
    kind: str | None = None,
    tolerance: float | None = None,
    device_type: str | None = None,
) -> PrecisionReport:
    """Run ``block_or_model`` (in eval mode, no grad, float32 weights) on ``inputs`` in float32
    and under :func:`autocast_policy` and compare every output tensor.

    ``kind``/``tolerance`` override what the table gives; ``name`` defaults to the block's
    registered name (``block_name``) or its class name. The module is left as it was.
    """
    low = resolve_dtype(dtype)
    name = name or str(getattr(block_or_model, "block_name", type(block_or_model).__name__))
    forward_kwargs = dict(forward_kwargs or {})
    if device_type is None:
        first = next(iter(tensors_in(inputs)), None)
        device_type = first.device.type if first is not None else "cpu"
    was_training = block_or_model.training
    block_or_model.eval()
    try:
        with torch.no_grad():
            ref = tensors_in(_call(block_or_model, inputs, forward_kwargs))
            with autocast_policy(low, device_type=device_type) as mode:
                got = tensors_in(_call(block_or_model, inputs, forward_kwargs))
    finally:
        block_or_model.train(was_training)
    assert mode is not None
    kind = kind or precision_kind(name, mode.low_precision_calls, mode.fp32_calls)
    rel, max_abs, mismatched = _errors(ref, got)
    tol = tolerance if tolerance is not None else tolerance_for(kind, low)
    return PrecisionReport(
        name, kind, str(low).removeprefix("torch."), rel, max_abs, tol,
        mode.low_precision_calls, mismatched,
    )  # fmt: skip


def _call(module: nn.Module, inputs: Inputs, forward_kwargs: dict[str, Any]) -> Any:
    if not forward_kwargs:
        return call_model(module, inputs)
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    return module(*args, **forward_kwargs)
