"""Few-shot learning: episodes, prototypical networks, MAML / Meta-SGD / ANIL on torch.func.

Data without download: :func:`make_glyphs` (procedural Omniglot-like glyphs) and
:func:`load_digits_images` (scikit-learn's bundled digits).
"""

from netarchitect.meta.digits import load_digits_images
from netarchitect.meta.episodes import (
    Episode,
    EpisodeMixture,
    EpisodeSampler,
    split_classes,
    stack_episodes,
)
from netarchitect.meta.errors import FewShotError
from netarchitect.meta.evaluate import FewShotResult, evaluate_episodes, mean_ci95
from netarchitect.meta.glyphs import glyph_classes, make_glyphs, render_glyphs
from netarchitect.meta.maml import MAML, train_maml
from netarchitect.meta.protonet import ProtoNet, prototype_logits, prototypes, train_protonet

__all__ = [
    "MAML",
    "Episode",
    "EpisodeMixture",
    "EpisodeSampler",
    "FewShotError",
    "FewShotResult",
    "ProtoNet",
    "evaluate_episodes",
    "glyph_classes",
    "load_digits_images",
    "make_glyphs",
    "mean_ci95",
    "prototype_logits",
    "prototypes",
    "render_glyphs",
    "split_classes",
    "stack_episodes",
    "train_maml",
    "train_protonet",
]
