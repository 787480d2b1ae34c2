"""TMRoPE ids by tensor operations only (no host reads): the path :func:`tmrope_position_ids` takes.

For each modality, the valid placeholder tokens are numbered over the batch in row-major order (a
running count); the cumulative item sizes turn that number into the item the token belongs to and
its index inside the item (one ``torch.searchsorted`` over the items of all modalities), and the
item's grid turns the index into local ``(t, h, w)`` ids (audio: one time id per token). A
cumulative sum along each row of how far every token moves the next start (1 for a text token, the
item's largest local id + 1 on an item's last token, 0 elsewhere) gives each token's start: a text
token takes it as its id, a media token adds its local ids to it. This equals the item-by-item walk
of ``tmrope.py`` (checked by a property test) for every layout without audio-in-video items, whose
interleaved order and shared markers stay on that walk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from omnikit.fusion.modality import MODALITIES
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_tensor

__all__ = ["ItemTable", "traced_position_ids"]

_AUDIO = MODALITIES.index("audio")
_CODES = len(MODALITIES)


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
    def patch_grids(
        cls, grids: Sequence[Sequence[int]], spatial_merge: int, seconds_per_step: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> ItemTable:
        """From ViT patch grids ``(t, h, w)`` (host ints) before a ``spatial_merge`` merger, and the seconds per
        temporal step ``(N,)`` (a tensor stays on the device; None: 1 s)."""
        merged = [[t, h // spatial_merge, w // spatial_merge] for t, h, w in grids]
        grid = torch.tensor(merged, dtype=torch.long, device=device).view(-1, 3)
        if seconds_per_step is None:
            return cls(grid, torch.ones(grid.shape[0], device=device))
        seconds = check_tensor(seconds_per_step, "video_second_per_grid", ndim=(1, 2))
        if seconds.numel() != grid.shape[0]:
            raise OmnikitValueError(f"`video_second_per_grid` expected one value per video ({grid.shape[0]}) but got "
                                    f"shape {tuple(seconds.shape)}")
        return cls(grid, seconds.reshape(-1).to(device, torch.float32))

    @classmethod
    def audio(cls, tokens: torch.Tensor | Sequence[int], device: torch.device | None = None) -> ItemTable:
        """From audio token counts ``(N,)`` (a tensor stays on the device: no host read while compiling).

        Counts must be integers >= 0 (a fractional count is refused, not truncated).
        """
        if isinstance(tokens, torch.Tensor):
            if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
                raise OmnikitTypeError(f"`audios` expected integer token counts but got a {tokens.dtype} tensor")
        elif not all(isinstance(n, int) and not isinstance(n, bool) for n in tokens):
            raise OmnikitTypeError(f"`audios` expected integer token counts but got {list(tokens)!r}")
        counts = torch.as_tensor(tokens, dtype=torch.long, device=device).view(-1)
        if not torch.compiler.is_compiling() and counts.numel() and bool((counts < 0).any()):
            raise OmnikitValueError(f"`audios` expected token counts >= 0 but got {counts.tolist()}")
        ones = torch.ones_like(counts)
        return cls(torch.stack((counts, ones, ones), dim=-1), torch.ones(counts.shape, device=counts.device))

    @property
    def sizes(self) -> torch.Tensor:
        """``(N,)`` placeholder tokens per item."""
        return self.grid.prod(-1)


def _time_ids(steps: torch.Tensor, seconds: torch.Tensor, audio: torch.Tensor, scheme) -> torch.Tensor:
    """Temporal ids of visual steps or audio tokens (``audio`` True) in ``scheme.dtype``: the float32
    operations of ``TMRoPEScheme.visual_time_ids`` / ``audio_time_ids``, elementwise."""
    visual = steps * seconds * float(scheme.ids_per_second)
    time = torch.where(audio, steps.float() * float(scheme.audio_ids_per_token), visual)
    return time if scheme.fractional else time.long()


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
            placeholders consecutive within one row); a few reductions, no host read.

    Returns:
        ``positions (3, B, T)`` (``scheme.dtype``), ``next_position (B,)`` and the check's ``()``
        bool (None without ``check``).
    """
    dtype, device = scheme.dtype, codes.device
    batch, length = codes.shape
    kinds = torch.tensor(list(tables), dtype=torch.long, device=device)
    sizes = [table.sizes for table in tables.values()]
    counts = torch.stack([n.sum() for n in sizes]) if sizes else kinds
    # every media token's rank among its modality's tokens (row-major over the batch), shifted by the
    # tokens of the modalities before it, so one search over all items finds its item
    one_hot = (codes[..., None] == kinds) & valid[..., None]  # (B, T, M)
    ranks = one_hot.flatten(0, 1).long().cumsum(0).view(one_hot.shape) - 1 + (counts.cumsum(0) - counts)
    media = one_hot.any(-1)
    text = (codes == 0) & valid
    advance = text.to(dtype)  # how far each token moves the next start: text by one
    local = torch.zeros(3, batch, length, dtype=dtype, device=device)
    ok = previous = None
    if check:  # counts equal, and every media token but an item's first follows a token of its modality
        ok = (one_hot.sum((0, 1)) == counts).all()
        # the code of the row's previous valid token (-1: none): a running max of position * codes + code
        latest = torch.where(valid, torch.arange(length, device=device) * _CODES + codes, -1).cummax(1).values
        latest = torch.cat((latest.new_full((batch, 1), -1), latest[:, :-1]), dim=1)
        previous = torch.where(latest >= 0, latest % _CODES, -1)
    if sum(n.shape[0] for n in sizes):
        size = torch.cat(sizes)
        grid = torch.cat([table.grid for table in tables.values()])
        audio = torch.cat([torch.full_like(n, code == _AUDIO, dtype=torch.bool) for code, n in zip(tables, sizes)])
        seconds = torch.cat([table.seconds_per_step for table in tables.values()])
        t, h, w = grid.unbind(-1)
        largest = torch.maximum(_time_ids(t - 1, seconds, audio, scheme), (torch.maximum(h, w) - 1).to(dtype))
        ends = size.cumsum(0)
        rank = (ranks * one_hot).sum(-1)
        item = torch.searchsorted(ends, rank, right=True).clamp(max=size.shape[0] - 1)
        per_item = torch.stack((ends - size, size, h * w, w, audio.long()), dim=-1)[item]  # one gather: (B, T, 5)
        index = rank - per_item[..., 0]  # the token's index inside its item
        area, width, is_audio = per_item[..., 2], per_item[..., 3], per_item[..., 4].bool()
        step = index // area  # an audio item's area is 1
        rest = index - step * area
        row = rest // width
        time = _time_ids(step, seconds[item], is_audio, scheme)
        ids = torch.stack((time, torch.where(is_audio, time, row.to(dtype)),
                           torch.where(is_audio, time, (rest - row * width).to(dtype))))
        local = torch.where(media, ids, local)
        advance = torch.where(media & (index == per_item[..., 1] - 1), largest[item] + 1, advance)
        if previous is not None:
            ok = ok & ~(media & (index > 0) & (previous != codes)).any()
    starts = torch.cat((advance.new_zeros(batch, 1), advance.cumsum(1)), dim=1)  # (B, T + 1): the last one continues
    positions = torch.where(valid, starts[:, :-1] + local, torch.zeros((), dtype=dtype, device=device))
    return positions, starts[:, -1], ok
