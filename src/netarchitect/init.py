"""Declarative, seeded weight initialisation.

Every parameter's random stream is derived from ``(seed, module path)``
(:func:`derive_seed`), never from a shared global generator. The same seed
therefore gives bit-identical weights whether a model is built on the CPU or
on ``meta`` and materialised later, in any process, in any construction order.

Initialisation happens in two layers:

1. every module's own ``reset_parameters()`` (children before parents, so a
   parent's scheme for its children wins), each under its derived seed;
2. an optional :class:`InitPolicy`: ordered rules mapping module types and/or
   path globs to initialisers; for each parameter the **first** matching rule
   applies.

Policies are data (``InitPolicy.from_config([...])``) so a spec can carry one
under its ``init:`` key::

    init:
      - {init: trunc_normal, modules: [Linear], args: {std: 0.02}}
      - {init: zeros, modules: [Linear], params: [bias]}
      - {init: zero_last_in_residual}
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import NetArchitectError, SpecError, suggest

__all__ = [
    "INITIALIZERS",
    "POLICIES",
    "InitPolicy",
    "InitRule",
    "derive_seed",
    "get_policy",
    "initialize",
    "materialize",
    "reset_all",
]

ZERO_LAST = "zero_last_in_residual"


def derive_seed(seed: int, path: str) -> int:
    """A 63-bit seed from ``seed`` and a module/parameter ``path`` (stable across processes)."""
    digest = hashlib.sha256(f"{int(seed)}/{path}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _trunc_normal(t: Tensor, g: torch.Generator, mean: float = 0.0, std: float = 0.02,
                  a: float | None = None, b: float | None = None) -> Tensor:
    lo = mean - 2 * std if a is None else a
    hi = mean + 2 * std if b is None else b
    return nn.init.trunc_normal_(t, mean=mean, std=std, a=lo, b=hi, generator=g)


INITIALIZERS: dict[str, Callable[..., Tensor]] = {
    "kaiming_normal": lambda t, g, a=0.0, mode="fan_in", nonlinearity="relu": nn.init.kaiming_normal_(
        t, a=a, mode=mode, nonlinearity=nonlinearity, generator=g),
    "kaiming_uniform": lambda t, g, a=0.0, mode="fan_in", nonlinearity="relu": nn.init.kaiming_uniform_(
        t, a=a, mode=mode, nonlinearity=nonlinearity, generator=g),
    "xavier_normal": lambda t, g, gain=1.0: nn.init.xavier_normal_(t, gain=gain, generator=g),
    "xavier_uniform": lambda t, g, gain=1.0: nn.init.xavier_uniform_(t, gain=gain, generator=g),
    "trunc_normal": _trunc_normal,
    "normal": lambda t, g, mean=0.0, std=1.0: nn.init.normal_(t, mean=mean, std=std, generator=g),
    "uniform": lambda t, g, a=0.0, b=1.0: nn.init.uniform_(t, a=a, b=b, generator=g),
    "orthogonal": lambda t, g, gain=1.0: nn.init.orthogonal_(t, gain=gain, generator=g),
    "zeros": lambda t, g: nn.init.zeros_(t),
    "ones": lambda t, g: nn.init.ones_(t),
    "constant": lambda t, g, value=0.0: nn.init.constant_(t, value),
}


_NONLINEARITIES = (
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu",
)
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{name}={value!r} must be a finite number")
    if abs(value) > _FLOAT32_MAX:
        raise SpecError(f"{name}={value!r} is outside the float32 range")
    return float(value)


def check_init_args(init: str, args: Mapping[str, Any]) -> None:
    """Raise :class:`SpecError` unless ``args`` are arguments ``init`` accepts, in range."""
    accepted = [p for p in inspect.signature(INITIALIZERS[init]).parameters if p not in ("t", "g")]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise SpecError(f"{init} takes no argument(s) {unknown}; it takes {accepted or 'none'}")
    for key, value in args.items():
        if key == "mode":
            if value not in ("fan_in", "fan_out"):
                raise SpecError(f"mode={value!r} must be 'fan_in' or 'fan_out'")
        elif key == "nonlinearity":
            if value not in _NONLINEARITIES:
                raise SpecError(f"nonlinearity={value!r} must be one of {', '.join(_NONLINEARITIES)}")
        else:
            _number(key, value)
    if args.get("std", 0.0) < 0:
        raise SpecError(f"std={args['std']!r} must be >= 0")
    if init in ("uniform", "trunc_normal") and "a" in args and "b" in args and args["a"] > args["b"]:
        raise SpecError(f"a={args['a']!r} must not exceed b={args['b']!r}")
    if init == "trunc_normal":
        mean, std = args.get("mean", 0.0), args.get("std", 0.02)
        lo, hi = args.get("a", mean - 2 * std), args.get("b", mean + 2 * std)
        if lo > hi:
            raise SpecError(f"the truncation interval [{lo}, {hi}] is empty")


@dataclass(frozen=True)
class InitRule:
    """Apply initialiser ``init`` to parameters ``params`` (globs) of matching modules.

    A module matches when its class name (or registered block name, or class)
    is in ``modules`` (empty: any) **and** its path matches one of ``names``
    (globs; empty: any). ``init="zero_last_in_residual"`` calls
    ``zero_init_last()`` on matching modules that define it (blocks opt in by
    implementing it: it zeroes the last norm or projection of a residual
    branch so the block starts as the identity).
    """

    init: str
    modules: tuple[Any, ...] = ()
    names: tuple[str, ...] = ()
    params: tuple[str, ...] = ("weight",)
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.init != ZERO_LAST and self.init not in INITIALIZERS:
            choices = [*INITIALIZERS, ZERO_LAST]
            raise SpecError(f"unknown initialiser {self.init!r}{suggest(str(self.init), choices)}", path="init")
        if not isinstance(self.args, Mapping):
            raise SpecError(f"must be a mapping, got {type(self.args).__name__}", path="args")
        try:
            if self.init != ZERO_LAST:
                check_init_args(self.init, self.args)
            elif self.args:
                raise SpecError(f"{ZERO_LAST} takes no arguments")
        except SpecError as exc:
            raise SpecError(str(exc), path="args") from None
        for name in ("modules", "names", "params"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str | type) for v in value):
                raise SpecError("must be a list of names", path=name)
        object.__setattr__(self, "modules", tuple(self.modules))
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "args", dict(self.args))

    def matches_module(self, path: str, module: nn.Module) -> bool:
        if self.modules:
            kinds = {type(module).__name__, getattr(type(module), "block_name", None)}
            if not any(m in kinds or (isinstance(m, type) and isinstance(module, m)) for m in self.modules):
                return False
        return not self.names or any(fnmatch.fnmatchcase(path, pat) for pat in self.names)

    def matches_param(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.params)


def _names(field_name: str, value: Any) -> tuple[Any, ...]:
    """A rule's ``modules``/``names``/``params``: a list (a lone string is one name)."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple):
        raise SpecError(f"must be a list of names, got {type(value).__name__}", path=field_name)
    return tuple(value)


@dataclass(frozen=True)
class InitPolicy:
    """Ordered :class:`InitRule` list; the first rule matching a parameter initialises it."""

    rules: tuple[InitRule, ...] = ()

    @classmethod
    def from_config(cls, config: Iterable[Mapping[str, Any]] | str) -> InitPolicy:
        """From plain data (a spec's ``init:`` list) or the name of a preset in :data:`POLICIES`."""
        if isinstance(config, str):
            return get_policy(config)
        rules = []
        allowed = {"init", "modules", "names", "params", "args"}
        for k, raw in enumerate(config):
            unknown = set(raw) - allowed
            if unknown:
                raise SpecError(f"unknown key(s) {sorted(unknown)}; use {sorted(allowed)}", path=f"init[{k}]")
            if "init" not in raw:
                raise SpecError("missing 'init' (the initialiser name)", path=f"init[{k}]")
            try:
                rules.append(InitRule(
                    init=raw["init"], modules=_names("modules", raw.get("modules", ())),
                    names=_names("names", raw.get("names", ())),
                    params=_names("params", raw.get("params", ("weight",))), args=raw.get("args", {})))
            except SpecError as exc:
                message = str(exc).split(": ", 1)[-1] if exc.path else str(exc)
                raise SpecError(message, path=f"init[{k}].{exc.path}" if exc.path else f"init[{k}]") from None
        return cls(tuple(rules))

    def _rule_for(self, path: str, module: nn.Module, pname: str) -> InitRule | None:
        return next(
            (r for r in self.rules if r.init != ZERO_LAST and r.matches_module(path, module)
             and r.matches_param(pname)),
            None,
        )

    def apply(self, module: nn.Module, seed: int) -> None:
        """Initialise ``module``'s parameters by the rules, each from its own derived seed."""
        for path, sub in module.named_modules():
            for rule in self.rules:
                if rule.init == ZERO_LAST and rule.matches_module(path, sub) and hasattr(sub, "zero_init_last"):
                    sub.zero_init_last()
            for pname, param in sub.named_parameters(recurse=False):
                rule = self._rule_for(path, sub, pname)
                if rule is None:
                    continue
                full = f"{path}.{pname}" if path else pname
                _init_tensor(param, rule, derive_seed(seed, f"{full}#policy"), full)

    def check(self, module: nn.Module) -> None:
        """Raise the :class:`SpecError` that :meth:`apply` would, without touching ``module``:
        each rule runs on a ``meta`` stand-in of every parameter it matches (no memory)."""
        for path, sub in module.named_modules():
            for pname, param in sub.named_parameters(recurse=False):
                rule = self._rule_for(path, sub, pname)
                if rule is not None:
                    full = f"{path}.{pname}" if path else pname
                    stand_in = torch.empty(param.shape, dtype=param.dtype, device="meta")
                    _init_tensor(stand_in, rule, 0, full)


def _init_tensor(param: Tensor, rule: InitRule, seed: int, path: str) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.empty(param.shape, dtype=param.dtype, device="meta" if param.is_meta else "cpu")
    try:
        INITIALIZERS[rule.init](target, g, **rule.args)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{rule.init} cannot initialise {path} of shape {tuple(param.shape)}: {exc}", path="init") from None
    if not param.is_meta:
        with torch.no_grad():
            param.copy_(target)


POLICIES: dict[str, InitPolicy] = {
    "default": InitPolicy(),
    "transformer": InitPolicy((
        InitRule("trunc_normal", modules=("Linear", "Embedding"), args={"std": 0.02}),
        InitRule("zeros", modules=("Linear",), params=("bias",)),
    )),
    "kaiming": InitPolicy((
        InitRule("kaiming_normal", modules=("Conv1d", "Conv2d", "Conv3d"), args={"mode": "fan_out"}),
        InitRule("zeros", modules=("Conv1d", "Conv2d", "Conv3d", "Linear"), params=("bias",)),
    )),
    "resnet_zero_init": InitPolicy((
        InitRule("kaiming_normal", modules=("Conv2d",), args={"mode": "fan_out"}),
        InitRule(ZERO_LAST),
    )),
}


def get_policy(name: str) -> InitPolicy:
    """A preset policy by name (``default``, ``transformer``, ``kaiming``, ``resnet_zero_init``)."""
    try:
        return POLICIES[name]
    except KeyError:
        raise SpecError(f"unknown init policy {name!r}{suggest(name, POLICIES)}", path="init") from None


def _resetter(module: nn.Module) -> Callable[[], None] | None:
    fn = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
    return fn if callable(fn) else None


def reset_all(module: nn.Module, seed: int) -> None:
    """Call every submodule's ``reset_parameters`` under a seed derived from its path.

    Children run before their parents. A module that owns parameters directly
    but has no ``reset_parameters`` cannot be (re)initialised and is an error.
    """
    missing = []
    # One fork for the whole walk. Seeding only the CPU generator is ~30x cheaper than
    # torch.manual_seed (which also visits every accelerator backend); a module whose
    # tensors live on an accelerator draws from that device's generator, so seed all.
    on_cpu = all(t.device.type in ("cpu", "meta") for t in (*module.parameters(), *module.buffers()))
    seed_fn = torch.default_generator.manual_seed if on_cpu else torch.manual_seed
    with torch.random.fork_rng(devices=[]):
        for path, sub in reversed(list(module.named_modules())):
            reset = _resetter(sub)
            if reset is None:
                if any(True for _ in sub.parameters(recurse=False)):
                    missing.append(path or type(sub).__name__)
                continue
            seed_fn(derive_seed(seed, path))
            reset()
    if missing:
        raise NetArchitectError(
            f"module(s) {missing} own parameters but have no reset_parameters(); "
            "give them one or build them directly on a real device")


def _random_seed() -> int:
    return int(torch.randint(0, 2**62, (1,), device="cpu").item())


def initialize(module: nn.Module, seed: int | None = None, policy: InitPolicy | str | Sequence[Mapping[str, Any]] | None = None) -> nn.Module:
    """(Re)initialise ``module`` in place: ``reset_parameters`` everywhere, then ``policy``
    (default: the module's own ``init_policy``, a spec-built network's ``init`` rules).

    With ``seed=None`` a seed is drawn from torch's global generator (so
    ``torch.manual_seed`` still makes runs repeatable).
    """
    seed = _random_seed() if seed is None else int(seed)
    if policy is None:
        policy = getattr(module, "init_policy", None)
    if policy is not None and not isinstance(policy, InitPolicy):
        policy = InitPolicy.from_config(policy)
    reset_all(module, seed)
    if policy is not None:
        policy.apply(module, seed)
    return module


def materialize(module: nn.Module, device: torch.device | str = "cpu", *, seed: int | None = None,
                policy: InitPolicy | str | Sequence[Mapping[str, Any]] | None = None) -> nn.Module:
    """Allocate a ``meta`` module's tensors on ``device`` and initialise them from ``seed``.

    Initialisation always runs on the CPU generator (then the module moves to
    ``device``), so the weights do not depend on the device.
    """
    device = torch.device(device)
    module.to_empty(device="cpu")
    initialize(module, seed, policy)
    if device.type != "cpu":
        module.to(device)
    return module
