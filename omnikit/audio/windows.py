"""Cut padded batches into fixed-size windows packed along the batch axis, and put them back.

The windowed encoders (Qwen2.5-Omni, Qwen3-Omni AuT) run their conv stems and attention on
independent windows. Rather than looping over windows (as the reference does), every window of
every item becomes one row of a batch, and windows that hold only padding are never computed::

    windows = Windows.plan(lengths, size=200, padded_len=T)   # item b -> ceil(lengths[b] / 200) rows
    rows = windows.split(x)           # (B, C, T) -> (N, C, 200)
    ...                               # per-window work, rows stay independent
    y = windows.merge(rows_out)       # (N, t, D) -> (B, n_windows * t, D), empty windows zero
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Windows"]


@dataclass
class Windows:
    """Which windows of a ``(B, ..., T)`` batch hold data.

    Attributes:
        size: window length along T.
        batch: B.
        per_item: windows per item in the padded layout, ``ceil(T / size)``.
        index: ``(N,)`` flat index ``b * per_item + w`` of every non-empty window.
        valid: ``(N,)`` valid steps in each non-empty window (``size`` except an item's last one).
    """

    size: int
    batch: int
    per_item: int
    index: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def plan(cls, lengths: torch.Tensor, size: int, padded_len: int) -> Windows:
        """Windows of ``size`` steps over items of ``lengths`` (B,) padded to ``padded_len``."""
        per_item = -(-padded_len // size)
        # flat over the B * per_item windows: no tensor has a per-item axis, whose size (1 for short
        # inputs) a traced graph would specialise on
        window = torch.arange(lengths.shape[0] * per_item, device=lengths.device)
        valid = (lengths[window // per_item] - window % per_item * size).clamp(0, size)
        if torch.compiler.is_compiling():  # traced: every window kept (fixed shapes), empty ones fully masked
            return cls(size, lengths.shape[0], per_item, window, valid)
        index = valid.nonzero().squeeze(-1)
        return cls(size, int(lengths.shape[0]), per_item, index, valid[index])

    @property
    def ragged(self) -> bool:
        """True when some window is only partly valid (always, when traced: no branch on values)."""
        return torch.compiler.is_compiling() or bool((self.valid < self.size).any())

    @property
    def complete(self) -> bool:
        """True when every window is kept (always, when traced: no size compared with a count of windows)."""
        return torch.compiler.is_compiling() or self.index.numel() == self.batch * self.per_item

    def split(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Cut the time axis ``dim`` of ``x`` (batch first) into the non-empty windows.

        ``(B, C, T)`` with ``dim=-1`` gives ``(N, C, size)``; ``(B, T, D)`` with ``dim=1`` gives
        ``(N, size, D)``. The last window of each item is zero-padded at its end.
        """
        x = x.movedim(dim, 1)
        x = F.pad(x, (*(0, 0) * (x.ndim - 2), 0, self.per_item * self.size - x.shape[1]))
        # through (B * T, ...): a reshape straight from (B, T) would ask whether B * per_item == B
        rows = x.flatten(0, 1).unflatten(0, (self.batch * self.per_item, self.size))
        if not self.complete:
            rows = rows.index_select(0, self.index)
        return rows.movedim(1, dim)

    def merge(self, rows: torch.Tensor) -> torch.Tensor:
        """``(N, t, D) -> (B, per_item * t, D)``: windows back in item order, empty ones zero."""
        _, steps, dim = rows.shape
        if self.complete:
            return rows.flatten(0, 1).unflatten(0, (self.batch, self.per_item * steps))
        out = rows.new_zeros(self.batch * self.per_item, steps, dim)
        out = out.index_copy(0, self.index, rows)
        return out.view(self.batch, self.per_item * steps, dim)
