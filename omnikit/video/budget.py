"""Token-budget planning: how many frames, at what resolution, fit the tokens a model can spend."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omnikit.utils.checks import OmnikitValueError, check_positive
from omnikit.video.clip import VideoInfo

__all__ = ["BudgetPlan", "TokenSpec", "plan_budget"]


@dataclass(frozen=True)
class TokenSpec:
    """How a frame encoder turns frames into tokens.

    One token covers ``patch_size * merge_size`` pixels on each side and ``temporal_patch`` frames.
    The default is Qwen2-VL / Qwen2.5-Omni: 14 px patches, 2x2 merger, 2-frame tubelets, so a
    token per 28x28 px per 2 frames. A plain ViT-B/16 per frame is ``TokenSpec(16, 1, 1, extra_tokens=1)``.
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch: int = 2
    extra_tokens: int = 0  # per frame group (a CLS token, say)

    @property
    def pixels_per_token(self) -> int:
        """Side in pixels of the square one token covers."""
        return self.patch_size * self.merge_size

    def tokens(self, num_frames: int, height: int, width: int) -> int:
        """Tokens for ``num_frames`` frames of ``height x width`` (sides multiples of ``pixels_per_token``)."""
        side = self.pixels_per_token
        groups = math.ceil(num_frames / self.temporal_patch)
        return groups * ((height // side) * (width // side) + self.extra_tokens)


@dataclass(frozen=True)
class BudgetPlan:
    """Frames and resolution chosen by :func:`plan_budget`; ``tokens <= max_tokens``."""

    num_frames: int
    height: int
    width: int
    tokens: int


def _resolutions(info: VideoInfo, side: int, min_side: int) -> list[tuple[int, int]]:
    """Sizes with both sides multiples of ``side``, the video's aspect ratio, no upscaling, smallest first."""
    short, long_ = sorted((info.height, info.width))
    aspect = long_ / short
    smallest = max(1, math.ceil(min(min_side, short) / side))
    out = []
    for k in range(smallest, max(smallest, short // side) + 1):
        s, long_side = k * side, max(side, round(k * aspect) * side)
        out.append((s, long_side) if info.height <= info.width else (long_side, s))
    return out


def plan_budget(
    info: VideoInfo,
    max_tokens: int,
    *,
    spec: TokenSpec | None = None,
    max_fps: float = 2.0,
    min_frames: int | None = None,
    max_frames: int | None = None,
    min_side: int = 112,
) -> BudgetPlan:
    """Pick the frame count and resolution that fit ``max_tokens``.

    Frames come first: as many as ``max_fps`` over the video's duration gives (within
    ``[min_frames, max_frames]``, a multiple of ``spec.temporal_patch``), reduced only when even
    the smallest resolution (short side ``min_side``) does not fit; the resolution is then the
    largest that fits, never above the video's own.

    Raises:
        ValueError: the budget cannot hold ``min_frames`` frames at the smallest resolution.
    """
    spec = spec or TokenSpec()
    check_positive(max_tokens, "max_tokens")
    step = spec.temporal_patch
    min_frames = min_frames or step
    check_positive(min_frames, "min_frames")
    cap = min(info.num_frames, max_frames or info.num_frames)
    wanted = max(min_frames, min(cap, math.ceil(info.duration * max_fps)))
    frames = max(step, wanted // step * step) if wanted >= step else wanted
    sizes = _resolutions(info, spec.pixels_per_token, min_side)
    while frames >= min_frames and spec.tokens(frames, *sizes[0]) > max_tokens:
        frames -= step
    if frames < min_frames or frames < 1:
        raise OmnikitValueError(
            f"`max_tokens`={max_tokens} cannot hold {min_frames} frame(s) at {sizes[0][0]}x{sizes[0][1]} "
            f"({spec.tokens(min_frames, *sizes[0])} tokens); raise it or lower `min_side`/`min_frames`"
        )
    height, width = max((s for s in sizes if spec.tokens(frames, *s) <= max_tokens), key=lambda s: s[0] * s[1])
    return BudgetPlan(frames, height, width, spec.tokens(frames, height, width))
