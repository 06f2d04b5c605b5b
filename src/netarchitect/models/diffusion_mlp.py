"""A residual MLP denoiser for low-dimensional diffusion (2-D toy data), as a spec.

Spec (``roles: {kind: diffusion_mlp, num_classes, num_train_timesteps}``), context ``[t]`` or
``[t, y]``:

- ``emb``: :class:`~netarchitect.layers.diffusion.TimeClassEmbedding` (sinusoidal ``t`` through
  a two-layer MLP, plus a class row; the null class ``num_classes`` when ``y`` is absent),
  then ``emb_act``;
- ``inp``: linear ``dim -> hidden_dim`` on ``x_t``;
- per block ``i``: ``block{i}_emb`` (linear of the embedding), ``block{i}_act``
  (``act(h + emb_i)``), ``block{i}_fc`` (linear), ``block{i}_res`` (``h + fc``);
- ``out_act``, ``out`` (linear to ``dim``).

Called like every denoiser: ``model(x_t, t)`` or ``model(x_t, t, y)`` (``notes/gen_contract.md``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..layers._factory import example_tensor
from ..network import build
from ..registry import Example, register_model, register_network_kind
from ._denoiser import DenoiserNetwork
from ._graph_builder import GraphBuilder
from ._stages import check_positive

__all__ = ["DiffusionMLP", "diffusion_mlp", "diffusion_mlp_2d"]


@register_network_kind("diffusion_mlp")
class DiffusionMLP(DenoiserNetwork):
    """A spec-built MLP denoiser, called as every denoiser: ``model(x_t, t[, y])``.

    Shapes:
        x_t: ``(B, dim)``, t: ``(B,)`` int64, y: ``(B,)`` int64 -> ``(B, dim)``.
    """


def diffusion_mlp(
    *,
    dim: int = 2,
    hidden_dim: int = 128,
    num_blocks: int = 3,
    emb_dim: int | None = None,
    freq_dim: int = 32,
    num_classes: int | None = None,
    num_train_timesteps: int = 1000,
    act_layer: str = "silu",
    name: str = "diffusion_mlp",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
) -> DiffusionMLP:
    """The MLP denoiser family builder (see the module docstring). ``emb_dim`` defaults to
    ``hidden_dim``; ``num_classes`` adds a class embedding of ``num_classes + 1`` rows."""
    emb_dim = hidden_dim if emb_dim is None else emb_dim
    for key, value in (("dim", dim), ("hidden_dim", hidden_dim), ("num_blocks", num_blocks),
                       ("emb_dim", emb_dim), ("freq_dim", freq_dim),
                       ("num_train_timesteps", num_train_timesteps)):
        check_positive(key, value)
    if num_classes is not None:
        check_positive("num_classes", num_classes)
    b = GraphBuilder(name, {"x": (dim,)})
    b.add("emb", "time_class_embedding",
          {"dim": emb_dim, "freq_dim": freq_dim, "num_classes": num_classes},
          context=["t", "y"] if num_classes is not None else ["t"])
    b.add("emb_act", act_layer)
    h = b.add("inp", "linear", {"out_features": hidden_dim}, inputs=["x"])
    for i in range(num_blocks):
        e = b.add(f"block{i}_emb", "linear", {"out_features": hidden_dim}, inputs=["emb_act"])
        b.add(f"block{i}_act", act_layer, inputs=[h, e], merge="add")
        f = b.add(f"block{i}_fc", "linear", {"out_features": hidden_dim})
        h = b.add(f"block{i}_res", "identity", inputs=[h, f], merge="add")
    b.add("out_act", act_layer)
    b.add("out", "linear", {"out_features": dim})
    spec = b.make_spec({"kind": "diffusion_mlp", "num_classes": num_classes,
                        "num_train_timesteps": num_train_timesteps})
    return build(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def _example(**overrides: Any) -> Example:
    kwargs = {"hidden_dim": 8, "num_blocks": 1, "freq_dim": 4, **overrides}
    x, t = example_tensor(3, kwargs.get("dim", 2)), torch.tensor([0, 17, 999])
    if kwargs.get("num_classes"):
        return Example(kwargs, (x, t, torch.tensor([0, 1, kwargs["num_classes"]])))
    return Example(kwargs, (x, t))


@register_model("diffusion_mlp_2d", example=lambda: _example(num_classes=2))
def diffusion_mlp_2d(**kwargs: Any) -> DiffusionMLP:
    """The 2-D toy-data denoiser: 3 residual blocks of 128, 32 sinusoidal frequencies."""
    return diffusion_mlp(**{"dim": 2, "hidden_dim": 128, "num_blocks": 3,
                            "name": "diffusion_mlp_2d", **kwargs})
