import pytest

from netarchitect.parallel._spawn import RankFailed, run_ranks
from tests.parallel import _ranks

pytestmark = pytest.mark.slow


def test_results_in_rank_order():
    assert run_ranks(_ranks.all_reduce_rank, 2, 2.0) == [6.0, 6.0]


def test_a_failing_rank_stops_the_others():
    with pytest.raises(RankFailed, match="rank 1 failed: ValueError: rank one is broken") as info:
        run_ranks(_ranks.fail_on_rank_one, 2, timeout=30)
    assert info.value.rank == 1
    assert "Traceback" in info.value.remote_traceback


def test_a_dead_rank_is_reported():
    with pytest.raises(RankFailed, match="rank 1 died with exit code 3"):
        run_ranks(_ranks.die_on_rank_one, 2, timeout=30)


def test_world_size_checked():
    with pytest.raises(ValueError, match="world_size"):
        run_ranks(_ranks.all_reduce_rank, 0, 1.0)
