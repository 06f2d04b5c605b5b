import numpy as np
import pytest
import torch

from netarchitect.meta.digits import load_digits_images
from netarchitect.meta.errors import FewShotError
from netarchitect.meta.glyphs import glyph_classes, make_glyphs, render_glyphs


def test_make_glyphs_shapes_range_and_seed():
    x, y = make_glyphs(7, 3, size=12, seed=4)
    assert x.shape == (21, 1, 12, 12) and x.dtype == torch.float32
    assert y.tolist() == [c for c in range(7) for _ in range(3)]
    assert 0 <= x.min() and x.max() <= 1 and x.mean() > 0.05  # strokes are drawn
    torch.testing.assert_close(make_glyphs(7, 3, size=12, seed=4)[0], x)
    assert not torch.equal(make_glyphs(7, 3, size=12, seed=5)[0], x)


def test_instances_vary_but_stay_closer_to_their_class():
    x, y = make_glyphs(20, 6, seed=0)
    flat = x.flatten(1)
    assert not torch.equal(flat[0], flat[1])  # distortion and noise differ per instance
    d = torch.cdist(flat, flat)
    same = y[:, None] == y[None]
    off_diag = ~torch.eye(len(y), dtype=torch.bool)
    assert d[same & off_diag].mean() < 0.8 * d[~same].mean()


def test_glyph_classes_are_polylines():
    strokes = glyph_classes(5, seed=1)
    assert len(strokes) == 5
    for s in strokes:
        assert s.ndim == 3 and s.shape[1:] == (7, 2) and 2 <= len(s) <= 4
        assert np.abs(s).max() <= 0.75
    img = render_glyphs(strokes[0], 2, size=8, rng=np.random.default_rng(0))
    assert img.shape == (2, 8, 8) and img.dtype == np.float32


@pytest.mark.parametrize("kw", [{"num_classes": 0}, {"per_class": -2}, {"size": 0}])
def test_make_glyphs_bad_arguments(kw):
    args = {"num_classes": 2, "per_class": 2, **kw}
    with pytest.raises(FewShotError, match=next(iter(kw))):
        make_glyphs(**args)


def test_digits_images():
    x, y = load_digits_images(16)
    assert x.shape == (1797, 1, 16, 16) and y.shape == (1797,)
    assert 0 <= x.min() and x.max() <= 1 and sorted(y.unique().tolist()) == list(range(10))
    assert load_digits_images(8)[0].shape == (1797, 1, 8, 8)
    with pytest.raises(FewShotError, match="size"):
        load_digits_images(0)
