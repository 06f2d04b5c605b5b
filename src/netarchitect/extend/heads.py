"""Replace a model's classification head: new number of classes, backbone kept.

- a spec-built classifier (``roles.kind: classifier``) or a spec whose single output is a
  ``linear`` node: that node becomes a fresh ``num_classes``-way ``linear`` (``0``: the
  identity, the model returns pre-logits), as ``reset_classifier`` does;
- a spec-built BERT encoder with a pooler: a classifier is added on the pooler, and the
  model becomes a ``classifier`` (as ``bert(head="classification")``);
- a ``transformers`` model with ``config.num_labels``: the last ``Linear`` of its
  ``classifier`` (or ``score``) is replaced, initialised by the model's ``_init_weights``,
  and the config updated;
- any other module: its own ``reset_classifier(n)`` if it has one, else its last
  ``nn.Linear`` (in registration order) is replaced.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import SpecError
from ..network import Network
from ._edit import (
    copy_model,
    is_spec_built,
    rebuild,
    reference_tensor,
    seeded,
    spec_data,
    under,
    unique_id,
)

__all__ = ["replace_head"]

_HF_HEADS = ("classifier", "score")


def _check(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise SpecError(f"num_classes={num_classes!r} must be an integer >= 0", path="num_classes")
    return num_classes


def replace_head(model: nn.Module, num_classes: int, *, seed: int | None = None) -> nn.Module:
    """A copy of ``model`` whose classifier has ``num_classes`` outputs; every other weight
    (the backbone: ``forward_features`` is unchanged) is kept. ``seed`` makes the new
    head's initial weights reproducible. The input model is left as it is."""
    _check(num_classes)
    if is_spec_built(model):
        return _spec_head(model, num_classes, seed)  # type: ignore[arg-type]
    new: Any = copy_model(model)
    config = getattr(new, "config", None)
    if config is not None and hasattr(config, "num_labels"):
        _hf_head(new, num_classes, seed)
    elif callable(getattr(new, "reset_classifier", None)):
        with seeded(seed):
            new.reset_classifier(num_classes)
    else:
        name, _ = _last_linear(new, "")
        _swap_linear(new, name, num_classes, seed)
    return new


# --------------------------------------------------------------------------- spec-built


def _spec_head(model: Network, num_classes: int, seed: int | None) -> Network:
    data = spec_data(model)
    roles = data.get("roles", {})
    nodes = {n["id"]: n for n in data["nodes"]}
    if roles.get("kind") == "classifier" or (
        len(data["outputs"]) == 1 and nodes[data["outputs"][0]]["block"] == "linear"
        and not roles
    ):
        head = data["outputs"][0]
        node = nodes[head]
        if num_classes:
            params = dict(node.get("params", {})) if node["block"] == "linear" else {}
            node.update(block="linear", params={**params, "out_features": num_classes})
        else:
            node.update(block="identity", params={})
        changed = under([head])
        return rebuild(model, data, seed=seed, reinit=changed, dropped=changed)
    if roles.get("pooler") and roles.get("features"):
        if not num_classes:
            raise SpecError("num_classes=0: this encoder has no classifier to remove",
                            path="num_classes")
        head = unique_id("head", nodes)
        last = data["outputs"][-1]
        data["nodes"].append({"id": head, "block": "linear", "inputs": [last],
                              "params": {"out_features": num_classes}})
        data["outputs"] = [head]
        data["roles"] = {"kind": "classifier", "features": roles["features"],
                         "stages": list(roles.get("blocks", []))}
        return rebuild(model, data, seed=seed, fresh=under([head]))
    kind = roles.get("kind", "network")
    raise SpecError(
        f"{data['name']!r} ({kind}) has no classification head to replace: a classifier "
        "spec, a spec whose output is a linear node, or an encoder with a pooler is needed",
        path="num_classes",
    )


# --------------------------------------------------------------------------- modules


def _last_linear(model: nn.Module, prefix: str) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        where = f" in {prefix!r}" if prefix else ""
        raise SpecError(f"{type(model).__name__} has no nn.Linear{where} to use as the head")
    return linears[-1]


def _swap_linear(model: nn.Module, name: str, num_classes: int, seed: int | None,
                 init: Any = None) -> None:
    """Replace the ``nn.Linear`` at ``name`` by a fresh one with ``num_classes`` outputs."""
    old: Any = model.get_submodule(name)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not num_classes:
        setattr(parent, attr, nn.Identity())
        return
    ref = reference_tensor(old)
    with seeded(seed):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                        device=ref.device if ref is not None else None,
                        dtype=ref.dtype if ref is not None else None)
        if init is not None:
            init(new)
    new.train(old.training)
    setattr(parent, attr, new)


def _hf_head(model: Any, num_classes: int, seed: int | None) -> None:
    """transformers: replace the last Linear of the classifier; update ``config``."""
    for attr in _HF_HEADS:
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            break
    else:
        raise SpecError(
            f"{type(model).__name__} has no classification head ({' or '.join(_HF_HEADS)}); "
            "load it as a ...ForSequenceClassification / ...ForImageClassification model",
            path="num_classes",
        )
    name, _ = (attr, head) if isinstance(head, nn.Linear) else _last_linear(head, attr)
    if not isinstance(head, nn.Linear):
        name = f"{attr}.{name}"
    _swap_linear(model, name, num_classes, seed, init=getattr(model, "_init_weights", None))
    if num_classes:
        model.config.num_labels = num_classes
