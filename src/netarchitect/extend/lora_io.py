"""LoRA adapters on disk: the adapter tensors alone, as safetensors, with their config.

The file holds every adapter tensor under its state-dict name
(``blocks.0.attn.fn.q_proj.lora_adapters.weight.A``) and, in the metadata
(``netarchitect_lora``), one JSON record per adapted weight: target module, host module,
parameter, row slice, rank, α, rsLoRA, DoRA, dropout. :func:`load_adapters` checks every
tensor against the model before changing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .._io import atomic_write
from ..errors import NetArchitectError
from .lora import LoRASite, freeze_base, hosts, install
from .lora_layers import AdapterShapeError, LoRADelta, LoRAStateError, matrix_shape

__all__ = ["load_adapters", "save_adapters"]

META_KEY = "netarchitect_lora"
_OPTIONS = ("rank", "alpha", "rslora", "dora", "dropout")


def adapter_key(host: str, key: str, name: str) -> str:
    """State-dict name of an adapter tensor (``host`` is ``""`` for the root module)."""
    return f"{host}.lora_adapters.{key}.{name}" if host else f"lora_adapters.{key}.{name}"


def _record(host: str, key: str, d: LoRADelta) -> dict[str, Any]:
    site: LoRASite = d.site
    return {
        "key": key, "target": site.target, "host": host, "param": site.param,
        "kind": site.kind, "rows": list(site.rows) if site.rows else None,
        "rank": d.rank, "alpha": d.alpha, "rslora": d.rslora, "dora": d.dora,
        "dropout": 0.0 if d.drop is None else float(d.drop.p),
    }


def adapter_state(model: nn.Module) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Every adapter tensor by state-dict name, and the records describing them."""
    tensors: dict[str, Tensor] = {}
    records = []
    for name, host in hosts(model):
        for key, d in host.lora_adapters.items():
            assert isinstance(d, LoRADelta)
            records.append(_record(name, key, d))
            for pname, p in d.named_parameters():
                tensors[adapter_key(name, key, pname)] = p.detach().contiguous().cpu()
    return tensors, records


def save_adapters(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s LoRA adapters alone (safetensors, atomically) and return the path."""
    tensors, records = adapter_state(model)
    if not records:
        raise LoRAStateError("the model has no LoRA adapters to save (apply_lora first)")
    if any(h.lora_merged for _, h in hosts(model)):
        raise LoRAStateError("the adapters are merged: unmerge_lora before saving them")
    metadata = {"format": "pt", META_KEY: json.dumps(records)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read(path: Path) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    if not path.is_file():
        raise NetArchitectError(f"adapter file {str(path)!r} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise NetArchitectError(f"cannot read adapters from {str(path)!r}: {exc}") from None
    if META_KEY not in meta:
        raise NetArchitectError(f"{str(path)!r} holds no netarchitect LoRA adapters")
    return tensors, json.loads(meta[META_KEY])


def expected_shapes(model: nn.Module, rec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The adapter tensors a record needs in ``model`` (by state-dict name)."""
    try:
        weight = model.get_submodule(rec["host"]).get_parameter(rec["param"])
    except AttributeError:
        raise AdapterShapeError(
            f"the model has no weight {rec['host']}.{rec['param']} for the adapter of "
            f"{rec['target']!r}"
        ) from None
    shape = tuple(weight.shape)
    if rec["rows"]:
        start, stop = rec["rows"]
        shape = (stop - start, *shape[1:])
    def key(name: str) -> str:
        return adapter_key(rec["host"], rec["key"], name)

    if len(shape) == 1:
        return {key("full"): shape}
    lead: tuple[int, ...] = ()
    if rec["kind"] == "stacked":
        lead, (rows, cols) = shape[:1], shape[1:]
    else:
        rows, cols = matrix_shape(shape, rec["kind"] == "hf_conv1d")
    out: dict[str, tuple[int, ...]] = {key("A"): (*lead, rec["rank"], cols),
                                       key("B"): (*lead, rows, rec["rank"])}
    if rec["dora"]:
        out[key("magnitude")] = (*lead, rows)
    return out


def check_shapes(model: nn.Module, tensors: dict[str, Tensor],
                 records: list[dict[str, Any]], source: str) -> None:
    """Raise :class:`AdapterShapeError` listing every tensor that does not fit ``model``."""
    problems = []
    for rec in records:
        for key, shape in expected_shapes(model, rec).items():
            got = tensors.get(key)
            if got is None:
                problems.append(f"{key} missing")
            elif tuple(got.shape) != shape:
                problems.append(f"{key}: saved {tuple(got.shape)}, the model needs {shape}")
    if problems:
        raise AdapterShapeError(
            f"adapters in {source} do not fit this model: " + "; ".join(problems[:5])
            + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        )


def attach(model: nn.Module, tensors: dict[str, Tensor], records: list[dict[str, Any]]) -> None:
    """Install the recorded adapters (reusing existing ones) and copy the tensors in."""
    for rec in records:
        host = model.get_submodule(rec["host"])
        adapters = getattr(host, "lora_adapters", None)
        if adapters is None or rec["key"] not in adapters:
            site = LoRASite(rec["target"], rec["host"], rec["param"], rec["kind"],
                            tuple(rec["rows"]) if rec["rows"] else None)
            install(model, site, {k: rec[k] for k in _OPTIONS})
    with torch.no_grad():
        for key in {k for rec in records for k in expected_shapes(model, rec)}:
            p = model.get_parameter(key)
            p.copy_(tensors[key].to(device=p.device, dtype=p.dtype))
    freeze_base(model)


def load_adapters(model: nn.Module, path: str | Path) -> nn.Module:
    """Load adapters saved by :func:`save_adapters` into ``model`` (in place; adapters are
    created where missing). A file that does not fit the model's shapes raises
    :class:`AdapterShapeError` naming the tensors, and the model is left untouched."""
    path = Path(path)
    tensors, records = _read(path)
    if any(h.lora_merged for _, h in hosts(model)):
        raise LoRAStateError("the model's adapters are merged: unmerge_lora before loading")
    check_shapes(model, tensors, records, repr(str(path)))
    attach(model, tensors, records)
    return model
