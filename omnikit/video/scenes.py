"""Hard-cut detection: :func:`detect_scenes` and the thresholding rule :func:`find_cuts`."""

from __future__ import annotations

import math
import os

import numpy as np

from omnikit.utils.checks import OmnikitValueError, check_positive
from omnikit.video.backends import open_video
from omnikit.video.scores import compute_frame_scores

__all__ = ["detect_scenes", "find_cuts"]


def _check_settings(**values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise OmnikitValueError(f"`{name}` expected a finite number >= 0 but got {value!r}")


def find_cuts(
    scores: np.ndarray, *, threshold: float = 1.0, ratio: float = 3.0, window: int = 8, min_scene_len: int = 3
) -> list[int]:
    """Frames where a new shot starts, from per-frame cut scores (``scores[i]``: change from ``i-1``).

    A frame is a cut when its score is at least ``threshold`` *and* ``ratio`` times the median
    score of the ``window`` frames on each side (so steady fast motion is not a cut). With
    :attr:`FrameScores.cut <omnikit.video.FrameScores.cut>` scores, ``threshold=1`` is the level
    a hard cut reaches in colour or in structure. Of two cuts
    closer than ``min_scene_len`` frames only the stronger is kept. Frame 0 is never a cut.
    """
    _check_settings(threshold=threshold, ratio=ratio)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise OmnikitValueError(f"`scores` expected a 1-D array but got shape {scores.shape}")
    check_positive(window, "window")
    check_positive(min_scene_len, "min_scene_len")
    n = scores.size
    candidates = []
    for i in range(1, n):
        context = np.concatenate([scores[max(1, i - window) : i], scores[i + 1 : i + 1 + window]])
        floor = np.median(context) if context.size else 0.0
        if scores[i] >= threshold and scores[i] > ratio * floor:
            candidates.append(i)
    kept: list[int] = []
    for i in sorted(candidates, key=lambda j: (-scores[j], j)):
        if all(abs(i - k) >= min_scene_len for k in kept):
            kept.append(i)
    return sorted(kept)


def detect_scenes(
    path: str | os.PathLike,
    *,
    threshold: float = 1.0,
    ratio: float = 3.0,
    window: int = 8,
    min_scene_len: int = 3,
    backend: str = "auto",
    progress: bool = False,
) -> list[int]:
    """The frame index at which each new shot starts (hard cuts), 0 excluded.

    Decodes the whole video once at low resolution (64 px short side) and applies
    :func:`find_cuts` to the cut scores of :mod:`omnikit.video.scores`: a cut moves the colour
    distribution far, or changes the picture in a way no global shift (pan, shake) explains.
    """
    _check_settings(threshold=threshold, ratio=ratio)
    with open_video(path, backend=backend) as video:
        scores = compute_frame_scores(video, progress=progress)
    return find_cuts(scores.cut, threshold=threshold, ratio=ratio, window=window, min_scene_len=min_scene_len)
