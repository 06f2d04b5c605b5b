import numpy as np
import pytest
import torch

from netarchitect.errors import NetArchitectError
from netarchitect.meta.episodes import (
    EpisodeMixture,
    EpisodeSampler,
    split_classes,
    stack_episodes,
)
from netarchitect.meta.errors import FewShotError


@pytest.fixture
def data():
    y = torch.arange(10).repeat_interleave(7)  # 10 classes x 7 examples
    x = y.float().view(-1, 1, 1).expand(-1, 2, 3).clone()  # value = class id
    return x, y


def test_shapes_and_labels(data):
    x, y = data
    ep = EpisodeSampler(x, y, n_way=4, k_shot=2, n_query=3, seed=0).sample()
    assert ep.support_x.shape == (8, 2, 3) and ep.query_x.shape == (12, 2, 3)
    assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ep.query_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert ep.n_way == 4 and len(set(ep.classes)) == 4
    # every example's value is its original class: label i maps to classes[i]
    cls = torch.tensor(ep.classes, dtype=torch.float)
    torch.testing.assert_close(ep.support_x[:, 0, 0], cls[ep.support_y])
    torch.testing.assert_close(ep.query_x[:, 0, 0], cls[ep.query_y])


def test_support_and_query_disjoint():
    x = torch.arange(30).float().unsqueeze(1)  # unique value per example
    y = torch.arange(3).repeat_interleave(10)
    ep = EpisodeSampler(x, y, n_way=3, k_shot=4, n_query=6, seed=1).sample()
    ids = torch.cat([ep.support_x, ep.query_x]).flatten().tolist()
    assert len(set(ids)) == 30


def test_classes_restrict_and_split_disjoint(data):
    x, y = data
    train, test = split_classes(y, 3, seed=0)
    assert len(test) == 3 and len(train) == 7 and not set(train) & set(test)
    assert sorted(train + test) == list(range(10))
    assert split_classes(y.numpy(), 3, seed=0) == (train, test)
    sampler = EpisodeSampler(x, y, n_way=3, k_shot=1, n_query=1, classes=test)
    for ep in sampler.episodes(20):
        assert set(ep.classes) <= set(test)


def test_seeding(data):
    x, y = data
    make = lambda s: EpisodeSampler(x, y, n_way=3, k_shot=2, n_query=2, seed=s)
    a, b, c = make(0).sample(), make(0).sample(), make(1).sample()
    torch.testing.assert_close(a.support_x, b.support_x)
    assert a.classes == b.classes
    assert a.classes != c.classes or not torch.equal(a.support_x, c.support_x)
    # the fixed evaluation list ignores the sampler's own stream
    s1, s2 = make(0), make(5)
    s1.sample()
    e1, e2 = s1.episodes(5, seed=3), s2.episodes(5, seed=3)
    assert [e.classes for e in e1] == [e.classes for e in e2]
    assert [e.classes for e in e1] != [e.classes for e in s2.episodes(5, seed=4)]


def test_sample_batch_stacks(data):
    x, y = data
    sx, sy, qx, qy = EpisodeSampler(x, y, n_way=2, k_shot=3, n_query=1).sample_batch(4)
    assert sx.shape == (4, 6, 2, 3) and sy.shape == (4, 6)
    assert qx.shape == (4, 2, 2, 3) and qy.shape == (4, 2)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_way": 11}, "n_way"),
        ({"k_shot": 5, "n_query": 3}, "k_shot"),
        ({"k_shot": 8, "n_query": 1}, "k_shot"),
        ({"n_way": 0}, "n_way"),
        ({"k_shot": -1}, "k_shot"),
        ({"n_query": 0}, "n_query"),
        ({"n_way": 2.5}, "n_way"),
        ({"n_way": True}, "n_way"),
        ({"classes": [0, 42]}, "classes"),
        ({"classes": [0, 1, 1]}, "classes"),
        ({"classes": [0, 1], "n_way": 3}, "n_way"),
    ],
)
def test_bad_arguments(data, kwargs, argument):
    x, y = data
    args = {"n_way": 3, "k_shot": 2, "n_query": 2, **kwargs}
    with pytest.raises(FewShotError, match=argument) as info:
        EpisodeSampler(x, y, **args)
    assert info.value.argument == argument
    assert isinstance(info.value, NetArchitectError) and isinstance(info.value, ValueError)


def test_more_bad_arguments(data):
    x, y = data
    with pytest.raises(FewShotError, match="y: has 69 labels for 70"):
        EpisodeSampler(x, y[:-1], n_way=2, k_shot=1, n_query=1)
    sampler = EpisodeSampler(x, y, n_way=2, k_shot=1, n_query=1)
    with pytest.raises(FewShotError, match="meta_batch"):
        sampler.sample_batch(0)
    with pytest.raises(FewShotError, match="^n: "):
        sampler.episodes(0)
    with pytest.raises(FewShotError, match="episodes"):
        stack_episodes([])
    with pytest.raises(FewShotError, match="n_test"):
        split_classes(np.arange(5), 5)
    with pytest.raises(FewShotError, match="n_test"):
        split_classes(np.arange(5), 0)


def test_mixture_round_robin(data):
    x, y = data
    low = EpisodeSampler(x, y, n_way=2, k_shot=1, n_query=1, classes=[0, 1, 2], seed=0)
    high = EpisodeSampler(x, y, n_way=2, k_shot=1, n_query=1, classes=[7, 8, 9], seed=0)
    mix = EpisodeMixture(low, high)
    assert (mix.n_way, mix.k_shot, mix.n_query) == (2, 1, 1)
    firsts = [max(mix.sample().classes) for _ in range(4)]
    assert [c <= 2 for c in firsts] == [True, False, True, False]
    sx, *_ = mix.sample_batch(3)
    assert sx.shape == (3, 2, 2, 3) and sx.max() <= 2  # the low sampler's turn
    assert mix.sample_batch(1)[0].min() >= 7


def test_mixture_bad_arguments(data):
    x, y = data
    with pytest.raises(FewShotError, match="samplers"):
        EpisodeMixture()
    a = EpisodeSampler(x, y, n_way=2, k_shot=1, n_query=1)
    b = EpisodeSampler(x, y, n_way=3, k_shot=1, n_query=1)
    with pytest.raises(FewShotError, match="samplers: differ"):
        EpisodeMixture(a, b)


def test_mixture_turns_and_mixed_shapes(data):
    x, y = data
    low = EpisodeSampler(x, y, n_way=2, k_shot=1, n_query=1, classes=[0, 1, 2], seed=0)
    wide = EpisodeSampler(x, y, n_way=3, k_shot=1, n_query=1, classes=[7, 8, 9], seed=0)
    mix = EpisodeMixture(low, wide, turns=[1, 2], mixed_shapes=True)
    assert (mix.n_way, mix.k_shot, mix.n_query) == (None, 1, 1)
    assert [mix.sample().n_way for _ in range(6)] == [2, 3, 3, 2, 3, 3]
    with pytest.raises(FewShotError, match="turns: has 1 entries"):
        EpisodeMixture(low, wide, turns=[1], mixed_shapes=True)
    with pytest.raises(FewShotError, match="turns: must be a positive"):
        EpisodeMixture(low, wide, turns=[1, 0], mixed_shapes=True)
