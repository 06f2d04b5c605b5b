"""The classification-model contract, implemented once for every spec-built classifier.

A :class:`ClassifierNetwork` is a :class:`~netarchitect.network.Network` (so it keeps
``.spec``, rebuilds with ``build(model.spec)`` and returns any node's output with
``return_nodes``) plus three *roles* naming nodes of its spec:

- ``features``: the node :meth:`~ClassifierNetwork.forward_features` returns (the last
  feature map or token sequence, before pooling);
- ``stages``: the nodes :attr:`~ClassifierNetwork.feature_info` reports (stage outputs);
- ``reductions``: the stride of token-valued stages, which shapes alone cannot tell.

The spec's single output is the classifier (``head``); its input is the pre-logits
vector. Everything between ``features`` and ``head`` is the head.
``ClassifierNetwork(model.spec, **model.roles)`` rebuilds the full contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import Problem, SpecError, suggest
from ..init import materialize
from ..network import Network, NodeInfo
from ..registry import get_block, register_network_kind
from ..spec import NetworkSpec, load_spec

__all__ = ["ClassifierNetwork"]


def _channels(shape: tuple[int, ...]) -> int:
    """Channels of a per-sample shape: ``C`` of ``(C, H, W)`` or ``(C,)``, ``D`` of ``(N, D)``."""
    return shape[-1] if len(shape) == 2 else shape[0]


@register_network_kind("classifier")
class ClassifierNetwork(Network):
    """A spec-built classifier (image, vector or token sequence) with the timm-style
    model contract.

    ``forward(x, **context)`` is ``forward_head(forward_features(x, **context))``;
    ``forward_head(f, pre_logits=True)`` stops at the classifier's input.
    ``set_grad_checkpointing()`` recomputes each parameterised body node in the backward
    pass while training. The roles come from the spec's ``roles`` (``kind: classifier``)
    unless given here.

    Shapes:
        x: ``(B, *spec.inputs[0].shape)`` -> logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        spec: NetworkSpec | Mapping[str, Any] | str | Path,
        *,
        features: str | None = None,
        stages: Sequence[str] | None = None,
        reductions: Mapping[str, int] | None = None,
        kind: str = "classifier",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if kind != "classifier":
            raise SpecError(f"kind={kind!r}: a ClassifierNetwork has kind 'classifier'")
        spec = load_spec(spec)
        given = {"features": features, "stages": stages, "reductions": reductions}
        roles = {**dict(spec.roles), **{k: v for k, v in given.items() if v is not None}}
        if roles.get("features") is None:
            raise SpecError("a classifier needs a 'features' role (the node before the head)",
                            path="roles.features")
        roles = {
            "kind": "classifier",
            "features": roles["features"],
            "stages": list(roles.get("stages", ())),
            "reductions": dict(roles.get("reductions", {})),
        }
        spec = spec.replace(roles=roles)
        super().__init__(spec, device=device, dtype=dtype, seed=seed, max_bytes=max_bytes)
        self._features = roles["features"]
        self._stages = tuple(roles["stages"])
        self._reductions = dict(roles["reductions"])
        self._check_roles()
        body = set(self._needed((self._features,)))
        self._head_nodes = [n for n in self._needed((self.head_node,)) if n not in body]
        self._checkpointed = frozenset(
            n for n in body if any(True for _ in self.nodes[n].parameters(recurse=True))
        )

    @classmethod
    def check_roles(cls, spec: NetworkSpec) -> list[Problem]:
        """The role names are nodes of ``spec``."""
        roles, ids = spec.roles, {n.id for n in spec.nodes}
        named = [("roles.features", roles.get("features"))]
        named += [(f"roles.stages[{i}]", s) for i, s in enumerate(roles.get("stages", ()))]
        named += [(f"roles.reductions.{s}", s) for s in roles.get("reductions", {})]
        return [
            Problem(path, f"unknown node {name!r}{suggest(str(name), ids)}")
            for path, name in named
            if name not in ids
        ]

    def _check_roles(self) -> None:
        spec, features = self.spec, self._features
        ids = [n.id for n in spec.nodes]
        if len(spec.outputs) != 1 or spec.outputs[0] not in ids:
            raise SpecError(f"a classifier spec has one output node (the head), got {spec.outputs}")
        for name in (features, *self._stages, *self._reductions):
            if name not in ids:
                raise SpecError(f"unknown node {name!r}{suggest(name, ids)}", path="roles")
        body = set(self._needed((features,))) | set(self._input_names)
        outside = [s for s in self._stages if s not in body]
        if outside:
            raise SpecError(f"stage node(s) {outside} do not feed the features node", path="roles")
        for node_id in self._needed((self.head_node,)):
            node = spec.node(node_id)
            if node_id not in body and any(s in body and s != features for s in node.inputs):
                raise SpecError(
                    f"head node {node_id!r} reads {list(node.inputs)}: the head may only read "
                    f"the features node {features!r}",
                    path="roles",
                )

    @property
    def features_node(self) -> str:
        """The node :meth:`forward_features` returns."""
        return self._features

    @property
    def head_node(self) -> str:
        """The classifier node (the spec's output)."""
        return self.spec.outputs[0]

    @property
    def pre_logits_node(self) -> str:
        """The node feeding the classifier."""
        return self.spec.node(self.head_node).inputs[0]

    @property
    def num_features(self) -> int:
        """Channels of :meth:`forward_features`' output."""
        return _channels(self._infos[self.features_node].shape)

    @property
    def num_classes(self) -> int:
        """Classes (or targets) of the head (0 once it was reset to the identity)."""
        node = self.spec.node(self.head_node)
        if node.block == "identity":
            return 0
        return int(node.params.get("out_features", self._infos[self.head_node].shape[-1]))

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """Per stage: ``node`` id, ``module`` path, channels ``num_chs`` and ``reduction``
        (input size / stage size, from the shapes inferred at build)."""
        in_shape = self.spec.inputs[0].shape
        out = []
        for node_id in self._stages:
            shape = self._infos[node_id].shape
            if node_id in self._reductions:
                reduction = int(self._reductions[node_id])
            elif len(shape) == 3 and len(in_shape) == 3:
                reduction = in_shape[1] // shape[1]
            else:
                reduction = 1
            out.append(
                {
                    "node": node_id,
                    "module": f"nodes.{node_id}",
                    "num_chs": _channels(shape),
                    "reduction": reduction,
                }
            )
        return out

    def get_classifier(self) -> nn.Module:
        return self.nodes[self.head_node]

    # ------------------------------------------------------------------ execution

    def checkpoint_nodes(self) -> frozenset[str]:
        """The parameterised body nodes (the head is cheap to keep)."""
        return self._checkpointed

    def forward_features(self, x: Tensor, **context: Any) -> Tensor:
        """The ``features`` node's output: the unpooled final feature map or tokens."""
        return self.run({self._input_names[0]: x}, (self.features_node,), **context)[
            self.features_node
        ]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooling, norm, dropout and classifier on features ``x``; ``pre_logits`` stops
        before the classifier."""
        target = self.pre_logits_node if pre_logits else self.head_node
        if target == self.features_node:
            return x
        wanted = set(self._needed((target,)))
        values = self._execute(
            {self.features_node: x}, [n for n in self._head_nodes if n in wanted], (target,)
        )
        return values[target]

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        intermediates_only: bool = False,
        **context: Any,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (``feature_info`` order): all, the last ``indices`` (an int) or those
        at ``indices``; with the final features unless ``intermediates_only``."""
        stages = list(self._stages)
        if indices is None:
            picked = stages
        elif isinstance(indices, int):
            picked = stages[len(stages) - indices :] if indices > 0 else []
        else:
            picked = [stages[i] for i in indices]
        wanted = (*picked, self.features_node)
        values = self.run({self._input_names[0]: x}, wanted, **context)
        inter = [values[s] for s in picked]
        return inter if intermediates_only else (values[self.features_node], inter)

    # ------------------------------------------------------------------ surgery

    def reset_classifier(
        self,
        num_classes: int,
        *,
        head: str = "linear",
        head_args: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        """Replace the classifier by a fresh ``num_classes``-way head (``0``: the identity, so
        the model returns pre-logits) and update :attr:`spec` to match.

        ``head`` is ``linear`` or one of :data:`~netarchitect.layers.heads.HEADS`
        (``gaussian_head`` for heteroscedastic regression, ``ordinal_head``,
        ``embedding_head``, ``angular_margin_head``), with ``head_args`` its options;
        ``num_classes`` is its ``out_features``. With ``seed`` the new weights equal those
        ``build(model.spec, seed=seed)`` gives.
        """
        from ..layers.heads import HEADS

        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise SpecError(f"num_classes={num_classes!r} must be an integer >= 0")
        if head not in HEADS:
            raise SpecError(
                f"head={head!r}{suggest(head, HEADS)}; use one of {', '.join(HEADS)}", path="head"
            )
        head_node = self.head_node
        old = self.spec.node(head_node)
        params: dict[str, Any] = {}
        block = "identity"
        if num_classes:
            block = head
            params = dict(old.params) if old.block == head else {}
            params.update({**(head_args or {}), "out_features": num_classes})
        in_features = self._infos[self.pre_logits_node].shape[-1]
        resolved = {**params, "in_features": in_features} if num_classes else {}
        ref = next(self.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None else None
        module = get_block(block)(**resolved, device="meta", dtype=dtype)
        shape = tuple(module(torch.empty(1, in_features, device="meta", dtype=dtype)).shape[1:])
        if device.type != "meta":
            holder = nn.Module()
            holder.nodes = nn.ModuleDict({head_node: module})
            materialize(holder, device, seed=seed, policy=self.spec.init or None)
        self.nodes[head_node] = module
        self._spec = self.spec.replace_node(head_node, block=block, params=params)
        self._node_specs = {n.id: n for n in self._spec.nodes}
        n_params = sum(p.numel() for p in module.parameters())
        self._infos[head_node] = NodeInfo(head_node, block, resolved, shape, n_params)
