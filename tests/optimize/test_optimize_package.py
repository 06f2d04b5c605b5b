"""``netarchitect.optimize`` serves every public name lazily from its modules."""

from __future__ import annotations

import pytest

import netarchitect as na
from netarchitect import optimize


def test_every_public_name_resolves_to_its_module() -> None:
    assert na.optimize is optimize
    for name in optimize.__all__:
        obj = getattr(optimize, name)
        assert obj.__module__.startswith("netarchitect.optimize")
    assert set(optimize.__all__) <= set(dir(optimize))
    with pytest.raises(AttributeError, match="no attribute 'shrink'"):
        optimize.shrink  # noqa: B018
