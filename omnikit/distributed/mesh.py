"""Device-mesh conventions: which dimension names :func:`~omnikit.distributed.parallelize` knows,
which combinations it supports, and how a batch is split over the data-parallel ranks."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from omnikit.utils.checks import OmnikitValueError

__all__ = ["MESH_DIMS", "build_mesh", "check_mesh", "data_parallel_coords", "data_shard"]

#: Known dimension names, outermost first: replicated data parallel (DDP, or HSDP's replicate dim),
#: sharded data parallel (FSDP2), context parallel (the sequence split), expert parallel, tensor parallel.
MESH_DIMS: tuple[str, ...] = ("dp_replicate", "dp_shard", "cp", "ep", "tp")

#: Dimensions whose ranks read different data ("ep" borrows data-parallel ranks, as in torchtitan).
DATA_DIMS: tuple[str, ...] = ("dp_replicate", "dp_shard", "ep")


def check_mesh(mesh: DeviceMesh) -> tuple[str, ...]:
    """The mesh's dimension names, checked: known names in :data:`MESH_DIMS` order; ``ep`` with at
    most one data-parallel dimension, and ``ep`` with ``tp`` only with no other (the tested set)."""
    names = tuple(mesh.mesh_dim_names or ())
    unknown = [n for n in names if n not in MESH_DIMS]
    if not names or unknown:
        raise OmnikitValueError(f"`mesh` dimension names expected a subset of {MESH_DIMS} but got {names}")
    if list(names) != [n for n in MESH_DIMS if n in names]:
        raise OmnikitValueError(f"`mesh` dimension names expected in the order {MESH_DIMS} but got {names}")
    if "tp" in names and "ep" in names and len(names) > 2:
        raise OmnikitValueError(f"`mesh` with 'ep' and 'tp' takes no other dimension; got {names}")
    if "cp" in names and not set(names) <= {"dp_shard", "cp"}:
        raise OmnikitValueError(f"`mesh` with 'cp' takes at most 'dp_shard' besides (the tested set); got {names}")
    if "dp_replicate" in names and "dp_shard" in names and "ep" in names:
        raise OmnikitValueError(f"`mesh` with 'ep' takes at most one of 'dp_replicate', 'dp_shard'; got {names}")
    return names


def build_mesh(device_type: str | None = None, **sizes: int) -> DeviceMesh:
    """``build_mesh(dp_shard=2, ep=2)``: an initialised process group's ranks as a named mesh
    (dimensions in :data:`MESH_DIMS` order; ``device_type`` defaults to cuda when available)."""
    names = tuple(n for n in MESH_DIMS if n in sizes)
    extra = sorted(set(sizes) - set(MESH_DIMS))
    if extra:
        raise OmnikitValueError(f"`sizes` expected names among {MESH_DIMS} but got {extra}")
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    return init_device_mesh(device_type, tuple(sizes[n] for n in names), mesh_dim_names=names)


def data_parallel_coords(mesh: DeviceMesh) -> tuple[int, int]:
    """``(index, count)`` of this rank's data shard: ranks that differ only along ``tp`` read the same data."""
    index, count = 0, 1
    for name in check_mesh(mesh):
        if name in DATA_DIMS:
            index = index * mesh[name].size() + mesh[name].get_local_rank()
            count *= mesh[name].size()
    return index, count


def data_shard(batch: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """This rank's equal slice (along dim 0) of a global ``batch``."""
    index, count = data_parallel_coords(mesh)
    if batch.shape[0] % count:
        raise OmnikitValueError(f"`batch` size {batch.shape[0]} must be divisible by the {count} data-parallel ranks")
    step = batch.shape[0] // count
    return batch[index * step : (index + 1) * step]
