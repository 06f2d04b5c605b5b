"""LoRA adapters in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

:func:`to_peft` writes what ``PeftModel.from_pretrained(base, dir)`` loads (PEFT 0.21)
where PEFT has the layer: Linear, Conv1d/2d/3d (``groups=1``), Embedding and
transformers' ``Conv1D``; DoRA on Linear/Conv/Conv1D. Our other adapters (ConvTranspose,
recurrent, norms, Bilinear, fused q/k/v slices, DoRA on Embedding — PEFT normalises
embeddings per dimension, we per token) have no PEFT counterpart: they are refused by
name. :func:`from_peft` reads a PEFT LoRA adapter into our adapters on the same model.

Layouts (ours → PEFT): Linear/Conv1D ``A → lora_A.weight``, ``B → lora_B.weight``; Conv
the same reshaped to ``(r, in, *k)`` and ``(out, r, 1, ...)``; Embedding
``Bᵀ → lora_embedding_A``, ``Aᵀ → lora_embedding_B``; DoRA ``magnitude →
lora_magnitude_vector`` (``(1, out, 1, ...)`` for Conv).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .._io import atomic_write, atomic_write_text
from ..errors import NetArchitectError
from .lora import hosts, lora_sites
from .lora_io import adapter_key, attach, check_shapes
from .lora_layers import LoRADelta, LoRAStateError

__all__ = ["PeftLayoutError", "from_peft", "to_peft"]

PREFIX = "base_model.model."
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PEFT_KINDS = ("linear", "conv", "embedding", "hf_conv1d")


class PeftLayoutError(NetArchitectError):
    """Adapters that PEFT's layout cannot express, or a PEFT adapter we cannot read."""


def _peft_tensors(target: str, d: LoRADelta, weight: Tensor) -> dict[str, Tensor]:
    assert d.A is not None and d.B is not None
    kind = d.site.kind
    p = PREFIX + target
    if kind == "embedding":
        return {f"{p}.lora_embedding_A": d.B.t(), f"{p}.lora_embedding_B": d.A.t()}
    if kind == "conv":
        nd = weight.dim() - 2
        out = {f"{p}.lora_A.weight": d.A.reshape(d.rank, *weight.shape[1:]),
               f"{p}.lora_B.weight": d.B.reshape(*d.B.shape, *([1] * nd))}
        if d.magnitude is not None:
            out[f"{p}.lora_magnitude_vector"] = d.magnitude.reshape(1, -1, *([1] * nd))
        return out
    out = {f"{p}.lora_A.weight": d.A, f"{p}.lora_B.weight": d.B}
    if d.magnitude is not None:
        out[f"{p}.lora_magnitude_vector"] = d.magnitude
    return out


def _check_expressible(name: str, host: Any, d: LoRADelta) -> None:
    site = d.site
    why = None
    if site.kind not in _PEFT_KINDS or site.rows is not None or d.full is not None:
        why = f"PEFT has no LoRA for {host.lora_base_class.__name__}.{site.param}" + (
            " row slices" if site.rows else "")
    elif site.kind == "conv" and getattr(host, "groups", 1) != 1:
        why = "grouped convolutions are not exported"
    elif site.kind == "embedding" and d.dora:
        why = "PEFT's DoRA on embeddings normalises per dimension, ours per token"
    if why:
        raise PeftLayoutError(f"cannot export the adapter of {site.target!r} to PEFT: {why}")


def _uniform(values: dict[str, Any], what: str) -> Any:
    distinct = set(values.values())
    if len(distinct) > 1:
        raise PeftLayoutError(f"PEFT's config holds one {what}; the adapters use {sorted(distinct)}")
    return distinct.pop()


def to_peft(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s adapters as a PEFT LoRA adapter folder; returns the folder."""
    found = hosts(model)
    if not found:
        raise LoRAStateError("the model has no LoRA adapters to export (apply_lora first)")
    if any(h.lora_merged for _, h in found):
        raise LoRAStateError("the adapters are merged: unmerge_lora before exporting them")
    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    flags: dict[str, tuple[bool, bool]] = {}
    for name, host in found:
        for d in host.lora_adapters.values():
            assert isinstance(d, LoRADelta)
            _check_expressible(name, host, d)
            target = d.site.target
            tensors.update(_peft_tensors(target, d, host.get_parameter(d.site.param)))
            ranks[target], alphas[target] = d.rank, d.alpha
            flags[target] = (d.rslora, d.dora)
    rslora, dora = _uniform(flags, "(use_rslora, use_dora)")
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    alpha = max(set(alphas.values()), key=list(alphas.values()).count)
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": None,
        "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(ranks), "use_rslora": rslora, "use_dora": dora,
        "fan_in_fan_out": any(getattr(d, "site").kind == "hf_conv1d" for _, h in found  # noqa: B009
                              for d in h.lora_adapters.values()),
        "rank_pattern": {re.escape(t): v for t, v in ranks.items() if v != r},
        "alpha_pattern": {re.escape(t): v for t, v in alphas.items() if v != alpha},
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
    }
    out = Path(directory)
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(out / WEIGHTS, lambda tmp: save_file(data, str(tmp), metadata={"format": "pt"}))
    atomic_write_text(out / CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return out


def _pattern(patterns: dict[str, Any], name: str, default: Any) -> Any:
    for key, value in patterns.items():  # PEFT's get_pattern_key
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _read(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as exc:
        raise PeftLayoutError(f"cannot read a PEFT adapter from {str(directory)!r}: {exc}") from None
    if config.get("peft_type") != "LORA":
        raise PeftLayoutError(f"{str(directory)!r} holds a {config.get('peft_type')!r} adapter, "
                              "not LORA")
    return config, tensors


def from_peft(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load a PEFT LoRA adapter folder into ``model`` as our adapters (in place); shapes
    are checked before anything changes."""
    directory = Path(directory)
    config, raw = _read(directory)
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, t in raw.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.(lora_A\.weight|lora_B\.weight|"
                         r"lora_embedding_A|lora_embedding_B|lora_magnitude_vector(?:\.weight)?)",
                         key)
        if m is None:
            raise PeftLayoutError(f"unexpected tensor {key!r} in the PEFT adapter")
        grouped.setdefault(m.group(1), {})[m.group(2).split(".")[0]] = t
    sites = {s.target: s for s in lora_sites(model, ["re:" + re.escape(n) for n in grouped])}
    tensors: dict[str, Tensor] = {}
    records = []
    for target, parts in grouped.items():
        site = sites.get(target)
        if site is None:
            raise PeftLayoutError(f"the model has no module {target!r} named in the PEFT adapter")
        if "lora_embedding_A" in parts:
            a, b = parts["lora_embedding_B"].t(), parts["lora_embedding_A"].t()
        else:
            a, b = parts["lora_A"], parts["lora_B"]
        rank = a.shape[0]
        tensors[adapter_key(site.host, site.key, "A")] = a.reshape(rank, -1)
        tensors[adapter_key(site.host, site.key, "B")] = b.reshape(b.shape[0], rank)
        if "lora_magnitude_vector" in parts:
            tensors[adapter_key(site.host, site.key, "magnitude")] = parts["lora_magnitude_vector"].reshape(-1)
        records.append({
            "key": site.key, "target": target, "host": site.host, "param": site.param,
            "kind": site.kind, "rows": None,
            "rank": int(_pattern(config.get("rank_pattern") or {}, target, rank)),
            "alpha": float(_pattern(config.get("alpha_pattern") or {}, target,
                                    config.get("lora_alpha", 8))),
            "rslora": bool(config.get("use_rslora")),
            "dora": "lora_magnitude_vector" in parts,
            "dropout": float(config.get("lora_dropout") or 0.0),
        })
    check_shapes(model, tensors, records, repr(str(directory)))
    with torch.no_grad():
        attach(model, tensors, records)
    return model
