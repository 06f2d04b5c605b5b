"""The spec builder every model family uses: nodes chained in order, context, ties and roles.

A family builder adds nodes (each chains from the previous one unless ``inputs`` says
otherwise), names the context values nodes take, ties shared weights, and gets a
:class:`~netarchitect.spec.NetworkSpec` whose ``roles`` name the Network subclass that
``build`` returns — so ``build(model.spec)`` gives back the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..network import Network, build
from ..spec import InputSpec, NetworkSpec, NodeSpec

__all__ = ["GraphBuilder"]

Params = Mapping[str, Any]


class GraphBuilder:
    """Accumulates the nodes of a spec named ``name`` with the given inputs.

    ``inputs`` maps input names to per-sample shapes, or to ``(shape, dtype)``.
    """

    def __init__(self, name: str, inputs: Mapping[str, Any]) -> None:
        self.name = name
        self.inputs: list[InputSpec] = []
        for key, value in inputs.items():
            shape, dtype = value if isinstance(value, tuple) and isinstance(value[-1], str) else (value, "float32")
            self.inputs.append(InputSpec(key, tuple(shape), dtype))
        self.nodes: list[NodeSpec] = []
        self.last = self.inputs[0].name
        self.tie: dict[str, str] = {}
        self._context: list[str] = []

    def add(
        self,
        node_id: str,
        block: str,
        params: Params | None = None,
        *,
        inputs: Sequence[str] | None = None,
        merge: str | None = None,
        context: Sequence[str] | Mapping[str, str] = (),
    ) -> str:
        """Add a node (fed by the previous node unless ``inputs``); returns its id."""
        context = dict(context) if isinstance(context, Mapping) else {c: c for c in context}
        for name in context.values():
            if name not in self._context:
                self._context.append(name)
        node = NodeSpec(
            node_id, block, dict(params or {}), tuple(inputs or (self.last,)), merge,
            context=context,
        )
        self.nodes.append(node)
        self.last = node_id
        return node_id

    def add_layer(self, node_id: str, layer: str | Params, **kwargs: Any) -> str:
        """Add a node for a layer type given as data: a registered block name, or a mapping
        ``{"name": block, **params}`` (``norm_layer`` / ``act_layer`` values)."""
        if isinstance(layer, str):
            return self.add(node_id, layer, **kwargs)
        params = {k: v for k, v in layer.items() if k != "name"}
        return self.add(node_id, layer["name"], params, **kwargs)

    def make_spec(
        self,
        roles: Params,
        *,
        outputs: Sequence[str] | None = None,
        init: Sequence[Params] = (),
        description: str = "",
    ) -> NetworkSpec:
        """The spec: outputs default to the last node; context is what the nodes take."""
        return NetworkSpec(
            self.name,
            tuple(self.inputs),
            tuple(self.nodes),
            tuple(outputs or (self.last,)),
            description,
            tuple(init),
            tuple(self._context),
            dict(self.tie),
            dict(roles),
        )

    @staticmethod
    def build_spec(
        spec: NetworkSpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        seed: int | None = None,
    ) -> Network:
        """``build(spec, ...)``: the Network subclass the spec's roles name."""
        return build(spec, device=device, dtype=dtype, seed=seed)
