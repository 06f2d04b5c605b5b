"""Few-shot learning on digits without downloading anything: ProtoNet, MAML, first-order MAML,
Meta-SGD and ANIL meta-trained on procedural glyphs plus rotated digits 0-4, evaluated on
600 fixed 5-way 5-shot episodes of unseen glyph classes and of digits 5-9, next to the
raw-pixel nearest-prototype baseline on the same episodes.

Prints a table (mean accuracy ± 95% CI, difference to the baseline, meta-training time) and
writes a PNG of the per-episode accuracies (mean ± CI bars over the episode distribution).

    python examples/fewshot_digits.py [--scale 2] [--methods protonet,maml] [--out fewshot.png]

``--scale`` multiplies every method's CI recipe (:data:`netarchitect.meta.benchmark.RECIPES`)
in steps: the tests run scale 1 (each method well under 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from netarchitect._io import save_png
from netarchitect.meta.benchmark import (
    METHODS,
    RECIPES,
    benchmark_data,
    eval_sets,
    evaluate_method,
    meta_train,
    pixel_baseline,
)
from netarchitect.meta.evaluate import FewShotResult


@dataclass
class Row:
    method: str
    results: dict[str, FewShotResult]
    seconds: float
    steps: int


def run(methods: Sequence[str], scale: float, episodes: int) -> list[Row]:
    """The baseline row, then one row per meta-trained method."""
    x, y = benchmark_data()
    sets = eval_sets(x, y, episodes=episodes)
    rows = [Row("raw pixels", evaluate_method(pixel_baseline, sets), 0.0, 0)]
    for method in methods:
        recipe = RECIPES[method]
        recipe = replace(recipe, steps=max(1, round(recipe.steps * scale)))
        classifier, seconds = meta_train(method, x, y, recipe=recipe)
        rows.append(Row(method, evaluate_method(classifier, sets), seconds, recipe.steps))
    return rows


def table(rows: list[Row]) -> str:
    base = rows[0].results["digits"].mean
    lines = [
        f"{'method':<11} {'digits 5-9':>15} {'vs pixels':>9} {'glyphs':>15} {'steps':>6} {'s':>5}"
    ]
    for r in rows:
        d, g = r.results["digits"], r.results["glyphs"]
        delta = 100 * (d.mean - base)
        lines.append(
            f"{r.method:<11} {d!s:>15} {delta:>+9.2f} {g!s:>15} {r.steps:>6} {r.seconds:>5.0f}"
        )
    return "\n".join(lines)


def plot(rows: list[Row], out: Path) -> None:
    """Mean ± 95% CI per method and data set, with each episode's accuracy as a faint dot;
    written atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, ("digits", "glyphs"), strict=True):
        for i, r in enumerate(rows):
            res = r.results[name]
            jitter = rng.uniform(-0.25, 0.25, len(res.accuracies))
            ax.scatter(i + jitter, res.accuracies, s=2, alpha=0.15, color=f"C{i}")
            ax.errorbar(i, res.mean, yerr=res.ci95, fmt="o", color="black", capsize=6)
        ax.axhline(rows[0].results[name].mean, ls="--", color="grey", lw=1)
        ax.set_xticks(range(len(rows)), [r.method for r in rows], rotation=20)
        ax.set_title(f"5-way 5-shot, {'digits 5-9' if name == 'digits' else 'held-out glyphs'}")
    axes[0].set_ylabel("episode accuracy")
    fig.tight_layout()
    save_png(fig, out, dpi=80)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("fewshot_digits.png"))
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not args.scale > 0:
        parser.error(f"--methods: choose from {', '.join(METHODS)}; --scale must be > 0")
    rows = run(methods, args.scale, args.episodes)
    print(table(rows))
    plot(rows, args.out)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
