"""A memory bank holding a bounded number of tokens over an unbounded stream of frames."""

from __future__ import annotations

import torch

from omnikit.layers.tome import merge_by_assignment, merge_tokens
from omnikit.outputs import EncoderOutput
from omnikit.utils.checks import OmnikitValueError, check_lengths_or_full, check_positive, check_tensor
from omnikit.video.packing import pack_groups

__all__ = ["MemoryBank"]


class MemoryBank:
    """Append tokens chunk by chunk; whenever more than ``capacity`` are held, the most similar ones
    are merged (:func:`~omnikit.video.merge_tokens`) back down to ``capacity``. By default only
    neighbours merge (``window=1``, the MA-LMM rule), so each memory token is a contiguous stretch
    of the stream and ``timestamps`` stay increasing; ``window=None`` merges by similarity alone.

    Every stored token remembers how many input tokens it stands for (``sizes``) and the
    size-weighted mean time of those inputs (``timestamps``), and tokens stay in temporal order::

        bank = MemoryBank(capacity=256)
        for chunk, times in stream:          # (B, n, D), (B, n)
            bank.update(chunk, times)
        memory = bank.read()                 # EncoderOutput((B, <=256, D), lengths)

    Args:
        capacity: the most tokens kept per stream.
        window: how far apart (in memory positions) two tokens may be to merge; ``None``: any.
    """

    def __init__(self, capacity: int, *, window: int | None = 1) -> None:
        check_positive(capacity, "capacity")
        if window is not None:
            check_positive(window, "window")
        self.capacity, self.window = capacity, window
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        self.tokens: torch.Tensor | None = None
        self.sizes: torch.Tensor | None = None
        self.timestamps: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None
        self.seen = 0  # input tokens absorbed per stream position (max over the batch)

    def update(
        self, tokens: torch.Tensor, timestamps: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> None:
        """Add ``tokens (B, n, D)`` with their ``timestamps (B, n)`` seconds (default: arrival order)
        and ``lengths (B,)`` valid new tokens per stream."""
        check_tensor(tokens, "tokens", ndim=3, floating=True)
        batch, count, dim = tokens.shape
        if self.tokens is not None and (batch, dim) != (self.tokens.shape[0], self.tokens.shape[2]):
            raise OmnikitValueError(
                f"`tokens` expected (B, n, D) = ({self.tokens.shape[0]}, n, {self.tokens.shape[2]}) as in earlier "
                f"updates but got {tuple(tokens.shape)}"
            )
        lengths = check_lengths_or_full(lengths, tokens, of="tokens")
        if timestamps is None:
            timestamps = (self.seen + torch.arange(count, device=tokens.device, dtype=tokens.dtype)).expand(batch, -1)
        check_tensor(timestamps, "timestamps", shape=(batch, count), floating=True)
        self.seen += count
        fresh = torch.cat([tokens, timestamps[..., None].to(tokens.dtype), torch.ones_like(timestamps[..., None])], -1)
        if self.tokens is None:
            stacked, held = fresh, lengths
        else:
            old = torch.cat([self.tokens, self.timestamps[..., None], self.sizes[..., None]], -1)
            width = max(old.shape[1], count)
            groups = torch.stack([_pad_to(old, width), _pad_to(fresh, width)], dim=1)
            stacked, held = pack_groups(groups, torch.stack([self.lengths, lengths], dim=1))
        features, times, sizes = stacked[..., :dim], stacked[..., dim], stacked[..., dim + 1]
        if int(held.max()) > self.capacity:
            merged = merge_tokens(features, self.capacity, lengths=held, sizes=sizes, window=self.window)
            times, _ = merge_by_assignment(times, merged.assignment, sizes, merged.tokens.shape[1])
            features, sizes, held = merged.tokens, merged.sizes, merged.lengths
        self.tokens, self.timestamps, self.sizes, self.lengths = features, times, sizes, held

    def read(self) -> EncoderOutput:
        """The memory: ``EncoderOutput((B, M, D), lengths)`` with ``M <= capacity``."""
        if self.tokens is None:
            raise OmnikitValueError("the memory bank is empty: call update() first")
        return EncoderOutput(self.tokens, self.lengths)


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1]))
