"""GAN generators and discriminators as spec-built networks: MLPs for 2-D data and
DCGAN-style convolutional nets for images (Radford et al., 2016).

A generator (``roles: {kind: gan_generator}``, :class:`GeneratorNetwork`) maps latents
``z ~ N(0, I)`` to samples and adds :meth:`~GeneratorNetwork.sample`; a discriminator is a
plain :class:`~netarchitect.network.Network` returning one logit (critic value) per sample.
``spectral_norm=True`` (Miyato et al., 2018) builds the discriminator from
``spectral_linear`` / ``spectral_conv2d`` blocks: torch's
``torch.nn.utils.parametrizations.spectral_norm`` on our ``linear`` / ``conv2d``, with one
power iteration per training-mode forward; it replaces the discriminator's normalisation.

DCGAN: the generator projects ``z`` to a ``channels[0] × s × s`` map (``s = img_size /
2^len(channels)``), then a ``conv_transpose_upsample`` (kernel 4, BatchNorm, ReLU) per entry
of ``channels`` and a 3×3 convolution with ``tanh``; the discriminator halves the size with
4×4 stride-2 convolutions and LeakyReLU(0.2) (BatchNorm after the first unless spectral),
then a linear logit. The training arithmetic is in :mod:`netarchitect.generative.gan`.

Registered models: ``gan_mlp_generator``, ``gan_mlp_discriminator`` (``_sn``: spectral),
``dcgan_generator``, ``dcgan_discriminator`` (``_sn``: spectral).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import SpecError
from ..layers._factory import check_positive_int, example_tensor
from ..layers.basic import Conv2d, Linear
from ..network import Network
from ..registry import Example, register_block, register_model, register_network_kind
from ._graph_builder import GraphBuilder
from ._stages import check_positive, check_widths
from .vae import Unflatten  # noqa: F401 (registers the unflatten block)

__all__ = [
    "GeneratorNetwork",
    "SpectralConv2d",
    "SpectralLinear",
    "dcgan_discriminator",
    "dcgan_generator",
    "gan_mlp_discriminator",
    "gan_mlp_generator",
]

Device = torch.device | str | None
Dtype = torch.dtype | None

LEAKY = {"name": "leaky_relu", "negative_slope": 0.2}


def _noop() -> None:
    """The parametrisation list's reset: the owning layer re-initialises it."""


class _SpectralNormed:
    """Mixin: ``spectral_norm`` on ``weight``; :meth:`reset_parameters` re-draws the original
    weight (the base layer's init) and the power-iteration vectors ``u``, ``v``."""

    def _apply_spectral_norm(self, n_power_iterations: int) -> None:
        check_positive_int("n_power_iterations", n_power_iterations)
        spectral_norm(self, n_power_iterations=n_power_iterations)  # type: ignore[arg-type]
        plist = self.parametrizations.weight  # type: ignore[attr-defined]
        plist.reset_parameters = _noop  # init.reset_all: the layer below resets it

    def reset_parameters(self) -> None:
        if not hasattr(self, "parametrizations"):  # during the base __init__
            super().reset_parameters()  # type: ignore[misc]
            return
        plist = self.parametrizations.weight  # type: ignore[attr-defined]
        original = plist.original
        if original.is_meta:
            return
        with torch.no_grad():
            nn.init.kaiming_uniform_(original, a=5**0.5)  # nn.Linear / nn.Conv2d's init
            if self.bias is not None:  # type: ignore[attr-defined]
                bound = 1 / max(original[0].numel(), 1) ** 0.5
                nn.init.uniform_(self.bias, -bound, bound)  # type: ignore[attr-defined]
            sn = plist[0]
            mat = sn._reshape_weight_to_matrix(original)
            sn._u.copy_(F.normalize(torch.randn_like(sn._u), dim=0, eps=sn.eps))
            sn._v.copy_(F.normalize(torch.randn_like(sn._v), dim=0, eps=sn.eps))
            sn._power_method(mat, 15)


@register_block("spectral_linear")
class SpectralLinear(_SpectralNormed, Linear):
    """:class:`~netarchitect.layers.basic.Linear` with a spectrally normalised weight
    ``W / σ(W)`` (``σ`` by power iteration, updated in training mode).

    Shapes:
        input ``(*, in_features)`` -> output ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        n_power_iterations: int = 1,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._apply_spectral_norm(n_power_iterations)

    @classmethod
    def example(cls) -> Example:
        return Example({"in_features": 8, "out_features": 4}, (example_tensor(2, 8),))


@register_block("spectral_conv2d")
class SpectralConv2d(_SpectralNormed, Conv2d):
    """:class:`~netarchitect.layers.basic.Conv2d` with a spectrally normalised weight.

    Shapes:
        input ``(B, in_channels, H, W)`` -> output ``(B, out_channels, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
        n_power_iterations: int = 1,
        device: Device = None,
        dtype: Dtype = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                         padding=padding, bias=bias, device=device, dtype=dtype)
        self._apply_spectral_norm(n_power_iterations)

    @classmethod
    def example(cls) -> Example:
        kwargs = {"in_channels": 2, "out_channels": 3, "kernel_size": 4, "stride": 2,
                  "padding": 1}
        return Example(kwargs, (example_tensor(2, 2, 8, 8),))


@register_network_kind("gan_generator")
class GeneratorNetwork(Network):
    """A spec-built GAN generator: ``forward(z)`` maps latents ``(B, latent_dim)`` to samples.

    Shapes:
        z: ``(B, latent_dim)`` -> ``(B, *sample_shape)``.
    """

    @property
    def latent_dim(self) -> int:
        """Size of ``z``."""
        return int(self.spec.inputs[0].shape[0])

    def sample(self, num_samples: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``G(z)`` for ``z ~ N(0, I)`` drawn on the CPU with ``generator``."""
        check_positive_int("num_samples", num_samples)
        ref = next(self.parameters())
        z = torch.randn(num_samples, self.latent_dim, generator=generator)
        return self(z.to(device=ref.device, dtype=ref.dtype))


def _generator(b: GraphBuilder, description: str, device: Device, dtype: Dtype,
               seed: int | None) -> GeneratorNetwork:
    spec = b.make_spec({"kind": "gan_generator"}, description=description)
    return GeneratorNetwork(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def _network(b: GraphBuilder, description: str, device: Device, dtype: Dtype,
             seed: int | None) -> Network:
    return Network(b.make_spec({}, description=description), device=device, dtype=dtype,
                   seed=seed)


def gan_mlp_generator(
    *,
    latent_dim: int = 2,
    out_features: int = 2,
    hidden: Sequence[int] = (128, 128, 128),
    act_layer: str = "relu",
    name: str = "gan_mlp_generator",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> GeneratorNetwork:
    """MLP generator for low-dimensional data: ``hidden`` linear + ``act_layer`` layers, then a
    linear ``out`` to ``out_features``."""
    check_positive("latent_dim", latent_dim)
    check_positive("out_features", out_features)
    b = GraphBuilder(name, {"z": (latent_dim,)})
    for i, width in enumerate(check_widths("hidden", hidden)):
        b.add(f"fc{i}", "linear", {"out_features": width})
        b.add(f"act{i}", act_layer)
    b.add("out", "linear", {"out_features": out_features})
    return _generator(b, "MLP GAN generator", device, dtype, seed)


def gan_mlp_discriminator(
    *,
    in_features: int = 2,
    hidden: Sequence[int] = (128, 128, 128),
    spectral_norm: bool = False,
    name: str = "gan_mlp_discriminator",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> Network:
    """MLP discriminator: ``hidden`` linear + LeakyReLU(0.2) layers and a linear logit
    (``spectral_linear`` throughout with ``spectral_norm``)."""
    check_positive("in_features", in_features)
    lin = "spectral_linear" if spectral_norm else "linear"
    b = GraphBuilder(name, {"x": (in_features,)})
    for i, width in enumerate(check_widths("hidden", hidden)):
        b.add(f"fc{i}", lin, {"out_features": width})
        b.add_layer(f"act{i}", LEAKY)
    b.add("logit", lin, {"out_features": 1})
    return _network(b, "MLP GAN discriminator", device, dtype, seed)


def _check_image(img_size: Any, channels: tuple[int, ...]) -> int:
    check_positive("img_size", img_size)
    factor = 2 ** len(channels)
    if img_size % factor:
        raise SpecError(
            f"img_size={img_size} cannot be halved {len(channels)} times (one per entry of "
            f"channels={list(channels)}): it must be divisible by {factor}",
            path="img_size",
        )
    return img_size // factor


def dcgan_generator(
    *,
    latent_dim: int = 32,
    out_chans: int = 1,
    img_size: int = 16,
    channels: Sequence[int] = (128, 64),
    name: str = "dcgan_generator",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> GeneratorNetwork:
    """DCGAN generator: linear projection to ``channels[0] × s × s`` (BatchNorm, ReLU), one
    ×2 ``conv_transpose_upsample`` per entry of ``channels``, a 3×3 ``out`` conv and
    ``tanh`` (samples in [-1, 1])."""
    check_positive("latent_dim", latent_dim)
    check_positive("out_chans", out_chans)
    channels = check_widths("channels", channels)
    s = _check_image(img_size, channels)
    b = GraphBuilder(name, {"z": (latent_dim,)})
    b.add("project", "linear", {"out_features": channels[0] * s * s, "bias": False})
    b.add("project_norm", "batchnorm1d")
    b.add("project_act", "relu")
    b.add("grid", "unflatten", {"shape": [channels[0], s, s]})
    for i, c in enumerate(channels):
        b.add(f"up{i}", "conv_transpose_upsample",
              {"out_channels": c, "kernel_size": 4, "norm_layer": "batchnorm2d",
               "act_layer": "relu"})
    b.add("out_conv", "conv2d", {"out_channels": out_chans, "kernel_size": 3})
    b.add("out", "tanh")
    return _generator(b, "DCGAN generator", device, dtype, seed)


def dcgan_discriminator(
    *,
    in_chans: int = 1,
    img_size: int = 16,
    channels: Sequence[int] = (64, 128),
    spectral_norm: bool = False,
    name: str = "dcgan_discriminator",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> Network:
    """DCGAN discriminator: a 4×4 stride-2 conv per entry of ``channels`` with LeakyReLU(0.2)
    (BatchNorm after all but the first, unless ``spectral_norm``), then a linear logit."""
    check_positive("in_chans", in_chans)
    channels = check_widths("channels", channels)
    _check_image(img_size, channels)
    conv, lin = ("spectral_conv2d", "spectral_linear") if spectral_norm else ("conv2d", "linear")
    b = GraphBuilder(name, {"x": (in_chans, img_size, img_size)})
    for i, c in enumerate(channels):
        b.add(f"conv{i}", conv, {"out_channels": c, "kernel_size": 4, "stride": 2,
                                 "padding": 1})
        if i and not spectral_norm:
            b.add(f"norm{i}", "batchnorm2d")
        b.add_layer(f"act{i}", LEAKY)
    b.add("flatten", "flatten")
    b.add("logit", lin, {"out_features": 1})
    return _network(b, "DCGAN discriminator", device, dtype, seed)


def _ex(kwargs: dict[str, Any], *shape: int, sn: bool = False) -> Callable[[], Example]:
    skip = {"grad_checkpointing": _SN_RECOMPUTE} if sn else {}
    return lambda: Example(kwargs, (example_tensor(*shape),), skip=skip)


_SN_RECOMPUTE = (
    "spectral norm's power iteration updates u, v in every training-mode forward, so a "
    "recomputed forward normalises by another sigma (torch's spectral_norm is not "
    "checkpoint-safe)"
)

_IMG = {"img_size": 8, "channels": [4, 8]}


@register_model("gan_mlp_generator", example=_ex({"hidden": [8, 8]}, 2, 2))
def gan_mlp_generator_model(**kwargs: Any) -> GeneratorNetwork:
    """MLP generator for 2-D points: 2 latents, 3 × 128 ReLU (the 8-Gaussian ring setup)."""
    return gan_mlp_generator(**kwargs)


@register_model("gan_mlp_discriminator", example=_ex({"hidden": [8]}, 2, 2))
def gan_mlp_discriminator_model(**kwargs: Any) -> Network:
    """MLP discriminator for 2-D points: 3 × 128 LeakyReLU(0.2)."""
    return gan_mlp_discriminator(**kwargs)


@register_model("gan_mlp_discriminator_sn", example=_ex({"hidden": [8]}, 2, 2, sn=True))
def gan_mlp_discriminator_sn_model(**kwargs: Any) -> Network:
    """:func:`gan_mlp_discriminator` with spectral normalisation."""
    return gan_mlp_discriminator(**{"spectral_norm": True, "name": "gan_mlp_discriminator_sn",
                                    **kwargs})


@register_model("dcgan_generator",
                example=_ex({"latent_dim": 4, "img_size": 8, "channels": [8, 4]}, 2, 4))
def dcgan_generator_model(**kwargs: Any) -> GeneratorNetwork:
    """DCGAN generator of 16×16 single-channel images: 32 latents, 128-64 channels."""
    return dcgan_generator(**kwargs)


@register_model("dcgan_discriminator", example=_ex(_IMG, 2, 1, 8, 8))
def dcgan_discriminator_model(**kwargs: Any) -> Network:
    """DCGAN discriminator of 16×16 single-channel images: 64-128 channels, BatchNorm."""
    return dcgan_discriminator(**kwargs)


@register_model("dcgan_discriminator_sn", example=_ex(_IMG, 2, 1, 8, 8, sn=True))
def dcgan_discriminator_sn_model(**kwargs: Any) -> Network:
    """:func:`dcgan_discriminator` with spectral normalisation instead of BatchNorm."""
    return dcgan_discriminator(**{"spectral_norm": True, "name": "dcgan_discriminator_sn",
                                  **kwargs})
