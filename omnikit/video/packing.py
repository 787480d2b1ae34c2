"""Packing ragged groups of tokens: drop the padding between groups, keep the order."""

from __future__ import annotations

import torch

__all__ = ["pack_groups"]


def pack_groups(x: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (B, G, L, ...)`` whose group ``g`` holds ``counts[b, g]`` valid leading entries ->
    ``(B, max_total, ...)`` with each item's valid entries packed left in order, and the totals ``(B,)``.

    Padding positions of the result are zero. Traced (``torch.compile``, ``torch.export``), ``max_total``
    is ``G * L``, the most any item can hold (read from no value; equal whenever some item fills every
    group).
    """
    batch, groups, length = x.shape[:3]
    valid = torch.arange(length, device=x.device)[None, None, :] < counts[:, :, None]  # (B, G, L)
    valid = valid.reshape(batch, groups * length)
    totals = valid.sum(dim=1)
    target = torch.cumsum(valid.long(), dim=1) - 1  # packed position of each valid entry
    flat = x.reshape(batch, groups * length, *x.shape[3:])
    if torch.compiler.is_compiling():  # fixed shapes: padding entries scattered to a spare column, dropped
        spare = torch.where(valid, target, groups * length)
        index = spare.view(*spare.shape, *(1,) * (x.ndim - 3)).expand(flat.shape)
        out = flat.new_zeros(batch, groups * length + 1, *x.shape[3:]).scatter(1, index, flat)
        return out[:, :-1], totals
    width = int(totals.max()) if totals.numel() else 0
    out = flat.new_zeros(batch, width, *x.shape[3:])
    rows = torch.arange(batch, device=x.device)[:, None].expand_as(target)
    out[rows[valid], target[valid]] = flat[valid]
    return out, totals
