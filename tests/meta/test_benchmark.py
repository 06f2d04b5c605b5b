"""The benchmark's plumbing at toy sizes (the accuracy runs are in test_fewshot_accuracy.py)."""

import pytest
import torch

from netarchitect.meta.benchmark import (
    DIGITS,
    METHODS,
    ROTATED,
    Recipe,
    benchmark_data,
    conv_net,
    eval_sets,
    evaluate_method,
    meta_train,
    pixel_baseline,
    train_sampler,
)
from netarchitect.meta.errors import FewShotError


def test_data_and_fixed_eval_sets():
    x, y = benchmark_data()
    assert x.shape[1:] == (1, 16, 16) and len(x) == len(y)
    assert int((y >= ROTATED).sum()) == 8 * int(((y >= DIGITS) & (y < DIGITS + 5)).sum())
    sets = eval_sets(x, y, episodes=3)
    assert {c for e in sets["digits"] for c in e.classes} <= {DIGITS + d for d in range(5, 10)}
    assert all(800 <= c < 1000 for e in sets["glyphs"] for c in e.classes)
    again = eval_sets(x, y, episodes=3)
    torch.testing.assert_close(again["digits"][2].query_x, sets["digits"][2].query_x)


def test_pixel_baseline_is_nearest_mean_image():
    sx = torch.tensor([[0.0, 0.0], [0.0, 2.0], [10.0, 10.0]]).reshape(3, 1, 2)
    logits = pixel_baseline(sx, torch.tensor([0, 0, 1]), torch.tensor([[[1.0, 1.0]]]), 2)
    assert logits.argmax(1).tolist() == [0]
    torch.testing.assert_close(logits[0, 0], torch.tensor(-1.0))


def test_conv_net_widths():
    assert conv_net(4, pools=2)(torch.zeros(2, 1, 16, 16)).shape == (2, 4 * 16)
    net = conv_net(4, blocks=2, pools=2, running_stats=False)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 64) and not list(net.buffers())


def test_train_sampler_mixes_glyph_and_digit_variants():
    x, y = benchmark_data()
    mix = train_sampler(x, y, Recipe(steps=1, glyph_way=7, digit_way=5))
    first, second = mix.sample(), mix.sample()
    assert first.n_way == 7 and max(first.classes) < 800
    assert second.n_way == 5 and min(second.classes) >= ROTATED


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_classifies(method):
    x, y = benchmark_data()
    recipe = Recipe(steps=2, channels=4, meta_batch=2, glyph_way=6)
    classifier, _ = meta_train(method, x, y, recipe=recipe)
    results = evaluate_method(classifier, eval_sets(x, y, episodes=2, n_query=2))
    assert set(results) == {"digits", "glyphs"}
    assert all(0 <= r.mean <= 1 for r in results.values())


def test_unknown_method():
    with pytest.raises(FewShotError, match="method: 'reptile' is not one of protonet"):
        meta_train("reptile", *benchmark_data())
