"""Per-frame change scores from one low-resolution pass over a video.

For frames ``i-1`` and ``i`` (all in [0, 1]):

- ``pixel[i]``: mean absolute RGB difference;
- ``shifted[i]``: the smallest mean absolute grey-level difference over global shifts of up to
  1/8 of the short side (a pan or camera shake is explained by a shift, a cut is not);
- ``histogram[i]``: earth mover's distance between the per-channel colour histograms, i.e. how
  far (in intensity) the colour mass moved: motion keeps the colour distribution and codec
  drift moves it a few levels, a cut usually moves it far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from omnikit.video.backends import VideoBackend

__all__ = ["COLOUR_CUT", "STRUCTURE_CUT", "FrameScores", "compute_frame_scores"]

_BINS = 64
#: Colour (earth mover's) and shift-compensated structure changes at which a frame counts as a cut.
COLOUR_CUT, STRUCTURE_CUT = 0.05, 0.07
_SHIFT_SIDE = 24  # short side of the grey frames the shift search runs on


@dataclass(frozen=True)
class FrameScores:
    """``(num_frames,)`` float64 change scores; index 0 is 0 (no previous frame)."""

    pixel: np.ndarray
    shifted: np.ndarray
    histogram: np.ndarray

    @property
    def cut(self) -> np.ndarray:
        """The hard-cut score: the larger of the colour and shift-compensated structure changes, each in
        units of the level a cut reaches (so 1.0 is the cut threshold of either cue)."""
        return np.maximum(self.histogram / COLOUR_CUT, self.shifted / STRUCTURE_CUT)


def _cdfs(frames: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, _BINS)`` per-channel cumulative colour distributions."""
    n = frames.shape[0]
    index = frames.reshape(n, -1, 3).long() * _BINS // 256 + torch.arange(3) * _BINS
    counts = torch.zeros(n, 3 * _BINS)
    counts.scatter_add_(1, index.reshape(n, -1), torch.ones(index.numel() // n).expand(n, -1))
    return (counts.view(n, 3, _BINS) / index.shape[1]).cumsum(dim=-1)


def _grey(frames: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3)`` float -> ``(N, h, w)`` grey frames with short side ``_SHIFT_SIDE``."""
    grey = frames.mean(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    scale = _SHIFT_SIDE / min(grey.shape[-2:])
    if scale < 1:
        grey = torch.nn.functional.interpolate(grey, scale_factor=scale, mode="area")
    return grey[:, 0]


def _shifted_difference(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Smallest mean absolute difference of ``(N, h, w)`` frame pairs over global shifts."""
    reach = max(1, min(previous.shape[-2:]) // 8)  # 1/8 of the short side per frame
    h, w = previous.shape[-2:]
    best = None
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            a = previous[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            b = current[:, max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            diff = (a - b).abs().mean(dim=(1, 2))
            best = diff if best is None else torch.minimum(best, diff)
    return best


def compute_frame_scores(
    video: VideoBackend, *, short_side: int = 64, chunk: int = 64, progress: bool = False
) -> FrameScores:
    """Decode every frame of ``video`` at ``short_side`` pixels and score consecutive changes."""
    from omnikit.video.backends import resolve_size

    size = resolve_size(min(short_side, video.info.height, video.info.width), video.info.height, video.info.width)
    n = video.info.num_frames
    pixel, shifted, histogram = np.zeros(n), np.zeros(n), np.zeros(n)
    frames = video.iter_frames(size)
    if progress:
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=n, desc="scoring frames", unit="frame")
    previous: tuple[int, torch.Tensor, torch.Tensor] | None = None
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        nonlocal previous
        indices = [i for i, _ in batch]
        pixels = torch.from_numpy(np.stack([f for _, f in batch]))
        hists = _cdfs(pixels)
        pixels = pixels.float() / 255.0
        if previous is not None:
            indices = [previous[0], *indices]
            pixels = torch.cat([previous[1], pixels])
            hists = torch.cat([previous[2], hists])
        grey = _grey(pixels)
        diffs = (pixels[1:] - pixels[:-1]).abs().mean(dim=(1, 2, 3))
        moved = _shifted_difference(grey[:-1], grey[1:])
        tv = (hists[1:] - hists[:-1]).abs().sum(dim=2).mean(dim=1) / _BINS
        for j, index in enumerate(indices[1:]):
            if index == indices[j] + 1:  # frames the decoder skipped leave a 0 score
                pixel[index], shifted[index], histogram[index] = float(diffs[j]), float(moved[j]), float(tv[j])
        previous = (indices[-1], pixels[-1:], hists[-1:])
        batch.clear()

    for item in frames:
        batch.append(item)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    return FrameScores(pixel, shifted, histogram)
