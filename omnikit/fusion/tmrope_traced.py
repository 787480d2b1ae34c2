"""TMRoPE ids by tensor operations only (no host reads): the path :func:`tmrope_position_ids` takes.

For each modality, the valid placeholder tokens are numbered over the batch in row-major order (a
running count); the cumulative item sizes turn that number into the item the token belongs to and
its index inside the item (:func:`~omnikit.fusion.early.placeholder_items`), and the item's grid turns the index into
local ``(t, h, w)`` ids (audio: one time id per token). A cumulative sum along each row of how far
every token moves the next start (1 for a text token, the item's largest local id + 1 on an item's
last token, 0 elsewhere) gives each token's start: a text token takes it as its id, a media token
adds its local ids to it. This equals the item-by-item walk of ``tmrope.py`` (checked by a property
test) for every layout without audio-in-video items, whose interleaved order and shared markers
stay on that walk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from omnikit.fusion.early import placeholder_items
from omnikit.fusion.modality import MODALITIES

__all__ = ["ItemTable", "traced_position_ids"]

_AUDIO = MODALITIES.index("audio")


@dataclass(frozen=True)
class ItemTable:
    """The items of one modality as tensors, in the order their placeholders appear.

    Attributes:
        grid: ``(N, 3)`` int64 ``(t, h, w)`` merged token grid per item; an audio item of ``n``
            tokens is ``(n, 1, 1)``.
        seconds_per_step: ``(N,)`` float32 media time between temporal steps (visual items).
    """

    grid: torch.Tensor
    seconds_per_step: torch.Tensor

    @classmethod
    def visual(cls, grids: Sequence, device: torch.device | None = None) -> ItemTable:
        """From :class:`~omnikit.fusion.VisualGrid` s (host values, or constants when traced)."""
        grid = torch.tensor([[g.t, g.h, g.w] for g in grids], dtype=torch.long, device=device).view(-1, 3)
        seconds = torch.tensor([g.seconds_per_step for g in grids], dtype=torch.float32, device=device)
        return cls(grid, seconds)

    @classmethod
    def audio(cls, tokens: torch.Tensor | Sequence[int], device: torch.device | None = None) -> ItemTable:
        """From audio token counts ``(N,)`` (a tensor stays on the device: no host read)."""
        counts = torch.as_tensor(tokens, dtype=torch.long, device=device).view(-1)
        ones = torch.ones_like(counts)
        return cls(torch.stack((counts, ones, ones), dim=-1), torch.ones(counts.shape, device=counts.device))

    @property
    def sizes(self) -> torch.Tensor:
        """``(N,)`` placeholder tokens per item."""
        return self.grid.prod(-1)


def _time_ids(steps: torch.Tensor, seconds_per_step: torch.Tensor, ids_per_second: float) -> torch.Tensor:
    """Float32 temporal ids of visual steps: the same operations as ``TMRoPEScheme.visual_time_ids``."""
    return steps * seconds_per_step * float(ids_per_second)


def _local_ids(code: int, table: ItemTable, item: torch.Tensor, index: torch.Tensor, scheme) -> tuple[torch.Tensor, ...]:
    """Local ``(3, B, T)`` ids of placeholders (item, index) and their item's largest local id ``(B, T)``."""
    t, h, w = table.grid[item].unbind(-1)
    if code == _AUDIO:
        step = float(scheme.audio_ids_per_token)
        time, largest = index.float() * step, (t - 1).float() * step
        time, largest = (time, largest) if scheme.fractional else (time.long(), largest.long())
        return time.expand(3, *time.shape), largest
    seconds = table.seconds_per_step[item]
    area = h * w
    time = _time_ids(index // area, seconds, scheme.ids_per_second)
    last = _time_ids(t - 1, seconds, scheme.ids_per_second)
    if not scheme.fractional:
        time, last = time.long(), last.long()
    rest = index % area
    local = torch.stack((time, (rest // w).to(time.dtype), (rest % w).to(time.dtype)))
    largest = torch.maximum(last, (torch.maximum(h, w) - 1).to(last.dtype))
    return local, largest


def traced_position_ids(
    codes: torch.Tensor, valid: torch.Tensor, tables: Mapping[int, ItemTable], scheme, *, check: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """TMRoPE ids of a batch from tensors only.

    Args:
        codes: ``(B, T)`` int64 modality codes (``MediaTokens.modality_ids``).
        valid: ``(B, T)`` bool, False on padding (which gets id 0).
        tables: ``{modality code: ItemTable}`` of the media modalities (audio-in-video items are
            not supported here).
        scheme: a :class:`~omnikit.fusion.TMRoPEScheme`.
        check: also return whether the layout matches the items (counts equal, every item's
            placeholders consecutive within one row); costs a few reductions, no host read.

    Returns:
        ``positions (3, B, T)`` (``scheme.dtype``), ``next_position (B,)`` and the check's ``()``
        bool (None without ``check``).
    """
    dtype = scheme.dtype
    batch, length = codes.shape
    local = torch.zeros(3, batch, length, dtype=dtype, device=codes.device)
    advance = ((codes == 0) & valid).to(dtype)  # text tokens move the next start by one
    ok, previous = None, None
    if check:  # the code of the previous valid token of the row (-1: none)
        slots = torch.where(valid, torch.arange(length, device=codes.device), -1).cummax(1).values
        slots = torch.cat((slots.new_full((batch, 1), -1), slots), dim=1)[:, :-1]
        previous = torch.where(slots >= 0, codes.gather(1, slots.clamp(min=0)), -1)
        ok = torch.ones((), dtype=torch.bool, device=codes.device)
    for code, table in tables.items():
        where = (codes == code) & valid
        sizes = table.sizes
        if sizes.shape[0] == 0:
            ok = None if ok is None else ok & ~where.any()
            continue
        item, index = placeholder_items(where, sizes)
        ids, largest = _local_ids(code, table, item, index, scheme)
        local = torch.where(where, ids, local)
        advance = torch.where(where & (index == sizes[item] - 1), largest + 1, advance)
        if ok is not None:
            broken = where & (index > 0) & (previous != code)
            ok = ok & (where.sum() == sizes.sum()) & ~broken.any()
    starts = torch.cat((advance.new_zeros(batch, 1), advance.cumsum(1)), dim=1)  # (B, T + 1): the last one continues
    positions = torch.where(valid, starts[:, :-1] + local, torch.zeros((), dtype=dtype, device=codes.device))
    return positions, starts[:, -1], ok
