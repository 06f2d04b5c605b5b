import pytest
import torch

from netarchitect.meta.augment import rotated_classes
from netarchitect.meta.errors import FewShotError


def test_rotated_classes_labels_and_images():
    x = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 1, 3, 3)
    y = torch.tensor([7, 9])
    ax, ay = rotated_classes(x, y, [9], offset=100)
    assert ax.shape == (8, 1, 3, 3) and ay.tolist() == list(range(100, 108))
    torch.testing.assert_close(ax[0], x[1])  # variant 0 is the identity
    torch.testing.assert_close(ax[2], torch.rot90(x[1], 1, (1, 2)))
    torch.testing.assert_close(ax[1], x[1].transpose(1, 2))
    bx, by = rotated_classes(x, y, [7, 9], offset=0, transpose=False)
    assert bx.shape == (8, 1, 3, 3) and sorted(by.tolist()) == list(range(8))
    torch.testing.assert_close(bx[by == 4][0], x[1])  # class 9 is the second: labels 4..7


def test_rotated_classes_bad_input():
    x, y = torch.zeros(2, 1, 3, 3), torch.tensor([0, 1])
    with pytest.raises(FewShotError, match="classes"):
        rotated_classes(x, y, [5], offset=0)
    with pytest.raises(FewShotError, match="square"):
        rotated_classes(torch.zeros(2, 1, 3, 4), y, [0], offset=0)
