"""An interpretable-by-design digit classifier: ProtoPNet (Chen et al. 2019) on scikit-learn's
8×8 digits, trained with the search's ``fit_loop`` (the prototype losses added through the
head's ``auxiliary_loss``), its prototypes projected onto real training patches, the last
layer refitted, then explained.

Prints test accuracy after training, after projection and after refitting the last layer,
and writes a PNG: one column per class with each prototype's source training image, its
similarity map and the patch it was projected onto (the red box: the latent patch's
receptive field centre), plus a test image with its three most similar prototypes.

    python examples/prototypes_digits.py [--quick] [--epochs 30] [--out prototypes.png]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import netarchitect as na
from netarchitect.interpret.prototypes import finetune_last_layer, project_prototypes
from netarchitect.interpret.report import plot_prototypes
from netarchitect.interpret.specs import protopnet_spec
from netarchitect.search.tasks import get_task
from netarchitect.search.trainer import TrainConfig


@dataclass
class Result:
    trained: float
    projected: float
    refitted: float
    seconds: float


def run(epochs: int, prototypes_per_class: int, seed: int = 0):
    """Train, project, refit; the task, model, projection and accuracies."""
    task = get_task("digits")
    torch.manual_seed(seed)
    model = na.build(
        protopnet_spec(task.input_shape, task.num_classes,
                       prototypes_per_class=prototypes_per_class),
        seed=seed,
    )
    fit = task.fit(model, TrainConfig(epochs=epochs, lr=1e-2, seed=seed,
                                                         patience=max(5, epochs)))
    trained = task.test(model)[0]
    loader = [(task.x_train[i : i + 256], task.y_train[i : i + 256])
              for i in range(0, len(task.x_train), 256)]
    projection = project_prototypes(model, loader)
    projected = task.test(model)[0]
    finetune_last_layer(model, task.x_train, task.y_train)
    refitted = task.test(model)[0]
    return task, model, projection, Result(trained, projected, refitted, fit.seconds)


def main(argv: Sequence[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 prototype per class")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("prototypes_digits.png"))
    args = parser.parse_args(argv)
    epochs, per = (3, 1) if args.quick else (args.epochs, args.per_class)
    task, model, projection, result = run(epochs, per)
    plot_prototypes(model, projection, args.out, example=task.x_test[:1])
    print(f"ProtoPNet on digits, {epochs} epochs, {per} prototype(s) per class "
          f"({result.seconds:.1f} s training)")
    print(f"test acc after training:        {100 * result.trained:.2f}%")
    print(f"test acc after projection:      {100 * result.projected:.2f}%")
    print(f"test acc after last-layer refit: {100 * result.refitted:.2f}%")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
