"""Output heads beyond the plain linear classifier: heteroscedastic regression, ordinal
regression, metric-learning embeddings and angular-margin classifiers.

Every head maps ``(*, in_features)`` features and is named by ``out_features`` (targets,
classes or embedding width), so ``reset_classifier(n, head=...)`` can put any of them on any
backbone. The matching losses are in :mod:`netarchitect.losses`. Multi-class, multi-label,
regression and per-token heads are the ``linear`` block (the loss makes the difference).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import check_positive_int, example_tensor
from .basic import Linear

__all__ = ["HEADS", "AngularMarginHead", "EmbeddingHead", "GaussianHead", "OrdinalHead"]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: Head names ``reset_classifier(head=...)`` accepts, with the loss each is trained with.
HEADS = {
    "linear": "cross_entropy (classes), bce / asymmetric (multi-label), mse / huber (regression)",
    "gaussian_head": "gaussian_nll",
    "ordinal_head": "ordinal",
    "embedding_head": "a metric-learning loss on the normalised embeddings",
    "angular_margin_head": "cross_entropy on the margin logits (labels passed in training)",
    "concept_bottleneck_head": "cross_entropy + the head's auxiliary_loss (label-derived concepts)",
}


@register_block("gaussian_head")
class GaussianHead(nn.Module):
    """Heteroscedastic regression (Nix & Weigend, 1994): a mean and a variance per target,
    ``var = softplus(v) + min_var``; trained with the Gaussian negative log-likelihood.

    Shapes:
        ``(*, in_features)`` -> ``(*, 2 · out_features)``: means then variances
        (:meth:`split` separates them).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        *,
        min_var: float = 1e-6,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("out_features", out_features)
        if not min_var > 0:
            raise SpecError(f"min_var={min_var!r} must be > 0", path="min_var")
        self.out_features, self.min_var = out_features, float(min_var)
        self.proj = Linear(in_features, 2 * out_features, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 6, "out_features": 2}, (example_tensor(3, 6),))

    @staticmethod
    def split(out: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, var)`` of a head output."""
        mean, var = out.chunk(2, dim=-1)
        return mean, var

    def forward(self, x: Tensor) -> Tensor:
        mean, raw = self.proj(x).chunk(2, dim=-1)
        return torch.cat([mean, F.softplus(raw) + self.min_var], dim=-1)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, min_var={self.min_var}"


@register_block("ordinal_head")
class OrdinalHead(nn.Module):
    """Cumulative-link ordinal regression (McCullagh, 1980; logit link): one score
    ``s = wᵀx`` and ordered thresholds ``θ₁ < … < θ_{K-1}`` (``θ₁`` free, increments
    ``softplus``), giving ``P(y > k) = σ(s − θ_{k+1})``.

    Shapes:
        ``(*, in_features)`` -> ``(*, out_features − 1)`` cumulative logits
        (:meth:`probabilities` turns them into class probabilities ``(*, out_features)``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("out_features", out_features)
        if out_features < 2:
            raise SpecError(
                f"out_features={out_features}: an ordinal head needs at least 2 classes",
                path="out_features",
            )
        self.out_features = out_features
        self.score = Linear(in_features, 1, bias=False, device=device, dtype=dtype)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.first = nn.Parameter(torch.empty((), **factory))
        self.gaps = nn.Parameter(torch.empty(out_features - 2, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.score.reset_parameters()
        k = self.out_features
        if self.first.device.type == "meta":
            return
        with torch.no_grad():  # thresholds evenly spread over [-1, 1]
            self.first.fill_(-1.0 if k > 2 else 0.0)
            step = 2.0 / max(1, k - 2)
            self.gaps.fill_(math.log(math.expm1(step)))  # softplus⁻¹(step)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 5, "out_features": 4}, (example_tensor(3, 5),))

    def thresholds(self) -> Tensor:
        """The ordered thresholds ``θ`` ``(out_features − 1,)``."""
        steps = F.softplus(self.gaps)
        return torch.cat([self.first[None], self.first + torch.cumsum(steps, 0)])

    def forward(self, x: Tensor) -> Tensor:
        return self.score(x) - self.thresholds()  # (*, K-1): logit of P(y > k)

    @staticmethod
    def probabilities(logits: Tensor) -> Tensor:
        """Class probabilities ``P(y = k) = P(y > k − 1) − P(y > k)`` ``(*, K)``."""
        above = torch.sigmoid(logits)
        ones = torch.ones_like(above[..., :1])
        upper = torch.cat([ones, above], dim=-1)
        lower = torch.cat([above, torch.zeros_like(ones)], dim=-1)
        return upper - lower

    @staticmethod
    def predict(logits: Tensor) -> Tensor:
        """The most probable class of each sample (int64)."""
        return OrdinalHead.probabilities(logits).argmax(-1)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}"


@register_block("embedding_head")
class EmbeddingHead(nn.Module):
    """A metric-learning embedding: a linear projection normalised to the unit sphere.

    Shapes:
        ``(*, in_features)`` -> ``(*, out_features)`` with ``‖y‖₂ = 1``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 128,
        *,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("out_features", out_features)
        self.proj = Linear(in_features, out_features, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 6, "out_features": 4}, (example_tensor(3, 6),))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.proj(x), dim=-1)


@register_block("angular_margin_head")
class AngularMarginHead(nn.Module):
    """Cosine classifier with an additive angular (ArcFace, Deng et al. 2019) or cosine
    (CosFace, Wang et al. 2018) margin: logits ``s · cos θⱼ``, and for the true class during
    training ``s · cos(θ_y + m)`` (ArcFace; past ``θ + m > π`` the monotone extension
    ``cos θ − m·sin m``) or ``s · (cos θ_y − m)`` (CosFace).

    Shapes:
        ``(*, in_features)`` (``labels``: ``(*,)`` int64, optional) -> ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        margin: float = 0.5,
        scale: float = 30.0,
        kind: str = "arcface",
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        if kind not in ("arcface", "cosface"):
            raise SpecError(f"kind={kind!r}: use 'arcface' or 'cosface'", path="kind")
        if not 0 <= margin < (math.pi / 2 if kind == "arcface" else 1):
            raise SpecError(f"margin={margin!r} out of range for {kind}", path="margin")
        if not scale > 0:
            raise SpecError(f"scale={scale!r} must be > 0", path="scale")
        self.out_features, self.margin, self.scale, self.kind = out_features, margin, scale, kind
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, device=device, dtype=dtype)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)

    @classmethod
    def example(cls) -> Example:
        labels = torch.tensor([0, 2, 1])
        return Example(
            {"in_features": 6, "out_features": 3},
            (example_tensor(3, 6),),
            forward_kwargs={"labels": labels},
            skip={"batch_independence": "the labels are per sample, passed whole"},
        )

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        cos = F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))
        if labels is None or self.margin == 0:
            return self.scale * cos
        if labels.shape != cos.shape[:-1]:
            raise ValueError(f"labels: shape {tuple(labels.shape)} for logits {tuple(cos.shape)}")
        target = cos.gather(-1, labels[..., None])  # (*, 1) cos θ_y
        if self.kind == "cosface":
            shifted = target - self.margin
        else:
            m = self.margin
            sin = (1 - target.square()).clamp_min(0).sqrt()
            arc = target * math.cos(m) - sin * math.sin(m)  # cos(θ + m)
            shifted = torch.where(target > math.cos(math.pi - m), arc, target - m * math.sin(m))
        return self.scale * cos.scatter(-1, labels[..., None], shifted)

    def extra_repr(self) -> str:
        return f"{self.kind}, out_features={self.out_features}, m={self.margin}, s={self.scale}"
