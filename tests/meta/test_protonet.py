import torch
from torch import nn

from netarchitect.meta.episodes import EpisodeSampler
from netarchitect.meta.protonet import ProtoNet, prototype_logits, prototypes, train_protonet


def test_prototypes_and_logits_reference():
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    protos = prototypes(emb, labels, 2)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    logits = prototype_logits(torch.tensor([[1.0, 1.0]]), protos)
    torch.testing.assert_close(logits, torch.tensor([[-1.0, -5.0]]))


def test_protonet_identity_encoder_is_nearest_prototype():
    net = ProtoNet(nn.Identity())
    sx = torch.tensor([[[0.0, 0.0]], [[10.0, 10.0]]])  # (2, 1, 2): flattened by embed
    logits = net(sx, torch.tensor([0, 1]), torch.tensor([[[1.0, 1.0]], [[9.0, 8.0]]]), 2)
    assert logits.shape == (2, 2) and logits.argmax(1).tolist() == [0, 1]


def test_train_protonet_reduces_loss():
    torch.manual_seed(0)
    y = torch.arange(8).repeat_interleave(10)
    x = torch.randn(8, 6)[y] + 0.5 * torch.randn(80, 6)
    net = ProtoNet(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8)))
    sampler = EpisodeSampler(x, y, n_way=4, k_shot=2, n_query=3, seed=0)
    losses = train_protonet(net, sampler, steps=60, lr=1e-2)
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])
    assert not net.training


def test_cosine_schedule_and_bad_schedule():
    import pytest

    from netarchitect.meta.errors import FewShotError

    y = torch.arange(4).repeat_interleave(4)
    x = torch.randn(16, 3)
    net = ProtoNet(nn.Linear(3, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sampler = EpisodeSampler(x, y, n_way=2, k_shot=1, n_query=1, seed=0)
    train_protonet(net, sampler, steps=4, optimizer=opt, schedule="cosine")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # ½(1 + cos π) at the end
    with pytest.raises(FewShotError, match="schedule"):
        train_protonet(net, sampler, steps=1, schedule="linear")
