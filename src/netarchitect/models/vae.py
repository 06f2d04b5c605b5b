"""Variational autoencoders (Kingma & Welling, 2014) as spec-built networks.

A VAE spec chains an encoder to a ``posterior`` node whose output is ``[mean, logvar]``
(``2 · latent_dim`` features) of ``q(z | x) = N(mean, diag e^logvar)``, a ``reparameterize``
node ``z`` (a sample in training, the mean in eval mode, or ``mean + σ·noise`` for a given
``noise`` context), and a decoder whose output (the spec's single output) parameterises
``p(x | z)``: Bernoulli logits or a Gaussian mean (``roles.likelihood``).

:class:`VAENetwork` (``roles: {kind: vae, posterior, latent, likelihood}``) adds
:meth:`~VAENetwork.encode`, :meth:`~VAENetwork.decode`, :meth:`~VAENetwork.reconstruct` and
:meth:`~VAENetwork.sample`; the ELBO and the importance-weighted bound live in
:mod:`netarchitect.generative.vae`.

Registered models: ``vae_mlp`` (fully connected) and ``vae_conv`` (strided convolutions
down, transposed convolutions up), both over ``(in_chans, img_size, img_size)`` images
(scikit-learn's 8×8 digits, or 16×16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import Problem, SpecError
from ..layers._factory import ParameterFree, check_positive_int, example_tensor
from ..network import Network
from ..registry import Example, register_block, register_model, register_network_kind
from ..spec import NetworkSpec
from ._graph_builder import GraphBuilder
from ._stages import check_positive, check_widths

__all__ = ["LIKELIHOODS", "Reparameterize", "Unflatten", "VAENetwork", "vae_conv", "vae_mlp"]

Device = torch.device | str | None
Dtype = torch.dtype | None

#: The decoder likelihoods: Bernoulli (output = logits) and Gaussian (output = mean).
LIKELIHOODS = ("bernoulli", "gaussian")


@register_block("unflatten")
class Unflatten(ParameterFree, nn.Module):
    """Reshapes the feature vector into ``shape`` (a decoder's ``(C, H, W)`` start).

    Shapes:
        input ``(B, prod(shape))`` -> output ``(B, *shape)``.
    """

    def __init__(
        self, *, shape: Sequence[int], device: Device = None, dtype: Dtype = None
    ) -> None:
        super().__init__()
        if isinstance(shape, int) or not shape:
            raise SpecError(f"shape={shape!r} must be a non-empty list of sizes", path="shape")
        for i, size in enumerate(shape):
            check_positive_int(f"shape[{i}]", size)
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)  # (B, *shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    @classmethod
    def example(cls) -> Example:
        return Example({"shape": [2, 3, 2]}, (example_tensor(2, 12),))


@register_block("reparameterize")
class Reparameterize(ParameterFree, nn.Module):
    """The reparameterisation trick: splits ``[mean, logvar]`` and returns
    ``z = mean + exp(logvar / 2) · ε``, with ``ε`` the ``noise`` context when given, else
    ``ε ~ N(0, I)`` in training mode and ``ε = 0`` (the posterior mean) in eval mode.

    Shapes:
        input ``(B, 2L)``, noise ``(B, L)`` -> output ``(B, L)``.
    """

    def __init__(self, *, device: Device = None, dtype: Dtype = None) -> None:
        super().__init__()

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if x.shape[-1] % 2:
            raise ValueError(f"reparameterize expects [mean, logvar] (2L features), got {x.shape[-1]}")
        mean, logvar = x.chunk(2, dim=-1)
        if noise is None:
            if not self.training:
                return mean
            noise = torch.randn_like(mean)
        return mean + (0.5 * logvar).exp() * noise

    @classmethod
    def example(cls) -> Example:
        return Example({}, (example_tensor(2, 6),))


@register_network_kind("vae")
class VAENetwork(Network):
    """A spec-built VAE: ``forward(x, noise=None)`` returns the decoder's output for a
    reparameterised ``z`` (logits of a Bernoulli or the mean of a Gaussian ``p(x | z)``).

    Roles: ``posterior`` (the ``[mean, logvar]`` node), ``latent`` (the ``z`` node),
    ``likelihood`` (``bernoulli`` or ``gaussian``).

    Shapes:
        x: ``(B, *spec.inputs[0].shape)`` -> ``(B, *spec.inputs[0].shape)``; z: ``(B, L)``.
    """

    @classmethod
    def check_roles(cls, spec: NetworkSpec) -> list[Problem]:
        """``posterior`` and ``latent`` name nodes; ``likelihood`` is known."""
        ids, roles = {n.id for n in spec.nodes}, spec.roles
        problems = [
            Problem(f"roles.{role}", f"unknown node {roles.get(role)!r}")
            for role in ("posterior", "latent")
            if roles.get(role) not in ids
        ]
        if roles.get("likelihood", "bernoulli") not in LIKELIHOODS:
            problems.append(
                Problem("roles.likelihood", f"likelihood={roles.get('likelihood')!r} must be one "
                        f"of {LIKELIHOODS}")
            )
        return problems

    @property
    def likelihood(self) -> str:
        """``"bernoulli"`` (decoder output = logits) or ``"gaussian"`` (output = mean)."""
        return str(self.spec.roles.get("likelihood", "bernoulli"))

    @property
    def latent_dim(self) -> int:
        """Size of ``z``."""
        return int(self._infos[self.spec.roles["latent"]].shape[-1])

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Per-sample shape of ``x``."""
        return tuple(self.spec.inputs[0].shape)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of ``q(z | x)``, each ``(B, latent_dim)``."""
        post = self.spec.roles["posterior"]
        out = self.run({self._input_names[0]: x}, (post,))[post]
        mean, logvar = out.chunk(2, dim=-1)
        return mean, logvar

    def decoder_output(self, z: Tensor) -> Tensor:
        """The decoder's raw output for latents ``z``: logits (Bernoulli) or mean (Gaussian)."""
        out = self.spec.outputs[0]
        return self.run({self.spec.roles["latent"]: z}, (out,))[out]

    def decode(self, z: Tensor) -> Tensor:
        """The mean of ``p(x | z)`` in data space (``sigmoid(logits)`` for Bernoulli)."""
        out = self.decoder_output(z)
        return out.sigmoid() if self.likelihood == "bernoulli" else out

    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(mean of q(z | x))``: the deterministic reconstruction."""
        return self.decode(self.encode(x)[0])

    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decoded prior samples ``decode(z)``, ``z ~ N(0, I)``: ``(num_samples, *data_shape)``."""
        check_positive_int("num_samples", num_samples)
        ref = next(self.parameters())
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device="cpu")
        return self.decode(z.to(device=ref.device, dtype=ref.dtype))


def _check_vae_args(
    in_chans: Any, img_size: Any, latent_dim: Any, likelihood: Any
) -> None:
    check_positive("in_chans", in_chans)
    check_positive("img_size", img_size)
    check_positive("latent_dim", latent_dim)
    if likelihood not in LIKELIHOODS:
        raise SpecError(f"likelihood={likelihood!r} must be one of {LIKELIHOODS}",
                        path="likelihood")


def _finish(
    b: GraphBuilder, name: str, likelihood: str, description: str, device: Device,
    dtype: Dtype, seed: int | None,
) -> VAENetwork:
    roles = {"kind": "vae", "posterior": "posterior", "latent": "z", "likelihood": likelihood}
    spec = b.make_spec(roles, description=description)
    return VAENetwork(spec, device=device, dtype=dtype, seed=seed)  # type: ignore[return-value]


def vae_mlp(
    *,
    in_chans: int = 1,
    img_size: int = 8,
    latent_dim: int = 16,
    hidden: Sequence[int] = (256, 256),
    act_layer: str = "silu",
    likelihood: str = "bernoulli",
    name: str = "vae_mlp",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> VAENetwork:
    """Fully connected VAE: ``hidden`` layers down to ``[mean, logvar]``, mirrored up to the
    image. Nodes ``enc{i}``/``enc{i}_act``, ``posterior``, ``z``, ``dec{i}``/``dec{i}_act``,
    ``out_fc`` and ``out``."""
    _check_vae_args(in_chans, img_size, latent_dim, likelihood)
    hidden = check_widths("hidden", hidden)
    shape = (in_chans, img_size, img_size)
    b = GraphBuilder(name, {"x": shape})
    b.add("flatten", "flatten")
    for i, width in enumerate(hidden):
        b.add(f"enc{i}", "linear", {"out_features": width})
        b.add(f"enc{i}_act", act_layer)
    b.add("posterior", "linear", {"out_features": 2 * latent_dim})
    b.add("z", "reparameterize", context=["noise"])
    for i, width in enumerate(reversed(hidden)):
        b.add(f"dec{i}", "linear", {"out_features": width})
        b.add(f"dec{i}_act", act_layer)
    b.add("out_fc", "linear", {"out_features": in_chans * img_size * img_size})
    b.add("out", "unflatten", {"shape": list(shape)})
    return _finish(b, name, likelihood, "MLP VAE", device, dtype, seed)


def vae_conv(
    *,
    in_chans: int = 1,
    img_size: int = 16,
    latent_dim: int = 16,
    channels: Sequence[int] = (32, 64),
    act_layer: str = "silu",
    norm_layer: str = "batchnorm2d",
    likelihood: str = "bernoulli",
    name: str = "vae_conv",
    device: Device = None,
    dtype: Dtype = None,
    seed: int | None = None,
) -> VAENetwork:
    """Convolutional VAE: a stride-2 ``conv_norm_act`` per entry of ``channels`` (so
    ``img_size`` must be divisible by ``2 ** len(channels)``), a linear ``posterior``; the
    decoder mirrors it with ``conv_transpose_upsample`` (kernel 4) and a 3×3 ``out`` conv."""
    _check_vae_args(in_chans, img_size, latent_dim, likelihood)
    channels = check_widths("channels", channels)
    factor = 2 ** len(channels)
    if img_size % factor:
        raise SpecError(
            f"img_size={img_size} cannot be halved {len(channels)} times (one per entry of "
            f"channels={list(channels)}): it must be divisible by {factor}",
            path="img_size",
        )
    s = img_size // factor
    b = GraphBuilder(name, {"x": (in_chans, img_size, img_size)})
    conv = {"act_layer": act_layer, "norm_layer": norm_layer}
    for i, c in enumerate(channels):
        b.add(f"enc{i}", "conv_norm_act", {"out_channels": c, "stride": 2, **conv})
    b.add("flatten", "flatten")
    b.add("posterior", "linear", {"out_features": 2 * latent_dim})
    b.add("z", "reparameterize", context=["noise"])
    b.add("dec_fc", "linear", {"out_features": channels[-1] * s * s})
    b.add("dec_fc_act", act_layer)
    b.add("dec_grid", "unflatten", {"shape": [channels[-1], s, s]})
    ups = [*reversed(channels[:-1]), channels[0]]
    for i, c in enumerate(ups):
        b.add(f"dec{i}", "conv_transpose_upsample",
              {"out_channels": c, "kernel_size": 4, **conv})
    b.add("out", "conv2d", {"out_channels": in_chans, "kernel_size": 3})
    return _finish(b, name, likelihood, "convolutional VAE", device, dtype, seed)




@register_model(
    "vae_mlp",
    example=lambda: Example({"img_size": 4, "latent_dim": 3, "hidden": [8]},
                            (example_tensor(2, 1, 4, 4),)),
)
def vae_mlp_model(**kwargs: Any) -> VAENetwork:
    """MLP VAE on 8×8 single-channel images: 256-256 SiLU, 16 latents, Bernoulli."""
    return vae_mlp(**kwargs)


@register_model(
    "vae_conv",
    example=lambda: Example({"img_size": 8, "latent_dim": 3, "channels": [4, 8]},
                            (example_tensor(2, 1, 8, 8),)),
)
def vae_conv_model(**kwargs: Any) -> VAENetwork:
    """Convolutional VAE on 16×16 single-channel images: 32-64 channels, 16 latents."""
    return vae_conv(**kwargs)
