"""Parallel plans as data: which modules are FSDP units and which tensor-parallel style each
module takes, derived from block roles (:mod:`.roles`), printable, JSON-able, overridable."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from .errors import ParallelError
from .roles import Role, find_roles

__all__ = ["TP_STYLES", "ModulePlan", "ParallelPlan", "derive_plan"]

#: Tensor-parallel styles a plan entry may name (``None``: replicated).
TP_STYLES = {
    "colwise": "ColwiseParallel: weight rows (output features) split",
    "rowwise": "RowwiseParallel: weight columns (input features) split, outputs summed",
    "sequence": "SequenceParallel: a norm run on its sequence shard",
    "gather_input": "PrepareModuleInput: sequence shards gathered before the module",
    "shard_output": "PrepareModuleOutput: output split along the sequence",
}

_TP_BY_ROLE = {
    "attn_in": "colwise", "mlp_in": "colwise", "attn_out": "rowwise", "mlp_out": "rowwise",
}


@dataclass(frozen=True)
class ModulePlan:
    """What a plan does with one module: its ``role``, whether it is an FSDP unit, its TP style."""

    role: str = ""
    fsdp: bool = False
    tp: str | None = None

    def __post_init__(self) -> None:
        if self.tp is not None and self.tp not in TP_STYLES:
            raise ParallelError(
                f"unknown tensor-parallel style {self.tp!r}; use one of {sorted(TP_STYLES)}"
            )


@dataclass(frozen=True)
class ParallelPlan:
    """A parallel layout of one model: ``modules`` maps module paths (or globs, expanded by
    :meth:`resolve`) to :class:`ModulePlan`; ``tp`` is the tensor-parallel degree it was made
    for; ``fsdp`` picks FSDP2 (True) or DDP (False) across the data-parallel ranks;
    ``notes`` say why something was left replicated."""

    modules: Mapping[str, ModulePlan] = field(default_factory=dict)
    tp: int = 1
    fsdp: bool = True
    sequence_parallel: bool = False
    notes: tuple[str, ...] = ()

    @property
    def fsdp_units(self) -> list[str]:
        """Paths of the FSDP units (the root is always one too, applied last)."""
        return [p for p, m in self.modules.items() if m.fsdp]

    @property
    def tp_styles(self) -> dict[str, str]:
        """``{path: style}`` of every tensor-parallel module."""
        return {p: m.tp for p, m in self.modules.items() if m.tp is not None}

    def override(self, glob: str, **changes: Any) -> ParallelPlan:
        """A copy with ``changes`` (``fsdp=``, ``tp=``) applied to every entry matching ``glob``.

        A glob matching no entry adds it as written (it is checked against the model by
        :meth:`resolve`).
        """
        unknown = set(changes) - {"fsdp", "tp", "role"}
        if unknown:
            raise ParallelError(f"plan override {glob!r}: unknown fields {sorted(unknown)}")
        modules = dict(self.modules)
        hits = [p for p in modules if fnmatch.fnmatchcase(p, glob)] or [glob]
        for path in hits:
            modules[path] = replace(modules.get(path, ModulePlan()), **changes)
        return replace(self, modules=modules)

    def resolve(self, model: nn.Module) -> ParallelPlan:
        """The plan with every glob expanded to the model's module paths; an entry matching
        no module raises :class:`ParallelError`."""
        names = [n for n, _ in model.named_modules() if n]
        modules: dict[str, ModulePlan] = {}
        for key, entry in self.modules.items():
            hits = [n for n in names if fnmatch.fnmatchcase(n, key)]
            if not hits:
                from ..errors import suggest

                raise ParallelError(
                    f"plan entry {key!r} matches no module of {type(model).__name__}"
                    f"{suggest(key, names)}"
                )
            for name in hits:
                modules[name] = entry
        return replace(self, modules=modules)

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fsdp": self.fsdp,
            "sequence_parallel": self.sequence_parallel,
            "modules": {
                p: {"role": m.role, "fsdp": m.fsdp, "tp": m.tp} for p, m in self.modules.items()
            },
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParallelPlan:
        unknown = set(data) - {"tp", "fsdp", "sequence_parallel", "modules", "notes"}
        if unknown:
            raise ParallelError(f"unknown plan keys {sorted(unknown)}")
        modules = {}
        for path, entry in dict(data.get("modules", {})).items():
            extra = set(entry) - {"role", "fsdp", "tp"}
            if extra:
                raise ParallelError(f"plan entry {path!r}: unknown fields {sorted(extra)}")
            modules[path] = ModulePlan(**entry)
        tp = data.get("tp", 1)
        if not isinstance(tp, int) or tp < 1:
            raise ParallelError(f"plan tp must be a positive integer, got {tp!r}")
        return cls(
            modules=modules, tp=tp, fsdp=bool(data.get("fsdp", True)),
            sequence_parallel=bool(data.get("sequence_parallel", False)),
            notes=tuple(data.get("notes", ())),
        )

    def __str__(self) -> str:
        mode = "FSDP2" if self.fsdp else "DDP"
        head = f"ParallelPlan(data parallel: {mode}, tp={self.tp}"
        head += ", sequence parallel)" if self.sequence_parallel else ")"
        rows = [(p, m.role, "unit" if m.fsdp else "", m.tp or "") for p, m in self.modules.items()
                if m.fsdp or m.tp]
        width = [max([len(h), *(len(r[i]) for r in rows)])
                 for i, h in enumerate(("module", "role", "fsdp", "tp"))]
        titles = ("module", "role", "fsdp", "tp")
        lines = [head, "  ".join(h.ljust(w) for h, w in zip(titles, width, strict=True)).rstrip()]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in rows
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _tp_problems(roles: Mapping[str, Role], tp: int) -> tuple[list[str], list[str]]:
    """(refusals, notes) for sharding the roles over ``tp`` ranks."""
    errors: list[str] = []
    notes: list[str] = []
    for path, role in roles.items():
        if role.kind == "attention":
            for what, n in (("heads", role.heads), ("kv heads", role.kv_heads)):
                if n % tp and (what == "heads" or role.heads % tp == 0):
                    errors.append(f"{path}: {n} {what} do not divide over tp={tp}")
        elif role.kind == "mlp" and role.features % tp:
            errors.append(f"{path}: hidden size {role.features} does not divide over tp={tp}")
        elif role.kind == "fused_qkv":
            notes.append(
                f"{path}: fused q/k/v in_proj_weight left replicated (a column-wise split "
                "would cut across q, k and v, not whole heads)"
            )
    return errors, notes


def _attention_extras(model: nn.Module, roles: Mapping[str, Role]) -> list[str]:
    """Attention layers whose per-head extras (ALiBi/relative bias) cannot be sharded."""
    found = []
    for path, role in roles.items():
        attn = model.get_submodule(path) if role.kind == "attention" else None
        if getattr(attn, "pos_bias", None) is not None:
            found.append(f"{path}: a per-head position bias (pos={attn.pos!r}) "
                         "is not tensor-parallel")
    return found


def derive_plan(
    model: nn.Module,
    *,
    tp: int = 1,
    fsdp: bool = True,
    sequence_parallel: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ParallelPlan:
    """The plan for ``model`` from its block roles (:func:`~.roles.find_roles`).

    Every block is an FSDP unit (``fsdp=True``; DDP otherwise); with ``tp > 1`` q/k/v and
    MLP up/gate projections are column-wise, attention-out and MLP-down row-wise, so each
    rank holds whole heads (``heads / tp``) and a slice of the hidden layer. With
    ``sequence_parallel`` the norms between them run on sequence shards. A degree that
    does not divide a module's heads or hidden size raises :class:`ParallelError` naming
    the module and the numbers; ``overrides`` (``{glob: {"tp": None}}``) edit the result.
    """
    if not isinstance(tp, int) or tp < 1:
        raise ParallelError(f"tp must be a positive integer, got {tp!r}")
    roles = find_roles(model)
    modules = {p: ModulePlan(r.kind, fsdp=fsdp and r.kind == "block") for p, r in roles.items()}
    notes: list[str] = []
    batch_norms = [n for n, m in model.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if tp > 1:
        errors, notes = _tp_problems(roles, tp)
        errors += _attention_extras(model, roles)
        if errors:
            more = f" (and {len(errors) - 2} more)" if len(errors) > 2 else ""
            raise ParallelError("; ".join(errors[:2]) + more)
        for path, role in roles.items():
            if role.kind in _TP_BY_ROLE:
                modules[path] = replace(modules[path], tp=_TP_BY_ROLE[role.kind])
        if not any(m.tp for m in modules.values()):
            raise ParallelError(
                f"tp={tp}: {type(model).__name__} has no attention or MLP projections to shard"
            )
        if sequence_parallel:
            modules.update(_sequence_parallel_entries(model, roles, modules))
    elif sequence_parallel:
        raise ParallelError("sequence_parallel needs tp > 1")
    if batch_norms:
        notes.append(
            f"{batch_norms[0]} and {len(batch_norms) - 1} more: BatchNorm normalises each rank's "
            "share of the batch (torch.nn.SyncBatchNorm.convert_sync_batchnorm for global "
            "statistics)"
        )
    plan = ParallelPlan(modules, tp=tp, fsdp=fsdp, sequence_parallel=sequence_parallel,
                        notes=tuple(notes))
    for glob, changes in (overrides or {}).items():
        plan = plan.override(glob, **changes)
    return plan


def _sequence_parallel_entries(
    model: nn.Module, roles: Mapping[str, Role], modules: Mapping[str, ModulePlan]
) -> dict[str, ModulePlan]:
    """Norms on sequence shards; attention/MLP gather the sequence first; the embedding
    splits it and the head gathers it back (a Network with roles only)."""
    from ..network import Network

    if not isinstance(model, Network) or not {"embedding", "head"} <= set(model.roles):
        raise ParallelError(
            "sequence_parallel needs a spec-built model with an embedding and a head role"
        )
    out: dict[str, ModulePlan] = {}
    for path, role in roles.items():
        if role.kind == "norm" and not path.startswith(f"nodes.{model.roles['embedding']}."):
            out[path] = replace(modules[path], tp="sequence")
        elif role.kind in ("attention", "mlp"):
            out[path] = replace(modules[path], tp="gather_input")
    embed, head = f"nodes.{model.roles['embedding']}", f"nodes.{model.roles['head']}"
    out[embed] = replace(modules.get(embed, ModulePlan("embedding")), tp="shard_output")
    out[head] = replace(modules.get(head, ModulePlan("head")), tp="gather_input")
    return out


def plan_from(model: nn.Module, plan: Any, tp: int) -> ParallelPlan:
    """``plan`` ("auto", a :class:`ParallelPlan` or its dict) resolved against ``model``."""
    if isinstance(plan, str):
        if plan != "auto":
            raise ParallelError(f"plan must be 'auto', a ParallelPlan or a dict, got {plan!r}")
        plan = derive_plan(model, tp=tp)
    elif isinstance(plan, Mapping):
        plan = ParallelPlan.from_dict(plan)
    elif not isinstance(plan, ParallelPlan):
        raise ParallelError(
            f"plan must be 'auto', a ParallelPlan or a dict, got {type(plan).__name__}"
        )
    return plan.resolve(model)
