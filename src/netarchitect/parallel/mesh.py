"""Named device meshes ("dp", "tp") for :func:`~netarchitect.parallel.parallelize`."""

from __future__ import annotations

from typing import Any

from .errors import ParallelError

__all__ = ["make_mesh", "mesh_shape"]


def mesh_shape(
    world_size: int, *, dp: int | None = None, tp: int = 1, pp: int = 1
) -> dict[str, int]:
    """The validated ``{"pp": .., "dp": .., "tp": ..}`` sizes whose product is ``world_size``.

    ``dp=None`` takes what is left after ``tp`` and ``pp``. Dimensions of size 1 are kept
    here; :func:`make_mesh` drops ``pp`` when it is 1.
    """
    for name, value in (("world_size", world_size), ("tp", tp), ("pp", pp)):
        if not isinstance(value, int) or value < 1:
            raise ParallelError(f"{name} must be a positive integer, got {value!r}")
    if dp is None:
        if world_size % (tp * pp):
            raise ParallelError(
                f"tp={tp} x pp={pp} = {tp * pp} does not divide the world size {world_size}"
            )
        dp = world_size // (tp * pp)
    elif not isinstance(dp, int) or dp < 1:
        raise ParallelError(f"dp must be a positive integer, got {dp!r}")
    if dp * tp * pp != world_size:
        raise ParallelError(
            f"mesh dp={dp} x tp={tp} x pp={pp} = {dp * tp * pp} ranks does not match the "
            f"world size {world_size}"
        )
    return {"pp": pp, "dp": dp, "tp": tp}


def make_mesh(
    world_size: int | None = None,
    *,
    dp: int | None = None,
    tp: int = 1,
    pp: int = 1,
    device_type: str = "cpu",
) -> Any:
    """A :class:`~torch.distributed.device_mesh.DeviceMesh` with named dims ``("dp", "tp")``.

    With ``pp > 1`` the mesh is ``("pp", "dp", "tp")``. ``world_size`` defaults to the
    initialised process group's; a layout that does not multiply to it raises
    :class:`ParallelError`. Example (2 ranks)::

        mesh = make_mesh(tp=2)          # dp=1, tp=2
        mesh["tp"].size()               # 2
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_available() or not dist.is_initialized():
        raise ParallelError(
            "make_mesh needs an initialised process group (run under torchrun or "
            "netarchitect.parallel._spawn.run_ranks)"
        )
    actual = dist.get_world_size()
    if world_size is None:
        world_size = actual
    elif world_size != actual:
        raise ParallelError(f"mesh for world size {world_size} but {actual} processes are running")
    sizes = mesh_shape(world_size, dp=dp, tp=tp, pp=pp)
    names = tuple(n for n in ("pp", "dp", "tp") if n != "pp" or pp > 1)
    return init_device_mesh(device_type, tuple(sizes[n] for n in names), mesh_dim_names=names)
