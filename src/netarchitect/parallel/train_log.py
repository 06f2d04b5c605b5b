"""Training metrics: one JSON object per line (``metrics.jsonl``) and a loss plot.

Records are ``{"type": "step", "step": s, "epoch": e, "loss": ..., "lr": ...,
"grad_norm": ...}`` after every optimizer step and ``{"type": "epoch", "epoch": e,
"step": s, "train_loss": ..., "val_loss": ..., "val_metric": ...}`` after every epoch.
A resumed run first drops the records after its checkpoint's step, so the file holds one
continuous run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._io import atomic_write_text, save_png

__all__ = ["MetricsLog", "plot_loss", "read_metrics"]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file (an incomplete last line, from a killed run, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class MetricsLog:
    """Appends records to a JSONL file, flushed per line (``enabled=False``: rank > 0)."""

    def __init__(self, path: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Keep only the records up to optimizer step ``step`` (epoch records included)."""
        if not self.enabled:
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def plot_loss(records: Iterable[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """A PNG of the training loss per step and the validation loss per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    records = list(records)
    steps = [(r["step"], r["loss"]) for r in records if r.get("type") == "step"]
    epochs = [
        (r["step"], r["val_loss"])
        for r in records
        if r.get("type") == "epoch" and r.get("val_loss") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if steps:
        ax.plot(*zip(*steps, strict=True), lw=1, label="train loss (per step)")
    if epochs:
        ax.plot(*zip(*epochs, strict=True), "o-", label="validation loss (per epoch)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if steps or epochs:
        ax.legend()
    fig.tight_layout()
    return save_png(fig, path)
