"""Packing ragged groups of tokens: drop the padding between groups, keep the order."""

from __future__ import annotations

import torch

__all__ = ["pack_groups"]


def pack_groups(x: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (B, G, L, ...)`` whose group ``g`` holds ``counts[b, g]`` valid leading entries ->
    ``(B, max_total, ...)`` with each item's valid entries packed left in order, and the totals ``(B,)``.

    Padding positions of the result are zero.
    """
    batch, groups, length = x.shape[:3]
    valid = torch.arange(length, device=x.device)[None, None, :] < counts[:, :, None]  # (B, G, L)
    valid = valid.reshape(batch, groups * length)
    totals = valid.sum(dim=1)
    width = int(totals.max()) if totals.numel() else 0
    target = torch.cumsum(valid.long(), dim=1) - 1  # packed position of each valid entry
    flat = x.reshape(batch, groups * length, *x.shape[3:])
    out = flat.new_zeros(batch, width, *x.shape[3:])
    rows = torch.arange(batch, device=x.device)[:, None].expand_as(target)
    out[rows[valid], target[valid]] = flat[valid]
    return out, totals
