"""Coupled dimensions of a spec-built network: channel *spaces* tied into groups.

A space is one set of channels (or heads, or experts) that a node's weights index
along one tensor dimension. Walking the spec's DAG, a per-block rule
(:mod:`.rules`, :mod:`.heads`) labels each parameter dimension with the space it
indexes and ties spaces that must shrink together (an identity shortcut ties a block's
output to its input, a depthwise convolution ties its output to its input, an ``add``
merge ties all its inputs). The union of tied spaces is a *group*: pruning removes the
same units from every member. A frozen group (the network's inputs and outputs, a
dimension a LayerNorm normalises, a block no rule knows) keeps all its units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...spec import NetworkSpec, NodeSpec
from ._common import PruneError

__all__ = ["Chan", "ChannelGraph", "Dim", "RuleContext", "build_graph", "register_rule"]

#: The channels flowing along an edge: one space, or several concatenated.
Chan = tuple[int, ...]


@dataclass(frozen=True)
class Dim:
    """A tensor dimension indexed by ``chan``: unit ``u`` covers indices
    ``u * inner ... u * inner + inner - 1``. ``local`` marks a grouped convolution's
    input dimension, which indexes the channels *within* one group."""

    chan: Chan
    inner: int = 1
    local: bool = False


@dataclass
class Space:
    size: int
    groups: int = 1
    multiple: int = 1
    frozen: str | None = None
    owner: str = ""


@dataclass
class ChannelGraph:
    """Spaces, their ties, and the labelled dimensions of every parameter and buffer
    (by state-dict key); ``respec`` maps a node id to the rule rewriting its params."""

    spaces: list[Space] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    labels: dict[str, dict[int, Dim]] = field(default_factory=dict)
    respec: dict[str, Callable[[Callable[[Chan], int]], dict[str, Any]]] = field(
        default_factory=dict
    )
    opaque: list[str] = field(default_factory=list)

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def groups(self) -> dict[int, list[int]]:
        """Root space -> member spaces."""
        out: dict[int, list[int]] = {}
        for s in range(len(self.spaces)):
            out.setdefault(self.find(s), []).append(s)
        return out

    def frozen(self, root: int) -> str | None:
        """Why the group of ``root`` keeps all its units (``None``: prunable)."""
        for s in self.groups()[root]:
            if self.spaces[s].frozen:
                return self.spaces[s].frozen
        return None


class RuleContext:
    """What a block rule sees: its node, module and input channels; it creates spaces,
    ties and freezes them, labels its parameters and says how to rewrite its params."""

    def __init__(
        self,
        graph: ChannelGraph,
        node: NodeSpec,
        module: Any,
        out_size: int,
        prefix: str | None = None,
    ):
        self.graph, self.node, self.out_size = graph, node, out_size
        self.module: Any = module  # blocks are duck-typed by the rules
        self.params: dict[str, Any] = dict(node.params)
        self.prefix = f"nodes.{node.id}." if prefix is None else prefix
        self.in_size = out_size

    def space(self, size: int, *, groups: int = 1, multiple: int = 1) -> Chan:
        """A fresh space of ``size`` units (``groups``: a grouped conv's group structure)."""
        self.graph.spaces.append(Space(size, groups, multiple, owner=self.node.id))
        self.graph.parent.append(len(self.graph.parent))
        return (len(self.graph.spaces) - 1,)

    def tie(self, a: Chan, b: Chan) -> None:
        """``a`` and ``b`` are the same channels (component-wise for concatenations)."""
        if len(a) != len(b):
            raise PruneError(
                f"node {self.node.id!r} ({self.node.block}): cannot tie a concatenation of "
                f"{len(a)} parts to one of {len(b)} parts"
            )
        g = self.graph
        for x, y in zip(a, b, strict=True):
            rx, ry = g.find(x), g.find(y)
            if rx == ry:
                continue
            sx, sy = g.spaces[rx], g.spaces[ry]
            if sx.size != sy.size:
                raise PruneError(
                    f"node {self.node.id!r} ({self.node.block}): coupled dimensions of "
                    f"{sx.size} and {sy.size} channels"
                )
            g.parent[ry] = rx
            sx.groups = max(sx.groups, sy.groups)
            sx.multiple = max(sx.multiple, sy.multiple)
            sx.frozen = sx.frozen or sy.frozen

    def freeze(self, chan: Chan, reason: str) -> None:
        for s in chan:
            space = self.graph.spaces[self.graph.find(s)]
            space.frozen = space.frozen or f"{reason} (node {self.node.id!r})"

    def constrain(self, chan: Chan, *, groups: int = 1, multiple: int = 1) -> None:
        """Kept units of ``chan`` form ``groups`` equal groups / a multiple of ``multiple``."""
        for s in chan:
            space = self.graph.spaces[self.graph.find(s)]
            space.groups = max(space.groups, groups)
            space.multiple = max(space.multiple, multiple)

    def label(self, name: str, *dims: Dim | Chan | None) -> None:
        """Label the dimensions of ``module.<name>`` (a parameter or buffer), if present."""
        prefix, _, attr = name.rpartition(".")
        try:
            owner = self.module.get_submodule(prefix) if prefix else self.module
        except AttributeError:
            return
        if getattr(owner, attr, None) is None:
            return
        key = self.prefix + name
        tensor = getattr(owner, attr)
        entry = self.graph.labels.setdefault(key, {})
        for i, d in enumerate(dims):
            if d is not None:
                entry[i] = d if isinstance(d, Dim) else Dim(d)
                self._check_size(key, tensor, i, entry[i])

    def _check_size(self, key: str, tensor: Any, i: int, d: Dim) -> None:
        """The traced channels must cover the tensor's dimension exactly (they do not when
        the input's layout is not the one assumed, e.g. channels-first 1-D data)."""
        spaces = [self.graph.spaces[s] for s in d.chan]
        traced = d.inner * sum(s.size // s.groups if d.local else s.size for s in spaces)
        if tensor.dim() <= i or tensor.shape[i] != traced:
            raise PruneError(
                f"node {self.node.id!r} ({self.node.block}): {key} has "
                f"{tensor.shape[i] if tensor.dim() > i else 'no'} entries along dim {i} where "
                f"{traced} channels were traced; this input's channel layout is not one "
                "structured pruning follows (e.g. channels-first 1-D data)"
            )

    def label_module(self, prefix: str, out: Chan | Dim | None, inp: Chan | Dim | None) -> None:
        """Label a conv / linear / norm module at ``prefix`` by its kind."""
        sub = self.module.get_submodule(prefix) if prefix else self.module
        p = f"{prefix}." if prefix else ""
        if isinstance(sub, nn.modules.conv._ConvNd | nn.Linear):
            self.label(p + "weight", out, inp)
            self.label(p + "bias", out)
        else:  # norm layers: every per-channel tensor
            for name in ("weight", "bias", "running_mean", "running_var"):
                self.label(p + name, out)

    def on_respec(self, fn: Callable[[Callable[[Chan], int], dict[str, Any]], dict[str, Any]]):
        """``fn(keep, params) -> new params``; ``keep(chan)`` is the new size of ``chan``."""
        params = self.params
        self.graph.respec[self.node.id] = lambda keep: fn(keep, dict(params))


Rule = Callable[[RuleContext, Chan], Chan]
_RULES: dict[str, Rule] = {}


def register_rule(*blocks: str) -> Callable[[Rule], Rule]:
    """Register how the channels of the named blocks couple."""

    def wrap(fn: Rule) -> Rule:
        for b in blocks:
            _RULES[b] = fn
        return fn

    return wrap


def channel_size(shape: tuple[int, ...]) -> int:
    """Channels of a per-sample shape: ``C`` of ``(C, H, W)`` / ``(C,)``, ``D`` of ``(T, D)``."""
    if not shape:
        return 1
    return shape[-1] if len(shape) == 2 else shape[0]


def _merge(ctx: RuleContext, node: NodeSpec, chans: list[Chan]) -> Chan:
    if len(chans) == 1:
        return chans[0]
    if node.merge in ("add", "mul", "gate"):  # element-wise: the same channels everywhere
        for c in chans[1:]:
            ctx.tie(chans[0], c)
        return chans[0]
    if node.merge == "concat" and node.merge_dim == 0:
        return tuple(s for c in chans for s in c)
    for c in chans:  # a concatenation along another dimension: keep its inputs whole
        ctx.freeze(c, f"a {node.merge!r} merge along dimension {node.merge_dim}")
    out = ctx.space(sum(ctx.graph.spaces[s].size for s in chans[0]))
    ctx.freeze(out, f"a {node.merge!r} merge along dimension {node.merge_dim}")
    return out


def _opaque(ctx: RuleContext, inp: Chan) -> Chan:
    """A block no rule knows: its input and output keep every channel."""
    ctx.freeze(inp, f"input of block {ctx.node.block!r}, which has no pruning rule")
    out = ctx.space(ctx.out_size)
    ctx.freeze(out, f"output of block {ctx.node.block!r}, which has no pruning rule")
    ctx.graph.opaque.append(ctx.node.id)
    return out


def build_graph(
    model: Any, spec: NetworkSpec, shapes: Mapping[str, tuple[int, ...]]
) -> ChannelGraph:
    """The :class:`ChannelGraph` of a spec-built ``model`` (``shapes``: per-sample output
    shape of every input and node)."""
    from ...spec_checks import topological_order
    from . import heads, rules  # noqa: F401 (registers the rules)

    graph = ChannelGraph()
    chans: dict[str, Chan] = {}
    for spec_input in spec.inputs:
        ctx = RuleContext(graph, NodeSpec(spec_input.name, "input"), model, 1)
        chans[spec_input.name] = ctx.space(channel_size(tuple(spec_input.shape)))
        ctx.freeze(chans[spec_input.name], "a network input")
    nodes = {n.id: n for n in spec.nodes}
    for node_id in topological_order(spec) or []:
        node = nodes[node_id]
        module = model.nodes[node_id]
        ctx = RuleContext(graph, node, module, channel_size(shapes[node_id]))
        if node.merge == "args":
            for name in node.inputs:
                ctx.freeze(chans[name], "an input passed as a separate argument")
            chans[node_id] = _opaque(ctx, chans[node.inputs[0]])
            continue
        inp = _merge(ctx, node, [chans[name] for name in node.inputs])
        ctx.in_size = sum(graph.spaces[s].size for s in inp)
        rule = _RULES.get(node.block, _opaque)
        chans[node_id] = rule(ctx, inp)
    for out in spec.outputs:
        RuleContext(graph, nodes[out], model, 1).freeze(chans[out], "a network output")
    return graph
