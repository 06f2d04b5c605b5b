"""Explaining interpretable-by-design models in a report: prototype figures, concept tables.

:func:`interpretability_section` looks for a ``prototype_head`` or a
``concept_bottleneck_head`` in a trained model and returns a Markdown section (writing a
PNG for prototypes) — ``None`` for any other model, so a report can call it on every model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .._io import atomic_write
from ..layers.concept import ConceptBottleneckHead
from ..layers.prototype import PrototypeHead
from .concepts import concept_accuracy, intervention_curve
from .prototypes import Projection, explain_prototypes, find_prototype_head, project_prototypes

__all__ = ["concept_section", "interpretability_section", "plot_prototypes"]


def plot_prototypes(
    model: nn.Module, projection: Projection, path: str | Path, *, example: Tensor | None = None
) -> Path:
    """A PNG: per class a column of its prototypes, each drawn on the training image it was
    projected onto with its similarity map and the patch (red box); with ``example`` (one
    input ``(1, C, H, W)``) a last row explaining it by its most similar prototypes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    head = find_prototype_head(model)
    k = head.num_classes
    per = head.num_prototypes // k
    rows = per + (example is not None)
    fig = Figure(figsize=(1.3 * max(k, 4), 1.4 * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, max(k, 4), squeeze=False)
    size = tuple(projection.images.shape[-2:])
    scale = (size[0] / projection.maps.shape[-2], size[1] / projection.maps.shape[-1])
    for j in range(head.num_prototypes):
        ax = axes[j % per, int(head.prototype_class[j])]
        ax.imshow(projection.images[j, 0].numpy(), cmap="gray_r")
        up = F.interpolate(projection.maps[j][None, None], size=size, mode="bilinear",
                           align_corners=False)[0, 0]
        ax.imshow(up.numpy(), cmap="jet", alpha=0.35)
        r, c = int(projection.row[j]), int(projection.col[j])
        ax.add_patch(Rectangle((c * scale[1] - 0.5, r * scale[0] - 0.5), scale[1], scale[0],
                               fill=False, edgecolor="red", linewidth=1.5))
        ax.set_title(f"p{j} (class {int(head.prototype_class[j])})", fontsize=7)
    used = {(j % per, int(head.prototype_class[j])) for j in range(head.num_prototypes)}
    if example is not None:
        e = explain_prototypes(model, example, top=min(3, head.num_prototypes),
                               projection=projection)[0]
        image = example[0, 0].numpy()
        row = axes[per]
        row[0].imshow(image, cmap="gray_r")
        row[0].set_title(f"input: predicted {e.predicted}", fontsize=7)
        for i, (p, s) in enumerate(zip(e.prototypes, e.similarities, strict=True), start=1):
            row[i].imshow(image, cmap="gray_r")
            row[i].imshow(e.maps[i - 1].numpy(), cmap="jet", alpha=0.4)
            row[i].set_title(f"≈ p{p} (s={s:.1f})", fontsize=7)
        used |= {(per, i) for i in range(len(e.prototypes) + 1)}
    for (r, c), ax in zip(
        ((r, c) for r in range(rows) for c in range(axes.shape[1])), axes.flat, strict=True
    ):
        ax.set_xticks([])
        ax.set_yticks([])
        if (r, c) not in used:
            ax.axis("off")
    fig.suptitle("Prototypes on their nearest training patches", fontsize=8)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))


def concept_section(
    model: nn.Module,
    x: Tensor,
    concepts: Tensor,
    labels: Tensor,
    names: Sequence[str] | None = None,
) -> str:
    """Markdown: the accuracy of each concept and the label accuracy after intervening on
    the first ``k`` concepts (Koh et al.'s test-time intervention)."""
    acc = concept_accuracy(model, x, concepts)
    names = list(names) if names is not None else [f"concept {i}" for i in range(len(acc))]
    curve = intervention_curve(model, x, concepts, labels)
    lines = ["| concept | accuracy | label accuracy with concepts ≤ this one set true |",
             "|---|---|---|", f"| (none) | | {100 * curve[0]:.2f}% |"]
    lines += [f"| {n} | {100 * float(a):.2f}% | {100 * c:.2f}% |"
              for n, a, c in zip(names, acc, curve[1:], strict=True)]
    return "\n".join(lines)


def _loader(x: Tensor, y: Tensor, batch: int = 256) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def interpretability_section(
    model: nn.Module, task: Any, out_dir: str | Path, *, link_dir: str = ""
) -> str | None:
    """The "how it decides" section of a report for a model trained on a tensor ``task``:
    its prototypes' nearest training patches (a PNG in ``out_dir``, linked as
    ``link_dir/prototypes.png``; the model itself is not changed) or its concepts' accuracy
    and intervention curve; ``None`` for other models."""
    modules = list(model.modules())
    if any(isinstance(m, PrototypeHead) for m in modules):
        probe = copy.deepcopy(model)
        projection = project_prototypes(probe, _loader(task.x_train, task.y_train))
        path = plot_prototypes(probe, projection, Path(out_dir) / "prototypes.png",
                               example=task.x_test[:1])
        mean = float(projection.distance.mean())
        return (f"### Prototypes\n\nEach prototype next to its nearest training patch of its "
                f"class (mean squared latent distance {mean:.4f}; 0 after projection).\n\n"
                f"![prototypes]({link_dir.rstrip('/') + '/' if link_dir else ''}{path.name})\n")
    heads = [m for m in modules if isinstance(m, ConceptBottleneckHead)]
    if heads and heads[0].class_concepts is not None:
        table = heads[0].class_concepts.cpu()
        true = table[task.y_test]
        names = getattr(task, "concept_names", None)
        return "### Concepts\n\n" + concept_section(model, task.x_test, true, task.y_test,
                                                     names) + "\n"
    return None
