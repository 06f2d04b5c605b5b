"""LoRA / rsLoRA / DoRA on any layer: choose targets, apply, merge, unmerge, remove.

``apply_lora(model, targets, rank=8)`` adapts, in place, every weight-bearing module that
``targets`` selects and freezes everything else (only adapters train). A target is

- a glob over module names, matched against the whole dotted name or any dotted suffix
  of it (``"q_proj"``, ``"attn.*"``, ``"blocks.*.mlp.fc1"``; a spec-built Network's
  ``nodes.`` prefix may be left out);
- ``"re:<regex>"`` or a compiled pattern, matched in full against the name;
- a module class (``nn.Conv2d``): every instance.

A matched module without weights of its own (a block, an attention layer) stands for the
weight-bearing modules inside it. Supported types (:data:`LORA_LAYER_TYPES`, extend with
:func:`register_lora_layer`): Linear (and our ``LMHead``), Conv1d/2d/3d,
ConvTranspose1d/2d/3d, Embedding (and learned positions), RNN/LSTM/GRU (and cells: every
``weight_ih``/``weight_hh`` matrix), LayerNorm/RMSNorm/BatchNorm/GroupNorm/InstanceNorm
and LayerScale/DyT (affine vectors: a full delta), Bilinear, ``nn.MultiheadAttention``
(``in_proj_weight`` and ``out_proj.weight``), transformers' ``Conv1D`` (GPT-2's
``c_attn``/``c_proj``/``c_fc``), and the q/k/v projections of our attention — also when
:func:`~netarchitect.optimize.merge_qkv` fused them into one ``qkv_weight``: targeting
``q_proj`` then adapts exactly the query rows. MoE experts are ordinary modules
(``experts.*.fc1``); stacked ``(E, out, in)`` expert weights (transformers' Mixtral,
Qwen-MoE ``*Experts`` modules) get one low-rank update per expert. The maths is in :mod:`~netarchitect.extend.lora_layers`.

Tied weights (GPT-2's embedding and head) are read by two modules; the adapter of one
module is seen by that module only, and :func:`merge_lora` refuses a tied weight.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from ..errors import suggest
from ..layers.attention import MultiHeadAttention
from ..layers.embedding import LearnedPositionalEmbedding
from ..layers.norm import DyT, InstanceNorm, LayerScale
from .lora_layers import (
    LoRADelta,
    LoRAHost,
    LoRAStateError,
    LoRATargetError,
    UnfusedQKV,
    matrix_shape,
    restore_class,
    swap_class,
)

__all__ = [
    "LORA_LAYER_TYPES",
    "LoRASite",
    "apply_lora",
    "lora_parameters",
    "lora_sites",
    "merge_lora",
    "register_lora_layer",
    "remove_lora",
    "unmerge_lora",
]

Target = str | type | re.Pattern[str]
Targets = Target | Sequence[Target]


def _rnn_weights(m: nn.Module) -> list[str]:
    return [n for n in m._flat_weights_names if n.startswith("weight_")]  # type: ignore[union-attr]


def _mha_weights(m: nn.Module) -> list[str]:
    own = ["in_proj_weight"] if m.in_proj_weight is not None else [
        "q_proj_weight", "k_proj_weight", "v_proj_weight"]
    return [*own, "out_proj.weight"]


def _names(*names: str) -> Callable[[nn.Module], list[str]]:
    return lambda m: [n for n in names if getattr(m, n, None) is not None]


#: (type, fast-path kind, parameter names) in lookup order; first ``isinstance`` match wins.
LORA_LAYER_TYPES: list[tuple[type, str, Callable[[nn.Module], list[str]]]] = [
    (nn.Linear, "linear", _names("weight")),
    (nn.Conv1d, "conv", _names("weight")),
    (nn.Conv2d, "conv", _names("weight")),
    (nn.Conv3d, "conv", _names("weight")),
    (_ConvNd, "generic", _names("weight")),  # ConvTranspose1d/2d/3d
    (nn.Embedding, "embedding", _names("weight")),
    (LearnedPositionalEmbedding, "generic", _names("weight")),
    (nn.RNNBase, "generic", _rnn_weights),
    (nn.RNNCellBase, "generic", _names("weight_ih", "weight_hh")),
    (nn.MultiheadAttention, "generic", _mha_weights),
    (nn.Bilinear, "generic", _names("weight")),
    (nn.LayerNorm, "generic", _names("weight")),
    (nn.RMSNorm, "generic", _names("weight")),
    (nn.GroupNorm, "generic", _names("weight")),
    (_NormBase, "generic", _names("weight")),
    (InstanceNorm, "generic", _names("weight")),
    (LayerScale, "generic", _names("gamma")),
    (DyT, "generic", _names("gamma")),
]


def register_lora_layer(cls: type, params: Sequence[str], kind: str = "generic") -> None:
    """Let LoRA adapt ``cls``'s parameters ``params`` (generic path: the layer's forward
    must read them as attributes)."""
    LORA_LAYER_TYPES.insert(0, (cls, kind, _names(*params)))


def _type_names() -> str:
    seen = dict.fromkeys(t.__name__.lstrip("_") for t, _, _ in LORA_LAYER_TYPES)
    return ", ".join([*seen, "transformers Conv1D"])


def _rule(module: nn.Module) -> tuple[str, list[str]] | None:
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-2 layer
        return "hf_conv1d", ["weight"]
    if type(module).__name__.endswith("Experts"):  # stacked (E, out, in) expert weights
        stacked = [n for n, p in module.named_parameters(recurse=False) if p.dim() == 3]
        if stacked:
            return "stacked", stacked
    for cls, kind, names in LORA_LAYER_TYPES:
        if isinstance(module, cls):
            return kind, names(module)
    return None


@dataclass
class LoRASite:
    """One weight to adapt: the target module's name, the host module whose forward reads
    the weight, the parameter, the row slice (fused q/k/v) and the forward kind."""

    target: str
    host: str
    param: str
    kind: str
    rows: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        key = self.param.replace(".", "__")
        return key if self.rows is None else f"{key}@{self.rows[0]}_{self.rows[1]}"


def _own_params(m: nn.Module) -> bool:
    """Whether ``m`` holds weights of its own (a fused q/k/v attention counts as a container:
    its ``q_proj``/``k_proj``/``v_proj`` views are the targets)."""
    from ..optimize._qkv import FusedQKVAttention

    if isinstance(m, FusedQKVAttention):
        return False
    return any(p is not None and p.is_floating_point() for p in m._parameters.values())


def _matches(name: str, target: Target) -> bool:
    if isinstance(target, re.Pattern) or (isinstance(target, str) and target.startswith("re:")):
        regex = target if isinstance(target, re.Pattern) else re.compile(target[3:])
        bare = name.removeprefix("nodes.")
        return regex.fullmatch(name) is not None or regex.fullmatch(bare) is not None
    assert isinstance(target, str)
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), target) for i in range(len(parts)))


def _as_targets(targets: Targets) -> list[Target]:
    items = [targets] if isinstance(targets, str | type | re.Pattern) else list(targets)
    if not items or not all(isinstance(t, str | type | re.Pattern) and t != "" for t in items):
        raise LoRATargetError(
            f"targets must be a non-empty glob, regex or module type (or a list), got {targets!r}",
            path="targets",
        )
    return items


def _sites_of(model: nn.Module, name: str, module: nn.Module, explicit: bool) -> list[LoRASite]:
    from ..optimize._qkv import _RowSlice

    if isinstance(module, _RowSlice):
        owner = name.rpartition(".")[0]
        return [LoRASite(name, owner, "qkv_weight", "generic", (module.start, module.stop))]
    rule = _rule(module)
    if rule is not None:
        kind, params = rule
        return [LoRASite(name, name, p, kind) for p in params]
    if explicit and _own_params(module):
        raise LoRATargetError(
            f"LoRA cannot adapt {name!r} ({type(module).__name__}); supported types: "
            f"{_type_names()} (add one with register_lora_layer)",
            path="targets",
        )
    return []


def lora_sites(model: nn.Module, targets: Targets) -> list[LoRASite]:
    """The weights ``targets`` select in ``model`` (nothing is changed)."""
    items = _as_targets(targets)
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    inside_mha = {f"{n}.out_proj" for n, m in modules.items()
                  if isinstance(m, nn.MultiheadAttention)}
    chosen: dict[str, None] = {}
    for target in items:
        if isinstance(target, type):
            hit = [n for n in modules if isinstance(modules[n], target)]
        else:
            hit = [n for n in names if _matches(n, target)]
        if not hit:
            raise _no_match(target, names)
        chosen.update(dict.fromkeys(hit))
    sites: dict[tuple[str, str, Any], LoRASite] = {}
    for name in chosen:
        found = _sites_of(model, name, modules[name], explicit=True)
        if not found and not _own_params(modules[name]):  # a container: its layers
            for sub, m in modules[name].named_modules(prefix=name):
                if sub != name and sub not in inside_mha:
                    found += _sites_of(model, sub, m, explicit=False)
        for s in found:
            if s.target not in inside_mha:
                sites.setdefault((s.host, s.param, s.rows), s)
    if not sites:
        raise LoRATargetError(
            f"targets {items!r} select no weight-bearing module; supported types: {_type_names()}",
            path="targets",
        )
    return list(sites.values())


def _no_match(target: Target, names: list[str]) -> LoRATargetError:
    what = target.__name__ if isinstance(target, type) else str(target)
    pool = [*names, *dict.fromkeys(n.rsplit(".", 1)[-1] for n in names)]
    hint = suggest(what, pool) if isinstance(target, str) else ""
    leaves = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
    return LoRATargetError(
        f"target {what!r} matches no module{hint}; module names end in: "
        f"{', '.join(leaves[:12])}{', ...' if len(leaves) > 12 else ''}",
        path="targets",
    )


def _weight_shape(model: nn.Module, site: LoRASite) -> tuple[int, ...]:
    shape = tuple(model.get_submodule(site.host).get_parameter(site.param).shape)
    if site.rows is not None:
        shape = (site.rows[1] - site.rows[0], *shape[1:])
    return shape


def _check_site(model: nn.Module, site: LoRASite, rank: int, dora: bool) -> None:
    shape = _weight_shape(model, site)
    host = model.get_submodule(site.host)
    if isinstance(host, LoRAHost):
        if host.lora_merged:
            raise LoRAStateError(f"{site.host!r} holds merged adapters: unmerge_lora first")
        if site.key in host.lora_adapters:
            raise LoRAStateError(f"{site.host}.{site.param} already has a LoRA adapter")
    where = f"{site.target}.{site.param.rsplit('.', 1)[-1]}"
    if len(shape) == 1:
        if dora:
            raise LoRATargetError(
                f"dora=True needs a matrix or conv weight; {where!r} is a vector {shape}",
                path="dora",
            )
        return
    rows, cols = shape[1:] if site.kind == "stacked" else matrix_shape(shape, site.kind == "hf_conv1d")
    if rank > min(rows, cols):
        raise LoRATargetError(
            f"rank={rank} exceeds the dims of {where!r} ({rows}x{cols} as a matrix): "
            f"use rank <= {min(rows, cols)}",
            path="rank",
        )


def _one_input(cls: type) -> bool:
    """Whether ``cls.forward`` takes exactly one input (``LMHead``'s ``logits_to_keep`` does not)."""
    params = list(inspect.signature(getattr(cls, "forward")).parameters.values())[1:]  # noqa: B009
    return len(params) == 1 and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def _fast_ok(host: nn.Module, kind: str, dora: bool) -> bool:
    if (dora and kind in ("embedding", "hf_conv1d")) or not _one_input(getattr(host, "lora_base_class", type(host))):
        return False
    if kind == "conv":
        return bool(host.groups == 1 and host.padding_mode == "zeros")
    return kind != "generic"


def install(model: nn.Module, site: LoRASite, options: dict[str, Any]) -> LoRADelta:
    """Attach one adapter (``options``: rank, alpha, rslora, dora, dropout) — no checks."""
    host: Any = model.get_submodule(site.host)
    weight = host.get_parameter(site.param)
    if not isinstance(host, LoRAHost):
        swap_class(host, LoRAHost, "LoRA")
        host.lora_adapters = nn.ModuleDict()
        host.lora_merged = False
    part = weight if site.rows is None else weight[site.rows[0] : site.rows[1]]
    delta = LoRADelta(
        tuple(part.shape), options["rank"], alpha=options["alpha"], rslora=options["rslora"],
        dora=options["dora"], dropout=options["dropout"], transpose=site.kind == "hf_conv1d",
        rows=site.rows, stacked=site.kind == "stacked", device=weight.device, dtype=weight.dtype,
    )
    delta.init_magnitude(part.detach())
    delta.train(host.training)
    delta.site = site
    host.lora_adapters[site.key] = delta
    single = len(host.lora_adapters) == 1 and site.rows is None and site.param == "weight"
    host.lora_kind = site.kind if single and _fast_ok(host, site.kind, delta.dora) else "generic"
    parent_name, _, leaf = site.target.rpartition(".")
    parent = model.get_submodule(parent_name)
    fused_rows = site.rows is not None
    if isinstance(parent, MultiHeadAttention) and leaf in ("q_proj", "k_proj", "v_proj") \
            and not fused_rows:
        swap_class(parent, UnfusedQKV, "LoRA")
    return delta


def apply_lora(
    model: nn.Module,
    targets: Targets,
    *,
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    dora: bool = False,
    rslora: bool = False,
) -> list[str]:
    """Add LoRA adapters (in place) to the modules ``targets`` selects; returns their names.

    ``ΔW = (α / r) B A`` (``α / √r`` with ``rslora``), ``α`` defaulting to ``rank``;
    ``dora`` adds DoRA's per-output magnitude; ``dropout`` drops the adapter's input on
    the Linear/Conv/Conv1D fast paths (not elsewhere). Afterwards only adapter parameters
    require gradients. Bad targets, ranks or options raise :class:`LoRATargetError` (a
    ``SpecError``) and leave ``model`` untouched.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LoRATargetError(f"rank must be a positive int, got {rank!r}", path="rank")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float)
                              or alpha <= 0):
        raise LoRATargetError(f"alpha must be a positive number, got {alpha!r}", path="alpha")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise LoRATargetError(f"dropout must be in [0, 1), got {dropout!r}", path="dropout")
    sites = lora_sites(model, targets)
    for site in sites:
        _check_site(model, site, rank, dora)
    options = {"rank": rank, "alpha": float(rank if alpha is None else alpha),
               "rslora": bool(rslora), "dora": bool(dora), "dropout": float(dropout)}
    for site in sites:
        install(model, site, options)
    freeze_base(model)
    return list(dict.fromkeys(s.target for s in sites))


def freeze_base(model: nn.Module) -> None:
    """Only adapter parameters require gradients."""
    adapters = {id(p) for p in lora_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in adapters)


def hosts(model: nn.Module) -> list[tuple[str, Any]]:
    """Every module carrying adapters, by name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRAHost)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (A, B, full deltas, DoRA magnitudes) — for the optimiser."""
    return [p for _, m in hosts(model) for p in m.lora_adapters.parameters()]


def _require(model: nn.Module, merged: bool) -> list[tuple[str, Any]]:
    found = hosts(model)
    if not found:
        raise LoRAStateError("the model has no LoRA adapters (apply_lora or load_adapters first)")
    wrong = [n for n, h in found if h.lora_merged != merged]
    if wrong:
        state = "already merged" if not merged else "not merged"
        raise LoRAStateError(f"the adapters of {wrong[0]!r} are {state}")
    return found


def _tied(model: nn.Module, found: Iterable[tuple[str, Any]]) -> None:
    users: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        users.setdefault(id(p), []).append(name)
    for name, host in found:
        for param, _ in host.lora_targets():
            names = users[id(host.get_parameter(param))]
            if len(names) > 1:
                raise LoRAStateError(
                    f"cannot merge into {name}.{param}: the weight is tied to "
                    f"{', '.join(n for n in names if n != f'{name}.{param}')}, which would change too"
                )


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (in place; forward then costs nothing extra).
    Merging twice, or a tied weight, raises :class:`LoRAStateError` (nothing changes)."""
    found = _require(model, merged=False)
    _tied(model, found)
    for _, host in found:
        for param, delta in host.lora_targets():
            delta.merge_into(host.get_parameter(param).data)
        host.lora_merged = True
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora`: the base weights come back (to rounding, ≤ 1e-6)."""
    found = _require(model, merged=True)
    for _, host in found:
        for param, delta in reversed(list(host.lora_targets())):
            delta.unmerge_from(host.get_parameter(param).data)
        host.lora_merged = False
    return model


def remove_lora(model: nn.Module, *, merge: bool = False) -> nn.Module:
    """Drop every adapter (folding it into the weights first when ``merge``) and restore
    the modules' classes; parameters become trainable again."""
    found = hosts(model)
    if merge and found and not all(h.lora_merged for _, h in found):
        merge_lora(model)
    elif not merge and any(h.lora_merged for _, h in found):
        unmerge_lora(model)
    for _, host in found:
        del host.lora_adapters
        for attr in ("lora_merged", "lora_kind"):
            host.__dict__.pop(attr, None)
        restore_class(host)
    for m in model.modules():
        if isinstance(m, UnfusedQKV):
            restore_class(m)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
