"""Checks of saved state: a safetensors round trip of the state_dict."""

from __future__ import annotations

import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from ._context import CheckContext
from ._outputs import compare_outputs
from ._registry import CheckFailure, SkipCheck, register_check

__all__: list[str] = []


@register_check("state_dict_roundtrip")
def state_dict_roundtrip(ctx: CheckContext) -> None:
    """The state_dict saved with safetensors and loaded (strict) into a copy built with another
    seed reproduces the eval outputs exactly."""
    ctx.require_factory()
    source, target = ctx.build(seed=0).eval(), ctx.build(seed=1).eval()
    state = source.state_dict()
    extra = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if extra:
        raise SkipCheck(f"state_dict holds non-tensor extra state: {', '.join(extra)}")
    # clone: safetensors refuses tensors that share storage (tied weights)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        save_file(tensors, str(path))
        target.load_state_dict(load_file(str(path)))
    reason = compare_outputs(ctx.forward(source), ctx.forward(target), atol=0, rtol=0)
    if reason:
        raise CheckFailure(
            "outputs differ after loading the saved state_dict into a copy built with another "
            f"seed (state outside the state_dict: non-persistent buffers, plain attributes?): {reason}"
        )
