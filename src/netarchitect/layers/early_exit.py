"""Early-exit wrapper: stop computing once an intermediate classifier is confident enough."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import LayerType, check_choice, example_tensor, reset_children, resolve_layer
from .mlp import MLP

__all__ = ["EarlyExit"]

Device = torch.device | str | None
Dtype = torch.dtype | None


def _materialise(item: nn.Module | LayerType, factory: dict) -> nn.Module:
    if isinstance(item, nn.Module):
        if factory["device"] is not None or factory["dtype"] is not None:
            item.to(**factory)
        return item
    if not callable(item):
        raise TypeError(f"stages and heads must be modules or factories, got {item!r}")
    return resolve_layer(item, {}, kind="stage")(**factory)


@register_block("early_exit")
class EarlyExit(nn.Module):
    """Stages with an exit head after each (BranchyNet, Teerapittayanon et al. 2016).

    Training mode runs every stage and returns the list of all exits' logits (for
    deep supervision: sum a loss over them). Eval mode returns one logits tensor:
    after stage ``i`` its head gives ``p = softmax(logits)``; a sample exits when
    ``max(p) >= threshold`` (the last exit always accepts).

    ``policy="sample"``: each sample exits on its own; only the samples still
    running go through the next stage (rows are selected, so the work shrinks),
    and outputs do not depend on the rest of the batch.
    ``policy="batch"``: the whole batch stops at the first exit where *every*
    sample is confident (one code path, no indexing; samples are coupled).

    After a forward, :attr:`last_depth` is the number of stages executed and
    :attr:`exit_depths` (B,) the 1-based exit of each sample.

    ``stages``/``heads`` are modules (moved to ``device``/``dtype`` when given) or
    factories — a class or ``functools.partial`` — called with ``device=``/``dtype=``,
    e.g. ``partial(nn.Linear, 64, 10)``.

    Shapes:
        input: what ``stages[0]`` takes, (B, ...); output: (B, num_classes), or a list
        of ``len(stages)`` such tensors in training mode.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module | LayerType],
        heads: Sequence[nn.Module | LayerType],
        *,
        threshold: float = 0.9,
        policy: str = "sample",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        if len(stages) == 0 or len(stages) != len(heads):
            raise SpecError(
                f"need one head per stage and at least one stage, got {len(stages)} stages "
                f"and {len(heads)} heads",
                path="heads",
            )
        if not 0.0 <= threshold <= 1.0:
            raise SpecError(f"threshold={threshold} must be in [0, 1]", path="threshold")
        check_choice("policy", policy, ("sample", "batch"))
        factory = {"device": device, "dtype": dtype}
        modules = [_materialise(m, factory) for m in (*stages, *heads)]
        self.stages = nn.ModuleList(modules[: len(stages)])
        self.heads = nn.ModuleList(modules[len(stages) :])
        self.threshold = float(threshold)
        self.policy = policy
        self.last_depth = 0
        self.exit_depths: Tensor | None = None

    def reset_parameters(self) -> None:
        reset_children(self)

    @classmethod
    def example(cls) -> Example:
        stage = functools.partial(MLP, 6, hidden_dim=8, act_layer="tanh")
        head = functools.partial(nn.Linear, 6, 4)
        kwargs = {"stages": [stage] * 3, "heads": [head] * 3, "threshold": 0.3}
        return Example(kwargs, (example_tensor(5, 6),))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.training:
            outs = []
            for stage, head in zip(self.stages, self.heads):
                x = stage(x)
                outs.append(head(x))
            self.last_depth = len(self.stages)
            self.exit_depths = torch.full((x.shape[0],), self.last_depth, device=x.device)
            return outs
        if x.device.type == "meta":  # no values to test: the shape of the full path
            return self._run_all(x)
        if torch.compiler.is_compiling():  # data-dependent exits would break the graph
            return self._select_exit(x)
        if self.policy == "batch":
            return self._batch_exit(x)
        return self._sample_exit(x)

    def _confident(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=-1).amax(dim=-1) >= self.threshold  # (B,)

    def _run_all(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        self.last_depth = len(self.stages)
        return self.heads[-1](x)

    def _select_exit(self, x: Tensor) -> Tensor:
        """Every stage runs; each sample (or, for ``policy="batch"``, the whole batch) keeps
        the logits of its first confident exit: the same outputs and :attr:`exit_depths` as the
        eager paths, with static shapes (so it compiles without graph breaks, saving no work)."""
        exits = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            exits.append(head(x))  # (B, C)
        out = exits[-1]
        depths = torch.full((out.shape[0],), len(exits), device=out.device)
        for depth in range(len(exits) - 1, 0, -1):  # earlier confident exits take precedence
            logits = exits[depth - 1]
            done = self._confident(logits)  # (B,)
            if self.policy == "batch":
                done = done.all().expand_as(done)
            out = torch.where(done.view(-1, *[1] * (out.dim() - 1)), logits, out)
            depths = torch.where(done, depth, depths)
        self.last_depth = len(exits)
        self.exit_depths = depths
        return out

    def _batch_exit(self, x: Tensor) -> Tensor:
        last = len(self.stages)
        for depth, (stage, head) in enumerate(zip(self.stages, self.heads), start=1):
            x = stage(x)
            logits = head(x)
            if depth == last or bool(self._confident(logits).all()):
                self.last_depth = depth
                self.exit_depths = torch.full((x.shape[0],), depth, device=x.device)
                return logits
        raise AssertionError("unreachable")  # pragma: no cover

    def _sample_exit(self, x: Tensor) -> Tensor:
        last = len(self.stages)
        active = torch.arange(x.shape[0], device=x.device)  # rows still running
        depths = torch.full_like(active, last)
        out: Tensor | None = None
        for depth, (stage, head) in enumerate(zip(self.stages, self.heads), start=1):
            x = stage(x)
            logits = head(x)  # (B_active, C)
            if out is None:
                out = logits.new_zeros((active.shape[0], *logits.shape[1:]))
            done = (
                self._confident(logits)
                if depth < last
                else torch.ones_like(active, dtype=torch.bool)
            )
            out[active[done]] = logits[done]
            depths[active[done]] = depth
            active, x = active[~done], x[~done]
            if active.numel() == 0:
                self.last_depth = depth
                break
        self.exit_depths = depths
        assert out is not None
        return out

    def extra_repr(self) -> str:
        return f"num_stages={len(self.stages)}, threshold={self.threshold}, policy={self.policy!r}"
