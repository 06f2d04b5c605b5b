"""Int8 quantisation of Linear layers: ``quantize``, sizes, a before/after report, safetensors.

Modes (weights are symmetric int8 with one scale per output channel in both):

* ``"int8_dynamic"`` (alias ``"int8"``): activations quantised per call, int8 x int8 matmul;
* ``"int8_weight_only"``: int8 weights, float activations (memory, not speed).

Backends: ``"torchao"`` (``torchao.quantization.quantize_``; the maintained path) and
``"legacy"`` (``torch.ao.nn.quantized.dynamic.Linear``; deprecated by PyTorch, its
warnings are silenced around our calls only). ``backend="auto"`` picks from measurements
of a BERT-base-shaped encoder (``create_model("bert-base")``, ``(B, 128)`` tokens, B = 1
and 4; torch 2.13 CPU on a 2-core AMD EPYC with AVX512-VNNI shared with other jobs, so
ratios rather than times; ``benchmarks/bench_optimize_quantize.py``), latency / fp32 eager
for B=1 / B=4 (``CPU``: the process's CPU time, ``wall``: elapsed time):

==========================  ===========  ===========  ===========  =====================
int8 dynamic                1 thr, CPU   1 thr, wall  2 thr, CPU   2 thr, wall (2 runs)
==========================  ===========  ===========  ===========  =====================
legacy, eager               0.31 / 0.32  0.30 / 0.32  0.57 / 0.52  0.37-0.63 / 0.47-0.53
torchao, eager              0.58 / 0.44  0.63 / 0.44  1.16 / 2.57  1.96-2.69 / 1.22-3.12
torchao, ``torch.compile``  —            —            —            0.46-0.61 / 0.43-0.82
==========================  ===========  ===========  ===========  =====================

(The 2-thread wall-clock runs had a load average of 9-13 on the 2 cores; the compile took
20-180 s per shape.)

* ``int8_dynamic`` -> ``legacy`` wherever PyTorch has a quantised CPU engine: the fastest
  eager module in every setting, with no compile step (torchao's eager int8 path costs
  more than fp32 at 2 threads here; it pays off only under ``torch.compile``, where it
  roughly matches legacy, after a compile that new shapes repeat). Use
  ``backend="torchao"`` and compile the result to stay off the deprecated path. Without a
  quantised engine ``auto`` falls back to ``torchao``.
* ``int8_weight_only`` -> ``torchao`` (the legacy path has no int8 weight-only Linear).

Which Linears: every ``nn.Linear`` (ours included) whose weight is a floating-point tensor
not shared with another module (a tied LM head stays in float: quantising one side would
untie it), except ``nn.MultiheadAttention``'s ``out_proj`` (its parent reads the weight
directly); the legacy backend also leaves ``nn.Linear`` subclasses with their own
``forward`` (``LMHead``) in float, since it replaces the module. ``filter(module, name)``
narrows the choice further. The result is for inference.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .._io import atomic_write
from ..analysis._common import Inputs, call_model, tensors_in
from ..analysis.latency import latency
from ..errors import NetArchitectError, suggest
from ..layers.basic import Linear
from ._quant_backends import (
    BACKENDS,
    assign_int8,
    export_int8,
    is_quantized_linear,
    quantize_linears,
)

__all__ = [
    "MODES",
    "QuantizationError",
    "QuantizationReport",
    "default_backend",
    "load_quantized",
    "output_tensor",
    "quantization_report",
    "quantize",
    "quantized_linears",
    "quantized_size_bytes",
    "save_quantized",
]

MODES = ("int8_dynamic", "int8_weight_only")
_ALIASES = {"int8": "int8_dynamic"}
_FORMAT = "netarchitect-quantized"
Filter = Callable[[nn.Module, str], bool]


class QuantizationError(NetArchitectError, ValueError):
    """A model, mode, backend or file that quantisation cannot use; the message says why."""


def _choice(what: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = suggest(value, choices) if isinstance(value, str) else ""
        raise QuantizationError(f"{what}={value!r} must be one of {list(choices)}{hint}")
    return value


def _legacy_available() -> bool:
    engines = torch.backends.quantized.supported_engines
    return any(e in engines for e in ("x86", "fbgemm", "onednn", "qnnpack"))


def default_backend(mode: str) -> str:
    """The backend ``backend="auto"`` uses for ``mode`` on this machine (see the module doc)."""
    mode = _ALIASES.get(mode, mode)
    _choice("mode", mode, MODES)
    return "legacy" if mode == "int8_dynamic" and _legacy_available() else "torchao"


def _resolve(mode: str, backend: str) -> tuple[str, str]:
    mode = _choice("mode", _ALIASES.get(mode, mode), (*MODES, *_ALIASES))
    mode = _ALIASES.get(mode, mode)
    backend = _choice("backend", backend, ("auto", *BACKENDS))
    if backend == "auto":
        backend = default_backend(mode)
    if backend == "legacy" and mode == "int8_weight_only":
        raise QuantizationError(
            "backend='legacy' has no int8 weight-only Linear; use backend='torchao' or 'auto'"
        )
    if backend == "legacy" and not _legacy_available():
        raise QuantizationError("backend='legacy': this PyTorch build has no quantised CPU engine")
    return mode, backend


def _skip_reason(module: nn.Linear, backend: str, shared: set[int]) -> str | None:
    """Why a Linear stays in float (None: it can be quantised)."""
    weight = module.weight
    if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return "its parent reads the weight directly"
    if type(weight) not in (Tensor, nn.Parameter) or not weight.is_floating_point():
        return "its weight is not a plain float tensor"
    if weight.is_meta:
        return "its weight is on the meta device"
    if id(weight) in shared:
        return "its weight is tied to another module"
    if backend == "legacy" and type(module) not in (nn.Linear, Linear):
        return f"the legacy backend would drop {type(module).__name__}.forward"
    if backend == "legacy" and weight.dtype != torch.float32:
        return f"the legacy backend needs float32 weights, not {weight.dtype}"
    return None


def _select(model: nn.Module, backend: str, filter: Filter | None) -> list[str]:
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    shared = {k for k, n in counts.items() if n > 1}
    chosen, skipped = [], {}
    for name, module in model.named_modules():
        if is_quantized_linear(module):
            skipped[name] = "it is already quantised"
            continue
        if not isinstance(module, nn.Linear):
            continue
        reason = _skip_reason(module, backend, shared)
        if reason is None and filter is not None and not filter(module, name):
            reason = "the filter rejected it"
        if reason is None:
            chosen.append(name)
        else:
            skipped[name] = reason
    if not chosen:
        if not skipped:
            raise QuantizationError(
                f"{type(model).__name__} has no nn.Linear layer to quantise"
            )
        detail = "; ".join(f"{n or '<root>'}: {r}" for n, r in list(skipped.items())[:3])
        raise QuantizationError(
            f"none of the {len(skipped)} Linear layers of {type(model).__name__} can be "
            f"quantised ({detail})"
        )
    return chosen


def quantize(
    model: nn.Module,
    mode: str = "int8_dynamic",
    *,
    backend: str = "auto",
    filter: Filter | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Quantise ``model``'s Linear layers to int8 (see the module docstring for the rules).

    ``filter(module, name) -> bool`` keeps only some Linears. Returns a quantised copy;
    ``model`` itself is untouched unless ``inplace=True``. Unknown modes or backends, and
    a model without a Linear that can be quantised, raise :class:`QuantizationError`
    before anything is changed.
    """
    mode, backend = _resolve(mode, backend)
    if not isinstance(model, nn.Module):
        raise QuantizationError(f"quantize needs an nn.Module, got {type(model).__name__}")
    names = _select(model, backend, filter)
    target = model if inplace else copy.deepcopy(model)
    quantize_linears(target, names, mode, backend)
    return target


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    """The quantised Linear modules of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if is_quantized_linear(m)}


def _mode_and_backend(module: nn.Module) -> tuple[str, str]:
    if not isinstance(module, nn.Linear):
        return "int8_dynamic", "legacy"
    dynamic = getattr(module.weight, "act_quant_kwargs", None) is not None
    return ("int8_dynamic" if dynamic else "int8_weight_only"), "torchao"


def _flat_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Plain tensors for every state entry (int8 data + scales for quantised Linears), each
    storage once; the second dict maps a dropped duplicate's name to the kept one."""
    quantized = quantized_linears(model)
    state: dict[str, Tensor] = {}
    for name, module in quantized.items():
        state.update({f"{name}.{k}": v for k, v in export_int8(module).items()})
    prefixes = tuple(f"{n}." for n in quantized)
    for key, value in model.state_dict().items():
        if isinstance(value, Tensor) and not key.startswith(prefixes):
            state[key] = value.detach()
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, value in state.items():
        ident = (value.data_ptr(), value.dtype, tuple(value.shape), value.stride())
        if value.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = value.contiguous()
    return tensors, aliases


def quantized_size_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s weights and buffers as :func:`save_quantized` stores them (int8
    data and scales for quantised Linears, tied tensors once); works on float models too."""
    tensors, _ = _flat_state(model)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write a quantised model as safetensors (atomically; no pickle): ``NAME.weight`` int8
    ``(out, in)`` and ``NAME.weight_scale`` ``(out,)`` per quantised Linear, every other
    tensor as is; mode, backend and a Network's spec in the metadata."""
    quantized = quantized_linears(model)
    if not quantized:
        raise QuantizationError(
            f"{type(model).__name__} has no quantised Linear layer; call quantize() first"
        )
    kinds = {_mode_and_backend(m) for m in quantized.values()}
    if len(kinds) > 1:
        raise QuantizationError(
            f"{type(model).__name__} mixes quantisations {sorted(kinds)}; save_quantized "
            "stores one mode and backend per file"
        )
    ((mode, backend),) = kinds
    tensors, aliases = _flat_state(model)
    metadata = {
        "format": _FORMAT,
        "mode": mode,
        "backend": backend,
        "quantized": json.dumps(sorted(quantized)),
        "aliases": json.dumps(aliases, sort_keys=True),
    }
    spec = getattr(model, "spec", None)
    if spec is not None and hasattr(spec, "to_dict"):
        metadata["spec"] = json.dumps(spec.to_dict(), sort_keys=True)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    if not path.is_file():
        raise QuantizationError(f"quantised weights {str(path)!r} is not an existing file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise QuantizationError(f"{path}: not a readable safetensors file ({reason})") from None
    if metadata.get("format") != _FORMAT:
        raise QuantizationError(f"{path}: not a quantised model saved by save_quantized")
    return metadata, tensors


def _skeleton(template: Any, metadata: dict[str, str], path: Path) -> nn.Module:
    if isinstance(template, nn.Module):
        return copy.deepcopy(template)
    from ..network import build

    if template is None:
        if "spec" not in metadata:
            raise QuantizationError(f"{path}: no spec stored; pass the float model as template")
        template = json.loads(metadata["spec"])
    return build(template, seed=0)


def load_quantized(path: str | Path, template: Any = None) -> nn.Module:
    """Load what :func:`save_quantized` wrote; returns the quantised model in eval mode.

    ``template`` gives the float architecture: an ``nn.Module`` (copied, left untouched), a
    spec (anything :func:`netarchitect.build` takes) or ``None`` for the spec in the file.
    """
    path = Path(path)
    metadata, tensors = _read(path)
    names = json.loads(metadata["quantized"])
    model = _skeleton(template, metadata, path)
    try:
        model = quantize(model, metadata["mode"], backend=metadata["backend"], inplace=True,
                         filter=lambda _m, name: name in names)
    except QuantizationError as exc:
        raise QuantizationError(f"{path}: the template does not fit ({exc})") from None
    missing = sorted(set(names) - set(quantized_linears(model)))
    if missing:
        raise QuantizationError(f"{path}: the template has no quantisable Linear {missing[:3]}")
    for alias, kept in json.loads(metadata["aliases"]).items():
        tensors[alias] = tensors[kept]
    prefixes = tuple(f"{n}." for n in names)
    for name in names:
        module = model.get_submodule(name)
        stored = {k: tensors.get(f"{name}.{k}") for k in export_int8(module)}
        _check_fit(path, name, stored, export_int8(module))
        assign_int8(module, stored)  # type: ignore[arg-type]
    rest = {k: v for k, v in tensors.items() if not k.startswith(prefixes)}
    _copy_float_state(path, model, rest, prefixes)
    return model.eval()


def _copy_float_state(
    path: Path, model: nn.Module, stored: dict[str, Tensor], skip: tuple[str, ...]
) -> None:
    """Copy ``stored`` into every state tensor of ``model`` outside the ``skip`` prefixes."""
    target = {k: v for k, v in model.state_dict(keep_vars=True).items()
              if isinstance(v, Tensor) and not k.startswith(skip)}
    missing, unexpected = sorted(target.keys() - stored), sorted(stored.keys() - target)
    if missing or unexpected:
        raise QuantizationError(
            f"{path}: weights do not fit the template "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, value in target.items():
        if value.shape != stored[key].shape:
            raise QuantizationError(
                f"{path}: {key} has shape {tuple(stored[key].shape)}, the template needs "
                f"{tuple(value.shape)}"
            )
        with torch.no_grad():
            value.copy_(stored[key])


def _check_fit(
    path: Path, name: str, stored: dict[str, Tensor | None], expected: dict[str, Tensor]
) -> None:
    for key, want in expected.items():
        got = stored[key]
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            found = "missing" if got is None else f"{got.dtype} {tuple(got.shape)}"
            raise QuantizationError(
                f"{path}: {name}.{key} is {found}, the template needs "
                f"{want.dtype} {tuple(want.shape)}"
            )


@dataclass
class QuantizationReport:
    """Size, forward latency (median ms), output agreement and accuracy, before/after."""

    size_before: int
    size_after: int
    latency_before_ms: float
    latency_after_ms: float
    cosine: float
    accuracy_before: float | None = None
    accuracy_after: float | None = None

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before

    @property
    def latency_ratio(self) -> float:
        return self.latency_after_ms / self.latency_before_ms

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "size_ratio": self.size_ratio,
                "latency_ratio": self.latency_ratio}

    def to_markdown(self) -> str:
        rows = [("weights (MiB)", self.size_before / 2**20, self.size_after / 2**20),
                ("latency (ms)", self.latency_before_ms, self.latency_after_ms)]
        if self.accuracy_before is not None and self.accuracy_after is not None:
            rows.append(("accuracy (%)", self.accuracy_before, self.accuracy_after))
        lines = ["| | float | int8 | ratio |", "|---|---|---|---|"]
        lines += [f"| {n} | {a:.3f} | {b:.3f} | {b / a:.2f}x |" for n, a, b in rows]
        lines.append(f"| output cosine | | {self.cosine:.4f} | |")
        return "\n".join(lines) + "\n"


def output_tensor(out: Any) -> Tensor:
    """The first floating-point tensor of a model output (a tensor, tuple, dict, dataclass)."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = tuple(getattr(out, f.name) for f in dataclasses.fields(out))  # no copies
    found = [t for t in tensors_in(out) if t.is_floating_point()]
    if not found:
        raise QuantizationError(f"the model output ({type(out).__name__}) holds no float tensor")
    return found[0]


def _cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(-1) == labels).double().mean() * 100)


def quantization_report(
    reference: nn.Module,
    quantized: nn.Module,
    inputs: Inputs,
    *,
    labels: Tensor | None = None,
    warmup: int = 2,
    repeats: int = 10,
    threads: int | None = None,
) -> QuantizationReport:
    """Compare a float model with its quantised version on ``inputs``: weight bytes,
    forward latency (:func:`netarchitect.analysis.latency`), cosine similarity of the
    outputs and, with ``labels``, top-1 accuracy (%) of the outputs taken as logits."""
    with torch.no_grad():
        ref, out = (output_tensor(call_model(m, inputs)) for m in (reference, quantized))
    timings = [latency(m, inputs, warmup=warmup, repeats=repeats, threads=threads,
                       backward=False).forward.median_ms for m in (reference, quantized)]
    return QuantizationReport(
        size_before=quantized_size_bytes(reference),
        size_after=quantized_size_bytes(quantized),
        latency_before_ms=timings[0],
        latency_after_ms=timings[1],
        cosine=_cosine(ref, out),
        accuracy_before=None if labels is None else _accuracy(ref, labels),
        accuracy_after=None if labels is None else _accuracy(out, labels),
    )
