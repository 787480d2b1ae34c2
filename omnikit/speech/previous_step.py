"""A one-step delay line over a token grid, carried across chunks while streaming."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from omnikit.streaming import StreamingModule, StreamingState
from omnikit.utils.checks import check_tensor

__all__ = ["PreviousStep"]


@dataclass
class PreviousState(StreamingState):
    """The last column ``(B, R, 1)`` of the previous chunk (None before the first)."""

    batch_size: int
    last: torch.Tensor | None = None


class PreviousStep(StreamingModule[PreviousState]):
    """Token grid ``(B, R, S)`` -> the grid one step later ``(B, R, S)``: step ``s`` holds column
    ``s - 1`` and step 0 the ``start`` column ``(R,)`` (while streaming, after the first chunk: the
    previous chunk's last column), so a model reading it at step ``s`` sees only steps ``< s``."""

    def __init__(self, start: Sequence[int]) -> None:
        super().__init__()
        self.start = tuple(int(s) for s in start)

    def init_streaming_state(self, batch_size: int) -> PreviousState:
        return PreviousState(batch_size)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        check_tensor(grid, "grid", shape=("B", len(self.start), "S"), floating=False)
        state = self.streaming_state
        first = torch.tensor(self.start, device=grid.device).expand(grid.shape[0], -1)[..., None]
        if state is not None:
            state.check_batch(grid.shape[0], "grid")
            if state.last is not None:
                first = state.last
            if grid.shape[2]:
                state.last = grid[..., -1:]
        return torch.cat((first, grid), dim=2)[..., : grid.shape[2]]
