"""ProtoPNet's prototype layer (Chen et al., "This Looks Like That", NeurIPS 2019).

A feature map is mapped by 1×1 add-on convolutions into a latent space where each of ``P``
learned prototypes (``num_classes · prototypes_per_class``, each owned by one class) is
compared to every 1×1 latent patch; the closest patch gives the prototype's similarity and a
last linear layer turns similarities into class logits. Training losses, projection of the
prototypes onto training patches and explanations are in :mod:`netarchitect.interpret.prototypes`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SpecError
from ..registry import Example, register_block
from ._factory import check_positive_int, example_tensor
from .basic import Conv2d, Linear

__all__ = ["PrototypeHead", "cluster_cost", "separation_cost"]

Device = torch.device | str | None
Dtype = torch.dtype | None


@register_block("prototype_head")
class PrototypeHead(nn.Module):
    """ProtoPNet head: latent ``z = σ(conv₁ₓ₁(ReLU(conv₁ₓ₁(f))))``, squared distances
    ``d_{j,h,w} = ‖z_{:,h,w} − p_j‖²``, min-distance pooling ``d_j = min_{h,w} d_{j,h,w}``,
    similarity ``s_j = log((d_j + 1) / (d_j + ε))`` and logits ``W s`` with ``W`` initialised
    to 1 for a prototype's own class and ``off_class_weight`` (−0.5) elsewhere.

    In training mode (or with ``record = True``, which
    :func:`netarchitect.interpret.prototypes.recording` sets) each forward keeps
    :attr:`details` (``latent``, ``distances``, ``min_distances``);
    :meth:`auxiliary_loss` turns them into ProtoPNet's extra loss terms
    ``cluster_weight · clst − separation_weight · sep + l1_weight · ‖W_off‖₁``.

    Shapes:
        ``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``; ``latent``
        ``(B, prototype_dim, H, W)``, ``distances`` ``(B, P, H, W)``, ``min_distances`` ``(B, P)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        prototypes_per_class: int = 10,
        prototype_dim: int = 64,
        epsilon: float = 1e-4,
        off_class_weight: float = -0.5,
        cluster_weight: float = 0.8,
        separation_weight: float = 0.08,
        l1_weight: float = 1e-4,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("prototypes_per_class", prototypes_per_class),
                            ("prototype_dim", prototype_dim)):
            check_positive_int(name, value)
        if not epsilon > 0:
            raise SpecError(f"epsilon={epsilon!r} must be > 0", path="epsilon")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_classes, self.epsilon = num_classes, float(epsilon)
        self.off_class_weight = float(off_class_weight)
        self.loss_weights = (float(cluster_weight), float(separation_weight), float(l1_weight))
        self.num_prototypes = num_classes * prototypes_per_class
        d = prototype_dim
        self.add_on = nn.Sequential(
            Conv2d(in_channels, d, kernel_size=1, **factory),
            nn.ReLU(),
            Conv2d(d, d, kernel_size=1, **factory),
            nn.Sigmoid(),
        )
        self.prototypes = nn.Parameter(torch.empty(self.num_prototypes, d, **factory))
        self.last_layer = Linear(self.num_prototypes, num_classes, bias=False, **factory)
        owner = torch.arange(self.num_prototypes, device=device) // prototypes_per_class
        self.register_buffer("prototype_class", owner, persistent=True)  # (P,) owning class
        self.record = False
        self.details: dict[str, Tensor] = {}
        self.reset_parameters()

    @property
    def class_identity(self) -> Tensor:
        """``(P, num_classes)`` one-hot: prototype ``j`` belongs to class ``prototype_class[j]``."""
        onehot = torch.zeros(self.num_prototypes, self.num_classes, device=self.prototypes.device,
                             dtype=self.prototypes.dtype)
        return onehot.scatter_(1, self.prototype_class[:, None], 1.0)

    def reset_parameters(self) -> None:
        for m in self.add_on:
            if isinstance(m, Conv2d):
                m.reset_parameters()
        if self.prototypes.device.type == "meta":
            return
        with torch.no_grad():
            nn.init.uniform_(self.prototypes)  # the latent space is [0, 1] (sigmoid)
            self.prototype_class.copy_(
                torch.arange(self.num_prototypes, device=self.prototype_class.device)
                // (self.num_prototypes // self.num_classes)
            )
        self.set_last_layer_identity()

    def set_last_layer_identity(self) -> None:
        """``W = identityᵀ + off_class_weight · (1 − identity)ᵀ`` (ProtoPNet's initialisation)."""
        if self.prototypes.device.type == "meta":
            return
        ident = self.class_identity.T  # (K, P)
        with torch.no_grad():
            self.last_layer.weight.copy_(ident + self.off_class_weight * (1 - ident))

    @classmethod
    def example(cls) -> Example:
        return Example(
            {"in_channels": 4, "num_classes": 3, "prototypes_per_class": 2, "prototype_dim": 5},
            (example_tensor(2, 4, 3, 3),),
        )

    def latent(self, x: Tensor) -> Tensor:
        """The add-on layers' output, the space prototypes live in ``(B, D, H, W)``."""
        if x.dim() != 4:
            raise ValueError(f"PrototypeHead: input shape {tuple(x.shape)}, expected (B, C, H, W)")
        return self.add_on(x)

    def distances(self, z: Tensor) -> Tensor:
        """Squared L2 distance of each prototype to each latent patch ``(B, P, H, W)``, in at
        least float32 (outside autocast: ``‖z‖² − 2 z·p + ‖p‖²`` cancels badly in 16 bits)."""
        dtype = torch.promote_types(z.dtype, torch.float32)
        off = (contextlib.nullcontext() if z.device.type == "meta"
               else torch.autocast(z.device.type, enabled=False))
        with off:
            z, p = z.to(dtype), self.prototypes.to(dtype)
            cross = torch.einsum("bdhw,pd->bphw", z, p)
            z2 = z.square().sum(1, keepdim=True)  # (B, 1, H, W)
            d2 = z2 - 2 * cross + p.square().sum(1)[None, :, None, None]
        return d2.clamp_min(0)

    def similarity(self, d: Tensor) -> Tensor:
        """``log((d + 1) / (d + ε))``: large for close patches, ~0 for far ones."""
        return torch.log((d + 1) / (d + self.epsilon))

    def forward(self, x: Tensor) -> Tensor:
        z = self.latent(x)
        dist = self.distances(z)  # (B, P, H, W)
        min_d = dist.flatten(2).min(-1).values  # (B, P)
        if self.record or self.training:
            self.details = {"latent": z, "distances": dist, "min_distances": min_d}
        return self.last_layer(self.similarity(min_d).to(z.dtype))

    def auxiliary_loss(self, target: Tensor) -> Tensor:
        """ProtoPNet's terms beside the cross-entropy for the last recorded forward with labels
        ``target`` ``(B,)``: ``λ_c · clst − λ_s · sep + λ_1 · ‖W ⊙ (1 − identity)ᵀ‖₁``."""
        if "min_distances" not in self.details:
            raise RuntimeError("PrototypeHead.auxiliary_loss: no forward recorded yet")
        min_d = self.details["min_distances"]
        lam_c, lam_s, lam_1 = self.loss_weights
        off = self.last_layer.weight * (1 - self.class_identity.T)
        return (
            lam_c * cluster_cost(min_d, self.prototype_class, target)
            - lam_s * separation_cost(min_d, self.prototype_class, target)
            + lam_1 * off.abs().sum()
        )

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles drop the recorded tensors (and their autograd graph)."""
        state = dict(self.__dict__)
        state["details"] = {}
        return state

    def extra_repr(self) -> str:
        return f"prototypes={self.num_prototypes}, num_classes={self.num_classes}"


def cluster_cost(min_distances: Tensor, prototype_class: Tensor, target: Tensor) -> Tensor:
    """Mean over samples of the distance to the nearest prototype of the sample's class
    (``min_distances`` ``(B, P)``, ``prototype_class`` ``(P,)``, ``target`` ``(B,)``)."""
    own = prototype_class[None, :] == target[:, None]  # (B, P)
    return min_distances.masked_fill(~own, float("inf")).min(1).values.mean()


def separation_cost(min_distances: Tensor, prototype_class: Tensor, target: Tensor) -> Tensor:
    """Mean over samples of the distance to the nearest prototype of another class."""
    own = prototype_class[None, :] == target[:, None]  # (B, P)
    return min_distances.masked_fill(own, float("inf")).min(1).values.mean()
