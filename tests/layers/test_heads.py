"""Heads beyond the linear classifier, and their losses, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from netarchitect.errors import NetArchitectError, SpecError
from netarchitect.layers.heads import AngularMarginHead, EmbeddingHead, GaussianHead, OrdinalHead
from netarchitect.losses import asymmetric_loss, gaussian_nll, get_loss, ordinal_loss


def test_gaussian_head_and_nll_match_torch_distributions():
    torch.manual_seed(0)
    head = GaussianHead(5, 3)
    out = head(torch.randn(7, 5))
    mean, var = GaussianHead.split(out)
    assert out.shape == (7, 6) and bool((var > 0).all())
    y = torch.randn(7, 3)
    want = -torch.distributions.Normal(mean, var.sqrt()).log_prob(y).mean()
    torch.testing.assert_close(gaussian_nll(out, y), want)
    torch.testing.assert_close(
        gaussian_nll(out, y), F.gaussian_nll_loss(mean, y, var, full=True)
    )
    with pytest.raises(ValueError, match="targets: shape"):
        gaussian_nll(out, torch.randn(7, 2))


def test_ordinal_head_thresholds_probabilities_and_loss():
    torch.manual_seed(0)
    head = OrdinalHead(4, 5)
    with torch.no_grad():
        head.gaps.copy_(torch.randn(3))
    theta = head.thresholds()
    assert theta.shape == (4,) and bool((theta.diff() > 0).all())
    x = torch.randn(6, 4)
    logits = head(x)
    torch.testing.assert_close(logits, head.score(x) - theta)
    probs = OrdinalHead.probabilities(logits)
    assert probs.shape == (6, 5) and bool((probs >= 0).all())
    torch.testing.assert_close(probs.sum(-1), torch.ones(6))
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    above = torch.tensor([[float(int(y[i]) > k) for k in range(4)] for i in range(6)])
    hand = -(above * F.logsigmoid(logits) + (1 - above) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(ordinal_loss(logits, y), hand)
    assert OrdinalHead.predict(logits).shape == (6,)
    assert OrdinalHead(4, 2)(x).shape == (6, 1)
    with pytest.raises(SpecError, match="at least 2 classes"):
        OrdinalHead(4, 1)


def test_embedding_head_is_unit_norm():
    out = EmbeddingHead(6, 4)(torch.randn(5, 6))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_angular_margin_logits_by_hand(kind):
    torch.manual_seed(0)
    head = AngularMarginHead(6, 3, margin=0.3, scale=10.0, kind=kind)
    x, labels = torch.randn(4, 6), torch.tensor([0, 2, 1, 2])
    cos = (F.normalize(x, dim=-1) @ F.normalize(head.weight, dim=-1).T).detach()
    torch.testing.assert_close(head(x), 10 * cos)  # inference: no margin
    want = cos.clone()
    for i, c in enumerate(labels.tolist()):
        theta = math.acos(float(cos[i, c]))
        want[i, c] = math.cos(theta + 0.3) if kind == "arcface" else cos[i, c] - 0.3
    torch.testing.assert_close(head(x, labels), 10 * want)
    with pytest.raises(ValueError, match="labels: shape"):
        head(x, labels[:2])


def test_arcface_past_pi_uses_the_monotone_extension():
    head = AngularMarginHead(2, 2, margin=0.5, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[-1.0, 0.01]])  # θ_0 ≈ π: θ + m would wrap around
    cos0 = F.normalize(x, dim=-1)[0, 0]
    out = head(x, torch.tensor([0]))
    torch.testing.assert_close(out[0, 0], cos0 - 0.5 * math.sin(0.5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "sphereface"}, "use 'arcface' or 'cosface'"),
        ({"margin": 2.0}, "margin=2.0 out of range"),
        ({"scale": 0}, "scale=0 must be > 0"),
    ],
)
def test_angular_margin_bad_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        AngularMarginHead(4, 3, **kwargs)


def test_asymmetric_loss_by_hand_and_bce_limit():
    torch.manual_seed(0)
    logits, y = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    torch.testing.assert_close(
        asymmetric_loss(logits, y, gamma_pos=0, gamma_neg=0, clip=0),
        F.binary_cross_entropy_with_logits(logits, y),
    )
    p = torch.sigmoid(logits)
    pm = (p - 0.05).clamp_min(0)
    hand = -(y * (1 - p) ** 1 * p.log() + (1 - y) * pm**4 * (1 - pm).log()).mean()
    torch.testing.assert_close(asymmetric_loss(logits, y, gamma_pos=1, gamma_neg=4), hand)


def test_get_loss_binds_options_and_refuses_unknown_ones():
    out, y = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(
        get_loss("huber", delta=0.5)(out, y), F.huber_loss(out, y, delta=0.5)
    )
    torch.testing.assert_close(get_loss("mse")(out, y), F.mse_loss(out, y))
    labels = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(
        get_loss("cross_entropy", label_smoothing=0.1)(out, labels),
        F.cross_entropy(out, labels, label_smoothing=0.1),
    )
    torch.testing.assert_close(
        get_loss("bce")(out, (y > 0).long()),
        F.binary_cross_entropy_with_logits(out, (y > 0).float()),
    )
    with pytest.raises(NetArchitectError, match="unknown loss 'hubber'.*huber"):
        get_loss("hubber")
    with pytest.raises(NetArchitectError, match=r"takes no option\(s\) \['delta'\]"):
        get_loss("mse", delta=1.0)


@pytest.mark.parametrize(
    ("head", "args", "out_shape"),
    [
        ("gaussian_head", {}, (2, 6)),
        ("ordinal_head", {}, (2, 2)),
        ("embedding_head", {}, (2, 3)),
        ("angular_margin_head", {"margin": 0.2}, (2, 3)),
        ("linear", {}, (2, 3)),
    ],
)
def test_any_head_on_a_registered_backbone_round_trips_its_spec(head, args, out_shape):
    from netarchitect import build, create_model

    model = create_model("resnet18", num_classes=3, img_size=32, output_head=head, head_args=args, seed=0)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    out = model(x)
    assert out.shape == out_shape and model.num_classes == 3
    assert model.spec.node(model.head_node).block == head
    again = build(model.spec, seed=0).eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(x), out)
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    assert features.shape == (2, model.num_features)


def test_bad_head_choices_are_named():
    from netarchitect import create_model

    with pytest.raises(SpecError, match="head='ordinal'.*ordinal_head"):
        create_model("resnet18", num_classes=3, img_size=32, output_head="ordinal")
    with pytest.raises(SpecError, match="exclude each other"):
        create_model(
            "resnet18", num_classes=3, img_size=32, output_head="linear", features_only=True
        )
    with pytest.raises(SpecError, match="gpt2-tiny is not a classifier"):
        create_model("gpt2-tiny", output_head="gaussian_head", device="meta")
