"""The media towers' work split over the ranks of a context-parallel group.

Under context parallel every rank of a ``"cp"`` group receives the whole prompt and its media. Rather than
every rank encoding every item, the items of all modalities of a call are dealt round robin over the ranks
(:class:`MediaShares`), each rank encodes its share, and the encoded tokens of all ranks are
all-gathered and put back in item order (:func:`encode_share`). The gather is differentiable (its
backward sums every rank's gradient of an item's tokens back to the rank that encoded it), so each
item's tower gradient is computed once, on one rank, and the data-parallel reduction of the tower's
gradients sums the ranks' shares. A rank with no item of a modality (fewer items than ranks) runs the
tower on its ``fixed_example()`` and contributes no rows, so every rank calls every tower the same
number of times (FSDP all-gathers stay in step).

The unit is the item: one long video is encoded by one rank.
"""

from __future__ import annotations

import dataclasses
import math
from itertools import accumulate
from typing import Any

import torch

from omnikit.fusion.adapters import AdaptedMedia
from omnikit.outputs import EncoderOutput

__all__ = ["MediaShares", "encode_share"]


def _pick(value: torch.Tensor, sizes: Any, mine: list[int]) -> tuple[torch.Tensor, Any]:
    """Items ``mine`` of an adapter's input: rows of ``value (N, ...)`` with ``sizes (N,)`` (audio), or the packed
    patch rows of the ``(t, h, w)`` grids ``sizes`` (visual)."""
    if sizes is None or isinstance(sizes, torch.Tensor):
        index = torch.tensor(mine, dtype=torch.long, device=value.device)
        return value[index], None if sizes is None else sizes[index]
    ends = list(accumulate(math.prod(g) for g in sizes))
    rows = [torch.arange(ends[i] - math.prod(sizes[i]), ends[i]) for i in mine]
    return value[torch.cat(rows).to(value.device)], [sizes[i] for i in mine]


def _rows(out: AdaptedMedia, merge: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An adapter's output as ``(n_tokens, D * (1 + levels))`` rows (tokens, then any deepstack levels side by
    side) and each item's token count ``(items,)``."""
    media = out.media
    if isinstance(out.items, torch.Tensor):  # audio: padded items, their counts
        counts = out.items
    else:  # visual: merged tokens of (t, h, w) patch grids
        counts = torch.tensor([math.prod(g) // merge**2 for g in out.items], dtype=torch.long)
    if isinstance(media, torch.Tensor):
        return media, counts.to(media.device)
    valid = media.mask.to(media.hidden_states.device)
    levels = [media.hidden_states, *getattr(media, "deepstack", ())]
    return torch.cat([level[valid] for level in levels], dim=-1), counts.to(media.hidden_states.device)


def encode_share(adapter: Any, value: torch.Tensor, sizes: Any, *, hook: Any, first: int = 0) -> AdaptedMedia:
    """``adapter(value, sizes)`` with the items split over the context-parallel ranks of ``hook`` (a
    :class:`~omnikit.distributed.cp.ContextParallel`: ``rank``, ``size``, ``gather_rows``): item ``i`` is
    encoded by rank ``(first + i) % size`` (``first``: where the round robin stands after the previous
    modalities), the tokens of all items come back in item order, with the autograd path to the rank
    that encoded each. Same result as ``adapter(value, sizes)``: ``(N, D)`` tokens (an audio tower's padded
    output packed), or one item with deepstack features for a tower that gives them."""
    count = value.shape[0] if sizes is None or isinstance(sizes, torch.Tensor) else len(sizes)
    owner = [(first + i) % hook.size for i in range(count)]
    mine = [i for i in range(count) if owner[i] == hook.rank]
    merge = getattr(getattr(adapter, "config", None), "merge_size", 1)
    if mine:
        out = adapter(*_pick(value, sizes, mine))
        rows, counts = _rows(out, merge)
    else:  # no item here: the tower runs on its fixed example (same calls on every rank), no rows
        example, example_sizes = adapter.fixed_example()
        out = adapter(example.to(value.device), example_sizes)
        rows, counts = (t[:0] for t in _rows(out, merge))
    rows, counts = hook.gather_rows(rows), hook.gather_rows(counts[:, None])[:, 0]
    # rank order (rank 0's items, then rank 1's, ...) -> item order
    order = torch.tensor(sorted(range(count), key=lambda i: (owner[i], i)), device=rows.device)
    position = order.argsort()
    starts = (counts.cumsum(0) - counts)[position]
    counts = counts[position]
    shift = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
    rows = rows[shift + torch.arange(rows.shape[0], device=rows.device)]
    items = counts if sizes is None or isinstance(sizes, torch.Tensor) else list(sizes)
    return AdaptedMedia(_media(rows, out.media), items)


class MediaShares:
    """The ``encode`` of :func:`~omnikit.fusion.absent.encode_media` under context parallel: :func:`encode_share`
    with one round robin over the items of all modalities of a call (so an image and a video do not both
    go to rank 0)."""

    def __init__(self, hook: Any) -> None:
        self.hook, self.first = hook, 0

    def __call__(self, adapter: Any, value: torch.Tensor, sizes: Any) -> AdaptedMedia:
        out = encode_share(adapter, value, sizes, hook=self.hook, first=self.first)
        self.first += value.shape[0] if sizes is None or isinstance(sizes, torch.Tensor) else len(sizes)
        return out


def _media(rows: torch.Tensor, like: torch.Tensor | EncoderOutput) -> torch.Tensor | EncoderOutput:
    """Gathered rows (:func:`_rows`) as media: ``(N, D)`` tokens, or, when the tower gives deepstack features
    (``like``), one item of all tokens with its levels."""
    if not getattr(like, "deepstack", None):
        return rows
    levels = rows.split(like.hidden_states.shape[-1], dim=-1)
    count = torch.tensor([rows.shape[0]], device=rows.device)
    return dataclasses.replace(like, hidden_states=levels[0][None], lengths=count,
                               deepstack=[level[None] for level in levels[1:]])
