"""Pipeline parallel on ``torch.distributed.pipelining``: a spec-built network cut at block
boundaries into stages of balanced measured FLOPs, run by the GPipe or 1F1B schedule."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ParallelError

__all__ = [
    "SCHEDULES",
    "PipelineRunner",
    "PipelineSplit",
    "StageModule",
    "pipeline_stage",
    "split_model",
    "split_points",
]

#: Schedule names accepted by :class:`PipelineRunner`.
SCHEDULES = ("gpipe", "1f1b")


@dataclass(frozen=True)
class PipelineSplit:
    """Stages of a network: each stage's node ids (in execution order), the value it takes
    (a spec input or the previous stage's last node) and its measured FLOPs (forward and
    backward, :func:`~netarchitect.analysis.count_flops`)."""

    stages: tuple[tuple[str, ...], ...]
    inputs: tuple[str, ...]
    flops: tuple[int, ...]

    @property
    def points(self) -> list[str]:
        """The node each stage after the first starts at."""
        return [stage[0] for stage in self.stages[1:]]

    @property
    def imbalance(self) -> float:
        """Largest stage's FLOPs over the mean (1.0 is perfect balance)."""
        return max(self.flops) * len(self.flops) / max(sum(self.flops), 1)

    def __str__(self) -> str:
        lines = [f"PipelineSplit({len(self.stages)} stages, imbalance {self.imbalance:.3f})"]
        for i, (nodes, flops) in enumerate(zip(self.stages, self.flops, strict=True)):
            lines.append(f"  stage {i}: {nodes[0]} .. {nodes[-1]} ({len(nodes)} nodes, "
                         f"{flops / 1e6:.3f} MFLOPs)")
        return "\n".join(lines)


def _network(model: nn.Module) -> Any:
    """``model`` if it is a Network with one input and one output, its last node."""
    from ..network import Network

    if not isinstance(model, Network):
        raise ParallelError(
            f"pipeline stages are cut from a spec-built Network, got {type(model).__name__}"
        )
    spec = model.spec
    inputs = [i.name for i in spec.inputs]
    if len(inputs) != 1 or tuple(spec.outputs) != (list(model.nodes)[-1],):
        raise ParallelError(
            f"{spec.name}: a pipeline needs one input and one output (the last node); the "
            f"spec has inputs {inputs} and outputs {list(spec.outputs)}"
        )
    return model


def _boundaries(model: Any) -> list[int]:
    """Positions ``i`` such that only node ``order[i]``'s output crosses a cut after it."""
    spec = model.spec
    order = list(model.nodes)
    pos = {name: -1 for name in (i.name for i in spec.inputs)}
    pos.update({node_id: i for i, node_id in enumerate(order)})
    last_use = dict.fromkeys(pos, -1)
    for node in spec.nodes:
        for source in node.inputs:
            last_use[source] = max(last_use[source], pos[node.id])
    for output in spec.outputs:
        last_use[output] = len(order)
    cuts = []
    for i in range(len(order) - 1):
        live = [v for v, p in pos.items() if p <= i and last_use[v] > i]
        if live == [order[i]]:
            cuts.append(i)
    return cuts


def _node_flops(model: Any, inputs: Any) -> list[int]:
    from ..analysis import count_flops

    result = count_flops(model, inputs, backward=True)
    flops = []
    for node_id in model.nodes:
        key = f"nodes.{node_id}"
        forward = result.by_module.get(key)
        backward = result.by_module_backward.get(key)
        flops.append(sum(c.total_flops for c in (forward, backward) if c is not None))
    return flops


def _balance(flops: Sequence[int], cuts: Sequence[int], stages: int) -> list[int]:
    """The ``stages - 1`` cut positions minimising the largest stage (exact, by dynamic
    programming over the allowed cuts)."""
    prefix = [0]
    for f in flops:
        prefix.append(prefix[-1] + f)
    ends = [*cuts, len(flops) - 1]  # a stage ends after one of these positions
    # best[k][j]: (max stage cost, cuts) for k + 1 stages ending after ends[j]
    best: list[dict[int, tuple[int, list[int]]]] = [
        {j: (prefix[e + 1], []) for j, e in enumerate(ends)}
    ]
    for _ in range(1, stages):
        row: dict[int, tuple[int, list[int]]] = {}
        for j, e in enumerate(ends):
            options = [
                (max(cost, prefix[e + 1] - prefix[ends[i] + 1]), [*chosen, ends[i]])
                for i, (cost, chosen) in best[-1].items() if i < j
            ]
            if options:
                row[j] = min(options, key=lambda o: o[0])
        best.append(row)
    return best[-1][len(ends) - 1][1]


def split_model(model: nn.Module, inputs: Any, stages: int) -> PipelineSplit:
    """Cut ``model`` into ``stages`` consecutive stages at block boundaries (places where a
    single value flows on), balancing FLOPs measured on ``inputs`` (forward + backward)."""
    net = _network(model)
    if not isinstance(stages, int) or stages < 1:
        raise ParallelError(f"stages must be a positive integer, got {stages!r}")
    cuts = _boundaries(net)
    if stages > len(cuts) + 1:
        raise ParallelError(
            f"{net.spec.name}: {len(cuts)} block boundaries allow at most {len(cuts) + 1} "
            f"pipeline stages, not {stages}"
        )
    flops = _node_flops(net, inputs)
    chosen = _balance(flops, cuts, stages)
    order = list(net.nodes)
    bounds = [-1, *chosen, len(order) - 1]
    groups = tuple(tuple(order[a + 1 : b + 1]) for a, b in itertools.pairwise(bounds))
    stage_inputs = (net.spec.inputs[0].name, *(order[c] for c in chosen))
    stage_flops = tuple(sum(flops[a + 1 : b + 1]) for a, b in itertools.pairwise(bounds))
    return PipelineSplit(groups, stage_inputs, stage_flops)


def split_points(model: nn.Module, inputs: Any, stages: int) -> list[str]:
    """The node each pipeline stage after the first starts at (see :func:`split_model`)."""
    return split_model(model, inputs, stages).points


class StageModule(nn.Module):
    """One pipeline stage of a Network: holds its nodes and runs them from the stage's
    input value to its last node (``Network.run``).

    Shapes:
        input: the stage's input value; output: its last node's output.
    """

    def __init__(self, model: nn.Module, split: PipelineSplit, index: int) -> None:
        super().__init__()
        net = _network(model)
        if not 0 <= index < len(split.stages):
            raise ParallelError(f"stage {index} of a {len(split.stages)}-stage split")
        self.index = index
        self.node_ids = split.stages[index]
        self.input_name = split.inputs[index]
        self.nodes = nn.ModuleDict({n: net.nodes[n] for n in self.node_ids})
        self.__dict__["_network"] = net  # not a submodule: its other stages' weights are not ours
        params, holders = self._holders(net, split)
        #: every parameter several stages share (in one order on every rank) and whether
        #: this stage holds it: its gradient is summed over the stages after backward
        self.tied = [(params[k], index in s) for k, s in holders.items() if len(s) > 1]
        self._later_copies = {k for k, s in holders.items() if index in s and min(s) < index}

    @staticmethod
    def _holders(net: Any, split: PipelineSplit) -> tuple[dict[int, Any], dict[int, set[int]]]:
        """``({id: parameter}, {id: indices of the stages holding it})`` over all stages."""
        params: dict[int, nn.Parameter] = {}
        holders: dict[int, set[int]] = {}
        for i, stage in enumerate(split.stages):
            for node_id in stage:
                for p in net.nodes[node_id].parameters():
                    params[id(p)] = p
                    holders.setdefault(id(p), set()).add(i)
        return params, holders

    def owned_parameters(self) -> list[nn.Parameter]:
        """This stage's parameters, less those an earlier stage also holds (a tied weight is
        owned by its first stage): summed over the stages, each parameter counts once."""
        return [p for p in self.parameters() if id(p) not in self._later_copies]

    def forward(self, x: Tensor) -> Tensor:
        last = self.node_ids[-1]
        return self._network.run({self.input_name: x}, [last])[last]


def pipeline_stage(
    model: nn.Module,
    split: PipelineSplit,
    stage_index: int | None = None,
    *,
    group: Any = None,
    device: torch.device | str = "cpu",
) -> Any:
    """A ``torch.distributed.pipelining.PipelineStage`` for this rank's stage.

    ``stage_index`` defaults to the rank within ``group`` (the default group, or a
    mesh's ``mesh["pp"].get_group()``), whose size must equal the number of stages.
    """
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage

    size = dist.get_world_size(group)
    if size != len(split.stages):
        raise ParallelError(f"{len(split.stages)} pipeline stages on a group of {size} ranks")
    index = dist.get_rank(group) if stage_index is None else stage_index
    module = StageModule(model, split, index)
    return PipelineStage(module, index, len(split.stages), torch.device(device), group=group)


class PipelineRunner:
    """Runs training steps of one stage under a schedule (``"gpipe"`` or ``"1f1b"``).

    A parameter shared by several stages (a head tied to the token embedding) gets the sum
    of its stages' gradients after each step, so the copies stay equal under the optimiser.

    ``step(x, target=y)`` on every rank (the first stage uses ``x``, the last ``target``)
    splits the batch into ``n_microbatches`` and returns the mean micro-batch loss on the
    last stage (``None`` elsewhere); gradients are those of that mean, left in the stage's
    parameters for the optimiser.
    """

    def __init__(
        self,
        stage: Any,
        *,
        n_microbatches: int,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        schedule: str = "gpipe",
    ) -> None:
        from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

        if schedule not in SCHEDULES:
            raise ParallelError(f"unknown pipeline schedule {schedule!r}; use one of {SCHEDULES}")
        if schedule == "1f1b" and n_microbatches < stage.num_stages:
            raise ParallelError(
                f"1F1B needs at least as many micro-batches as stages "
                f"({n_microbatches} < {stage.num_stages})"
            )
        cls = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
        self.stage = stage
        self.schedule = cls(stage, n_microbatches, loss_fn=loss_fn)

    def step(self, x: Tensor | None = None, *, target: Tensor | None = None) -> Tensor | None:
        args = (x,) if self.stage.is_first else ()
        losses: list[Tensor] = []
        kwargs = {"target": target, "losses": losses} if self.stage.is_last else {}
        self.schedule.step(*args, **kwargs)
        self._sum_shared_gradients()
        if not self.stage.is_last:
            return None
        return torch.stack([loss.detach() for loss in losses]).mean()

    def _sum_shared_gradients(self) -> None:
        import torch.distributed as dist

        for param, held in self.stage.submod.tied:
            grad = param.grad if held and param.grad is not None else torch.zeros_like(param)
            dist.all_reduce(grad, group=self.stage.group)
            if held:
                param.grad = grad
