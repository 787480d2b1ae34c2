"""Tubelet (Conv3d) patch embedding for native video ViTs: patch ``(2, 14, 14)`` by default."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import (
    OmnikitValueError,
    check_finite,
    check_lengths_or_full,
    check_positive,
    check_tensor,
)

__all__ = ["TubeletEmbed", "checked_frames", "repeat_last_valid_frame"]


def repeat_last_valid_frame(frames: torch.Tensor, lengths: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the time axis of ``(B, T, ...)`` to a multiple of ``multiple``, every item's frames past its
    length replaced by its last valid frame (so a tubelet never mixes in padding)."""
    batch, length = frames.shape[:2]
    total = -(-length // multiple) * multiple
    steps = torch.arange(total, device=frames.device)
    source = torch.minimum(steps[None, :], (lengths - 1)[:, None])  # (B, total)
    index = source.view(batch, total, *([1] * (frames.ndim - 2))).expand(batch, total, *frames.shape[2:])
    return frames.gather(1, index)


def checked_frames(
    frames: torch.Tensor, lengths: torch.Tensor | None, in_chans: int, *, like: nn.Module | None = None
) -> torch.Tensor:
    """Validate ``frames (B, T, in_chans, H, W)`` (in the weights' dtype of ``like``, the module, when
    given) and return ``lengths`` (default: all ``T``) on their device."""
    check_tensor(frames, "frames", shape=("B", "T", in_chans, "H", "W"), floating=True, like=like)
    if frames.shape[0] == 0:
        raise OmnikitValueError(f"`frames` expected at least one clip but got shape {tuple(frames.shape)}")
    return check_lengths_or_full(lengths, frames, of="frames")


class TubeletEmbed(nn.Module):
    """Cut ``(B, T, C, H, W)`` video into ``(t, p, p)`` tubelets and project each to ``dim``.

    The weight has the shape of ``nn.Conv3d(in_chans, dim, patch, stride=patch)`` (as in
    Qwen2-VL / ViViT checkpoints) but is applied as one matmul over flattened tubelets.
    Returns ``(B, T/t, H/p, W/p, dim)``; ``T`` is padded to a multiple of ``t`` by repeating the
    last valid frame of each item.
    """

    def __init__(self, dim: int, patch: tuple[int, int, int] = (2, 14, 14), in_chans: int = 3, *, bias: bool = False):
        super().__init__()
        check_positive(dim, "dim")
        if len(patch) != 3 or any(not isinstance(p, int) or p < 1 for p in patch):
            raise OmnikitValueError(f"`patch` expected three positive ints (t, h, w) but got {patch}")
        self.dim, self.patch, self.in_chans = dim, tuple(patch), in_chans
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=self.patch, stride=self.patch, bias=bias)

    def output_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Temporal tokens per item: ``ceil(lengths / t)``."""
        return -(-lengths // self.patch[0])

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = checked_frames(frames, lengths, self.in_chans, like=self)
        batch, _, chans, height, width = frames.shape
        pt, ph, pw = self.patch
        if height % ph or width % pw or not height or not width:
            raise OmnikitValueError(f"`frames` sides expected positive multiples of {ph}x{pw} but got {height}x{width}")
        frames = repeat_last_valid_frame(frames, lengths, pt)
        check_finite(frames, "frames", "in valid frames")  # padding now repeats the last valid frame
        gt, gh, gw = frames.shape[1] // pt, height // ph, width // pw
        tubes = frames.view(batch, gt, pt, chans, gh, ph, gw, pw).permute(0, 1, 4, 6, 3, 2, 5, 7)
        tubes = tubes.reshape(batch, gt, gh, gw, chans * pt * ph * pw)
        return F.linear(tubes, self.proj.weight.view(self.dim, -1), self.proj.bias)
