import math

import pytest
import torch

from netarchitect.meta.episodes import EpisodeSampler
from netarchitect.meta.errors import FewShotError
from netarchitect.meta.evaluate import FewShotResult, evaluate_episodes, mean_ci95


def test_mean_ci95_reference():
    mean, ci = mean_ci95([0.5, 1.0, 0.75, 0.25])
    assert mean == pytest.approx(0.625)
    std = math.sqrt(sum((a - 0.625) ** 2 for a in [0.5, 1.0, 0.75, 0.25]) / 3)
    assert ci == pytest.approx(1.96 * std / 2)
    assert mean_ci95([0.3]) == (0.3, 0.0)
    with pytest.raises(FewShotError, match="accuracies"):
        mean_ci95([])


def test_evaluate_perfect_and_chance():
    y = torch.arange(5).repeat_interleave(6)
    x = torch.nn.functional.one_hot(y, 5).float()
    episodes = EpisodeSampler(x, y, n_way=5, k_shot=1, n_query=2).episodes(10, seed=0)

    def oracle(sx, sy, qx, n_way):  # support tells which class sits at which label
        onehot = torch.zeros(len(sx), 5)
        onehot[torch.arange(len(sx)), sy] = 1
        return qx @ (sx.T @ onehot)

    result = evaluate_episodes(oracle, episodes)
    assert isinstance(result, FewShotResult)
    assert result.mean == 1.0 and result.ci95 == 0.0 and len(result.accuracies) == 10
    assert str(result) == "100.00% ± 0.00"
    const = evaluate_episodes(lambda sx, sy, qx, n: torch.zeros(len(qx), n), episodes)
    assert const.mean == pytest.approx(0.2)
