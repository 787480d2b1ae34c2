"""Parameters that tensor parallel stores in another order than the unwrapped model, with
``state_dict`` hooks that keep checkpoints in the unwrapped layout.

A fused weight whose rank-``r`` shard must hold pieces from several places (the q, k and v heads of
a grouped-query projection; the gate and up rows of stacked experts) is reordered once, before
sharding, so that a plain ``Shard(dim)`` hands each rank its pieces. The module then records
``{parameter name: (dim, order)}`` (tensor-parallel layout = unwrapped layout indexed by ``order``
along ``dim``); its ``state_dict`` post-hook puts what it saves back in the unwrapped order and its
``load_state_dict`` pre-hook reorders what it loads. Both gather the one parameter and lay it out
as before (a collective over its mesh), so DCP checkpoints, ``full_state_dict`` and the exports
hold the unwrapped layout and load across meshes. The parameter itself, its gradient and optimizer
states stay in the tensor-parallel order; :func:`unwrapped_layout` maps a full tensor back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Replicate

__all__ = ["REORDER_ATTR", "rank_major_order", "reorder_parameters", "unwrapped_layout"]

#: Attribute of a module whose parameters are reordered: ``{name: (dim, order)}``.
REORDER_ATTR = "tp_reordered"


def rank_major_order(sections: list[int], ranks: int) -> torch.Tensor:
    """``(sum(sections),)`` int64: the unwrapped index of each tensor-parallel index along a dimension
    made of ``sections`` (each divisible by ``ranks``), reordered so that rank ``r``'s contiguous
    ``1 / ranks`` holds the ``r``-th chunk of every section: ``[s0_0 s1_0 ... | s0_1 s1_1 ... | ...]``."""
    pieces = torch.arange(sum(sections)).split(sections)
    return torch.cat([piece.chunk(ranks)[r] for r in range(ranks) for piece in pieces])


def _take(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``tensor.index_select(dim, index)``; a DTensor is gathered, reordered and laid out as before (collective)."""
    if not isinstance(tensor, DTensor):
        return tensor.index_select(dim, index.to(tensor.device))
    mesh, placements = tensor.device_mesh, tensor.placements
    full = tensor.full_tensor().index_select(dim, index.to(tensor.device))
    return DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False).redistribute(mesh, placements)


def unwrapped_layout(module: nn.Module, name: str, full: torch.Tensor) -> torch.Tensor:
    """``full`` (the full value, or gradient, of ``module``'s parameter ``name``) in the unwrapped
    layout; as is when tensor parallel did not reorder it."""
    orders = getattr(module, REORDER_ATTR, {})
    if name not in orders:
        return full
    dim, order = orders[name]
    return _take(full, dim, torch.argsort(order))


def _save_unwrapped(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    for name in getattr(module, REORDER_ATTR):
        if prefix + name in state:
            state[prefix + name] = unwrapped_layout(module, name, state[prefix + name])


def _load_unwrapped(module: nn.Module, state: dict, prefix: str, *args) -> None:
    for name, (dim, order) in getattr(module, REORDER_ATTR).items():
        if prefix + name in state:
            state[prefix + name] = _take(state[prefix + name], dim, order)


def reorder_parameters(module: nn.Module, orders: dict[str, tuple[int, torch.Tensor]]) -> None:
    """Reorder ``module``'s (not yet sharded) parameters in place, ``{name: (dim, order)}``, and
    register the hooks that keep its ``state_dict`` in the unwrapped layout."""
    with torch.no_grad():
        for name, (dim, order) in orders.items():
            param = getattr(module, name)
            param.copy_(param.index_select(dim, order.to(param.device)))
    setattr(module, REORDER_ATTR, orders)
    module.register_state_dict_post_hook(_save_unwrapped)
    module.register_load_state_dict_pre_hook(_load_unwrapped)
