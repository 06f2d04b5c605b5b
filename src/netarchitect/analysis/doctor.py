"""The gradient-flow and stability doctor.

``diagnose`` runs a few forward/backward passes on a copy of the model (the model
itself is not modified) and reports, in execution order:

* per-layer gradient norms and gradient/weight ratios of every weight matrix/kernel
  (parameters with two or more dimensions, ordered by the first call of their module);
* activation mean/std at the output of every leaf module (does init keep the variance?);
* the fraction of exactly-zero ReLU outputs (``nn.ReLU`` and functional ``relu`` alike,
  seen at the ATen level) and of saturated sigmoid/tanh outputs;
* the first operator (and its module path) producing NaN/Inf, forward or backward;
* flags with the thresholds that raised them, a verdict and suggested fixes.

Without ``loss_fn``, the loss is the mean squared error between the outputs and a fixed
(seeded) standard-normal target: bounded below, and its gradient never vanishes at the
output, so small gradients deeper in the network come from the network itself.
"""

from __future__ import annotations

import copy
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from ._common import EagerDispatchMode, Inputs, call_model, first_tensor, is_meta, tensors_in
from ._tracking import ModuleTracker, in_backward
from .flop_formulas import classify

__all__ = [
    "THRESHOLDS",
    "ActivationStat",
    "DoctorReport",
    "Flag",
    "LayerGrad",
    "NonFinite",
    "default_loss",
    "diagnose",
]

THRESHOLDS: dict[str, float] = {
    "vanishing_ratio": 1e-3,
    "vanishing_abs": 1e-8,
    "exploding_ratio": 1e3,
    "exploding_abs": 1e3,
    "update_ratio": 1e-1,
    "dead_relu": 0.9,
    "saturation": 0.5,
    "saturation_margin": 0.01,
    "activation_std_ratio": 1e2,
    "loss_growth": 10.0,
}
"""Flag thresholds (stated in every report):

* ``vanishing``: grad-norm(first weight layer) / grad-norm(last) < ``vanishing_ratio``,
  or the first layer's grad norm < ``vanishing_abs``;
* ``exploding``: that ratio > ``exploding_ratio``, any weight grad norm >
  ``exploding_abs``, or a non-finite gradient;
* ``large_updates``: ``lr * grad_norm / weight_norm`` > ``update_ratio`` for a layer;
* ``dead_relu``: more than ``dead_relu`` of a ReLU's outputs are exactly zero;
* ``saturation``: more than ``saturation`` of sigmoid/tanh outputs lie within
  ``saturation_margin`` of their bounds;
* ``activation_collapse``/``activation_growth``: std of the last leaf module's output over
  the first's is below ``1/activation_std_ratio`` / above ``activation_std_ratio``;
* ``diverging``: with ``steps > 1``, final loss > ``loss_growth`` x the first loss;
* ``nonfinite``: an operator produced NaN/Inf.
"""

_LOG_LIKE = {"log", "log2", "log10", "log1p", "xlogy"}
_ROOT_LIKE = {"sqrt", "rsqrt", "pow"}
_DIV_LIKE = {"div", "reciprocal", "remainder", "fmod"}


@dataclass
class LayerGrad:
    """Gradient statistics of one weight parameter."""

    path: str
    name: str
    grad_norm: float
    weight_norm: float

    @property
    def ratio(self) -> float:
        return self.grad_norm / self.weight_norm if self.weight_norm > 0 else math.inf


@dataclass
class ActivationStat:
    """Output statistics of one leaf module call (first call only)."""

    path: str
    type: str
    mean: float
    std: float
    nonfinite: int


@dataclass
class NonFinite:
    """Where NaN/Inf first appeared (``path`` is None outside the model, e.g. in the loss)."""

    path: str | None
    op: str
    phase: str
    step: int
    inputs_finite: bool


@dataclass
class Flag:
    """A problem found, the threshold that raised it, and what to try."""

    name: str
    message: str
    threshold: str
    suggestions: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    """Result of :func:`diagnose`; ``healthy`` when nothing was flagged."""

    layers: list[LayerGrad]
    activations: list[ActivationStat]
    dead_relu: dict[str, float]
    saturation: dict[str, float]
    nonfinite: NonFinite | None
    losses: list[float]
    flags: list[Flag]
    lr: float
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))

    @property
    def healthy(self) -> bool:
        return not self.flags

    @property
    def suggestions(self) -> list[str]:
        return list(dict.fromkeys(s for flag in self.flags for s in flag.suggestions))

    @property
    def verdict(self) -> str:
        if self.healthy:
            return "healthy: no problems found"
        names = ", ".join(flag.name for flag in self.flags)
        return f"{len(self.flags)} problem(s) found: {names}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "healthy": self.healthy,
            "flags": [asdict(f) for f in self.flags],
            "suggestions": self.suggestions,
            "layers": [{**asdict(g), "ratio": g.ratio} for g in self.layers],
            "activations": [asdict(a) for a in self.activations],
            "dead_relu": dict(self.dead_relu),
            "saturation": dict(self.saturation),
            "nonfinite": asdict(self.nonfinite) if self.nonfinite else None,
            "losses": list(self.losses),
            "lr": self.lr,
            "thresholds": dict(self.thresholds),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), default=str, **kwargs)

    def render(self, console: Console | None = None) -> str:
        """Render with rich; prints to ``console`` when given and returns the text."""
        buffer = Console(file=io.StringIO(), width=console.width if console else 120, record=True)
        for target in [buffer] + ([console] if console is not None else []):
            self._print(target)
        return buffer.export_text()

    def _print(self, out: Console) -> None:
        out.print(f"Verdict: {self.verdict}", highlight=False)
        if self.flags:
            flags = Table(title="Problems")
            for column in ("Flag", "Finding", "Threshold"):
                flags.add_column(column)
            for flag in self.flags:
                flags.add_row(flag.name, flag.message, flag.threshold)
            out.print(flags)
            out.print("Suggested fixes:", highlight=False)
            for suggestion in self.suggestions:
                out.print(f"  - {suggestion}", highlight=False)
        layers = Table(title="Gradient flow (weights, execution order)")
        for column in ("Layer", "Grad norm", "Weight norm", "Grad/weight"):
            layers.add_column(column, justify="left" if column == "Layer" else "right")
        for g in self.layers:
            layers.add_row(g.name, f"{g.grad_norm:.3e}", f"{g.weight_norm:.3e}", f"{g.ratio:.3e}")
        out.print(layers)
        acts = Table(title="Activations through depth (leaf modules)")
        for column in ("Module", "Type", "Mean", "Std", "Non-finite"):
            acts.add_column(column, justify="left" if column in ("Module", "Type") else "right")
        for a in self.activations:
            acts.add_row(a.path, a.type, f"{a.mean:.3e}", f"{a.std:.3e}", str(a.nonfinite))
        out.print(acts)
        for title, values in (
            ("Dead ReLU fraction", self.dead_relu),
            ("Saturation", self.saturation),
        ):
            if values:
                text = ", ".join(f"{p or '<root>'}: {v:.2f}" for p, v in values.items())
                out.print(f"{title}: {text}", highlight=False)
        if self.losses:
            out.print("Loss: " + ", ".join(f"{v:.4g}" for v in self.losses), highlight=False)
        thresholds = ", ".join(f"{k}={v:g}" for k, v in self.thresholds.items())
        out.print(f"Thresholds: {thresholds}", highlight=False)


def default_loss(output: Any) -> torch.Tensor:
    """Mean squared error of every floating-point output against a seeded N(0, 1) target."""
    outs = [t for t in tensors_in(output) if t.is_floating_point()]
    if not outs:
        raise ValueError("diagnose: the model returned no floating-point tensor; pass loss_fn=")
    generator = torch.Generator().manual_seed(0)
    total = outs[0].new_zeros(())
    for t in outs:
        target = torch.randn(t.shape, generator=generator).to(t.device, t.dtype)
        total = total + (t - target).pow(2).mean()
    return total


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _float_tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tensors_in(obj) if t.is_floating_point() and not t.is_meta]


class _Watcher(EagerDispatchMode):
    """Finds the first op producing NaN/Inf and collects ReLU/sigmoid/tanh statistics."""

    def __init__(self, tracker: ModuleTracker, margin: float) -> None:
        super().__init__()
        self.tracker = tracker
        self.margin = margin
        self.step = 0
        self.collect = True
        self.first_bad: NonFinite | None = None
        self.zero: dict[str, list[int]] = {}
        self.saturated: dict[str, list[int]] = {}

    def _path(self) -> str | None:
        paths = self.tracker.paths()
        return paths[-1] if paths else None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        info = classify(func)
        if info.kind == "zero":
            return out
        if self.first_bad is None:
            outs = _float_tensors(out)
            if outs and not all(_finite(t) for t in outs):
                inputs_ok = all(_finite(t) for t in _float_tensors((args, kwargs)))
                phase = "backward" if in_backward() else "forward"
                self.first_bad = NonFinite(self._path(), info.display, phase, self.step, inputs_ok)
        if self.collect and not in_backward() and isinstance(out, torch.Tensor):
            self._activation_stats(info.name, out)
        return out

    def _activation_stats(self, name: str, out: torch.Tensor) -> None:
        if name == "relu":
            hits = int((out == 0).sum())
            table = self.zero
        elif name == "sigmoid":
            hits = int(((out < self.margin) | (out > 1 - self.margin)).sum())
            table = self.saturated
        elif name == "tanh":
            hits = int((out.abs() > 1 - self.margin).sum())
            table = self.saturated
        else:
            return
        counts = table.setdefault(self._path() or "", [0, 0])
        counts[0] += hits
        counts[1] += out.numel()


def _weights_in_order(model: nn.Module, order: list[str]) -> list[tuple[str, str, nn.Parameter]]:
    """``(module path, parameter name, parameter)`` of weights (ndim >= 2), execution order."""
    rank = {path: i for i, path in enumerate(order)}
    seen: set[int] = set()
    found = []
    for path, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if p.ndim < 2 or not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{path}.{local}" if path else local
            found.append((rank.get(path, len(rank)), path, name, p))
    found.sort(key=lambda item: item[0])
    return [(path, name, p) for _, path, name, p in found]


def _activation_stat(path: str, module: nn.Module, output: Any) -> ActivationStat | None:
    t = first_tensor(output)
    if t is None or not t.is_floating_point() or t.numel() == 0:
        return None
    values = t.detach().double()
    finite = values[torch.isfinite(values)]
    mean = float(finite.mean()) if finite.numel() else math.nan
    std = float(finite.std(unbiased=False)) if finite.numel() else math.nan
    return ActivationStat(
        path, type(module).__name__, mean, std, int(values.numel() - finite.numel())
    )


def diagnose(
    model: nn.Module,
    inputs: Inputs,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    steps: int = 1,
    lr: float = 1e-3,
) -> DoctorReport:
    """Check gradient flow and numerical stability of ``model`` on ``inputs``.

    ``loss_fn(output) -> scalar`` defaults to :func:`default_loss`. With ``steps > 1``
    plain SGD (``lr``) updates a copy of the model between passes to watch the loss;
    statistics are those of the first pass.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if is_meta(inputs, model):
        raise ValueError("diagnose needs real tensors; the model or inputs are on the meta device")
    loss_fn = loss_fn or default_loss
    work = copy.deepcopy(model).train()
    order: list[str] = []
    activations: list[ActivationStat] = []
    leaves = {name for name, m in work.named_modules() if not any(True for _ in m.children())}

    def on_pre(path: str, module: nn.Module, args: tuple[Any, ...]) -> None:
        if path not in order:
            order.append(path)

    def on_post(path: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if watcher.collect and path in leaves and all(a.path != path for a in activations):
            stat = _activation_stat(path, module, output)
            if stat is not None:
                activations.append(stat)

    tracker = ModuleTracker(work, pre=on_pre, post=on_post)
    watcher = _Watcher(tracker, THRESHOLDS["saturation_margin"])
    losses: list[float] = []
    layers: list[LayerGrad] = []
    grads_finite = True
    with torch.enable_grad():
        for step in range(steps):
            watcher.step, watcher.collect = step, step == 0
            work.zero_grad(set_to_none=True)
            with tracker, watcher:
                loss = loss_fn(call_model(work, inputs))
                losses.append(float(loss.detach()))
                if loss.requires_grad:
                    loss.backward()
            grads = [(p, p.grad) for p in work.parameters() if p.grad is not None]
            grads_finite = grads_finite and all(_finite(g) for _, g in grads)
            if step == 0:
                layers = [
                    LayerGrad(path, name, float(g.norm()), float(p.detach().norm()))
                    for path, name, p in _weights_in_order(work, order)
                    if (g := p.grad) is not None
                ]
            if watcher.first_bad is not None or not math.isfinite(losses[-1]):
                break
            if step + 1 < steps:
                with torch.no_grad():
                    for p, g in grads:
                        p.add_(g, alpha=-lr)
    return DoctorReport(
        layers=layers,
        activations=activations,
        dead_relu={p: c[0] / c[1] for p, c in watcher.zero.items()},
        saturation={p: c[0] / c[1] for p, c in watcher.saturated.items()},
        nonfinite=watcher.first_bad,
        losses=losses,
        flags=_flags(layers, activations, watcher, losses, lr, grads_finite),
        lr=lr,
    )


# ---------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------
def _nonfinite_flag(bad: NonFinite) -> Flag:
    op = bad.op.split(".")[-1]
    if bad.path is None:
        where = "<outside the model, e.g. the loss>"
    else:
        where = bad.path or "<root>"
    if not bad.inputs_finite:
        hint = "check the inputs and parameters: they already contain NaN/Inf"
    elif op in _LOG_LIKE:
        hint = f"check inputs to log at {where}: they must be > 0 (clamp or add an epsilon)"
    elif op in _ROOT_LIKE:
        hint = f"check inputs to {op} at {where}: negative or zero values"
    elif op in _DIV_LIKE:
        hint = f"check for division by zero at {where}"
    else:
        hint = f"check inputs to {op} at {where}"
    suggestions = [hint]
    if bad.phase == "backward" or bad.step > 0:
        suggestions += ["lower lr", "clip gradients (torch.nn.utils.clip_grad_norm_)"]
    return Flag(
        "nonfinite",
        f"{bad.op} produced NaN/Inf in module '{where}' ({bad.phase} pass, step {bad.step})",
        "any NaN/Inf",
        suggestions,
    )


def _gradient_flags(layers: list[LayerGrad], lr: float, grads_finite: bool) -> list[Flag]:
    t = THRESHOLDS
    flags = []
    if len(layers) >= 2:
        first, last = layers[0], layers[-1]
        ratio = first.grad_norm / last.grad_norm if last.grad_norm > 0 else math.inf
        if first.grad_norm < t["vanishing_abs"] or ratio < t["vanishing_ratio"]:
            flags.append(
                Flag(
                    "vanishing",
                    f"grad norm of first layer {first.name} is {first.grad_norm:.2e}, "
                    f"{ratio:.2e} x that of the last layer {last.name}",
                    f"first/last < {t['vanishing_ratio']:g} or first < {t['vanishing_abs']:g}",
                    [
                        "use pre-norm (normalise the input of each residual branch)",
                        "add residual connections",
                        "replace sigmoid/tanh with relu/gelu",
                        "use He (kaiming) initialisation",
                    ],
                )
            )
        elif ratio > t["exploding_ratio"]:
            flags.append(_exploding(f"first/last layer grad-norm ratio is {ratio:.2e}"))
    big = [g for g in layers if g.grad_norm > t["exploding_abs"]]
    if not grads_finite:
        flags.append(_exploding("some gradients are NaN/Inf"))
    elif big and not any(f.name == "exploding" for f in flags):
        flags.append(_exploding(f"grad norm of {big[0].name} is {big[0].grad_norm:.2e}"))
    fast = [g for g in layers if lr * g.ratio > t["update_ratio"]]
    if fast:
        flags.append(
            Flag(
                "large_updates",
                f"lr x grad/weight of {fast[0].name} is {lr * fast[0].ratio:.2e}",
                f"> {t['update_ratio']:g}",
                ["lower lr", "clip gradients (torch.nn.utils.clip_grad_norm_)"],
            )
        )
    return flags


def _exploding(message: str) -> Flag:
    t = THRESHOLDS
    return Flag(
        "exploding",
        message,
        f"first/last > {t['exploding_ratio']:g} or any > {t['exploding_abs']:g} or NaN",
        [
            "lower lr",
            "zero-init residual branches (last layer of each block)",
            "use pre-norm",
            "clip gradients (torch.nn.utils.clip_grad_norm_)",
        ],
    )


def _activation_flags(activations: list[ActivationStat], watcher: _Watcher) -> list[Flag]:
    t = THRESHOLDS
    flags = []
    dead = {p: c[0] / c[1] for p, c in watcher.zero.items() if c[0] / c[1] > t["dead_relu"]}
    if dead:
        path, frac = next(iter(dead.items()))
        flags.append(
            Flag(
                "dead_relu",
                f"{frac:.0%} of ReLU outputs are zero at '{path or '<root>'}'"
                + (f" (and {len(dead) - 1} more)" if len(dead) > 1 else ""),
                f"> {t['dead_relu']:g}",
                ["lower lr", "use leaky_relu/gelu", "check initialisation and biases"],
            )
        )
    sat = {p: c[0] / c[1] for p, c in watcher.saturated.items() if c[0] / c[1] > t["saturation"]}
    if sat:
        path, frac = next(iter(sat.items()))
        flags.append(
            Flag(
                "saturation",
                f"{frac:.0%} of sigmoid/tanh outputs are saturated at '{path or '<root>'}'",
                f"> {t['saturation']:g} within {t['saturation_margin']:g} of the bounds",
                ["replace sigmoid with relu/gelu", "normalise the inputs (or add a norm layer)"],
            )
        )
    stds = [a.std for a in activations if math.isfinite(a.std)]
    if len(stds) >= 2 and stds[0] > 0:
        ratio = stds[-1] / stds[0]
        limit = t["activation_std_ratio"]
        if ratio < 1 / limit or ratio > limit:
            name = "activation_collapse" if ratio < 1 else "activation_growth"
            flags.append(
                Flag(
                    name,
                    f"activation std goes from {stds[0]:.2e} (first leaf) to {stds[-1]:.2e} (last)",
                    f"ratio outside [{1 / limit:g}, {limit:g}]",
                    [
                        "use a variance-preserving initialisation (He/Xavier)",
                        "add normalisation layers (pre-norm)",
                        "zero-init residual branches",
                    ],
                )
            )
    return flags


def _flags(
    layers: list[LayerGrad],
    activations: list[ActivationStat],
    watcher: _Watcher,
    losses: list[float],
    lr: float,
    grads_finite: bool,
) -> list[Flag]:
    flags = []
    bad = watcher.first_bad
    if bad is not None:
        flags.append(_nonfinite_flag(bad))
        if bad.step == 0 and bad.phase == "forward":
            return flags  # gradients of a NaN forward pass say nothing more
    flags += _gradient_flags(layers, lr, grads_finite)
    flags += _activation_flags(activations, watcher)
    if len(losses) > 1:
        first, final = losses[0], losses[-1]
        growth = THRESHOLDS["loss_growth"]
        if not math.isfinite(final) or final > growth * abs(first):
            flags.append(
                Flag(
                    "diverging",
                    f"loss went from {first:.4g} to {final:.4g} in {len(losses)} steps",
                    f"final > {growth:g} x first",
                    ["lower lr", "clip gradients (torch.nn.utils.clip_grad_norm_)"],
                )
            )
    return flags
