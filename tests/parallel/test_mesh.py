"""Mesh shapes and their validation (the multi-process mesh errors are in test_parallelize)."""

import pytest

from netarchitect.errors import NetArchitectError
from netarchitect.parallel.errors import ParallelError
from netarchitect.parallel.mesh import make_mesh, mesh_shape


def test_dp_takes_what_tp_and_pp_leave():
    assert mesh_shape(8, tp=2) == {"pp": 1, "dp": 4, "tp": 2}
    assert mesh_shape(8, tp=2, pp=2) == {"pp": 2, "dp": 2, "tp": 2}
    assert mesh_shape(2, dp=1, tp=2) == {"pp": 1, "dp": 1, "tp": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 6, "tp": 4}, "tp=4 x pp=1 = 4 does not divide the world size 6"),
        ({"world_size": 2, "dp": 2, "tp": 2}, "= 4 ranks does not match the world size 2"),
        ({"world_size": 2, "tp": 0}, "tp must be a positive integer, got 0"),
        ({"world_size": 2, "dp": -1}, "dp must be a positive integer, got -1"),
        ({"world_size": 0}, "world_size must be a positive integer"),
    ],
)
def test_bad_layouts_are_refused(kwargs, message):
    with pytest.raises(ParallelError, match=message.replace("(", r"\(")) as info:
        mesh_shape(**kwargs)
    assert isinstance(info.value, NetArchitectError) and isinstance(info.value, ValueError)


def test_make_mesh_needs_a_process_group():
    with pytest.raises(ParallelError, match="initialised process group"):
        make_mesh(2)
