"""Frame sampling strategies: which frame indices to decode.

Every function returns sorted, unique int64 frame indices and never decodes anything itself;
the shot- and event-aware ones take per-frame weights computed from
:func:`omnikit.video.scores.compute_frame_scores` (and audio energy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from omnikit.utils.checks import OmnikitValueError, check_positive

__all__ = [
    "density_indices",
    "event_weights",
    "fps_indices",
    "keyframe_indices",
    "scene_weights",
    "uniform_indices",
]


def _check_count(num_frames: int, total: int, name: str = "num_frames") -> None:
    check_positive(num_frames, name)
    if num_frames > total:
        raise OmnikitValueError(f"`{name}` expected at most the video's {total} frames but got {num_frames}")


def uniform_indices(total: int, num_frames: int) -> np.ndarray:
    """The middle frame of each of ``num_frames`` equal segments of ``[0, total)``."""
    _check_count(num_frames, total)
    return np.floor((np.arange(num_frames) + 0.5) * total / num_frames).astype(np.int64)


def _thin(indices: np.ndarray, max_frames: int | None) -> np.ndarray:
    """At most ``max_frames`` of ``indices``, spread uniformly over them."""
    if max_frames is None or indices.size <= max_frames:
        return indices
    return indices[uniform_indices(indices.size, max_frames)]


def fps_indices(timestamps: np.ndarray, fps: float, *, max_frames: int | None = None) -> np.ndarray:
    """One frame per ``1/fps`` seconds: the frame whose timestamp is nearest each tick.

    ``fps`` above the video's rate gives every frame once (never duplicates); ``max_frames``
    caps the count by thinning the ticks uniformly. Memory stays bounded by the video's frame
    count whatever ``fps`` is: a rate fast enough to land a tick between every two frames is
    answered with every frame, without building the ticks.
    """
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise OmnikitValueError(f"`fps` expected a finite positive number but got {fps!r}")
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.ndim != 1 or timestamps.size == 0:
        raise OmnikitValueError(f"`timestamps` expected a non-empty 1-D array but got shape {timestamps.shape}")
    gaps = np.diff(timestamps)
    if timestamps.size == 1 or 2.0 / fps <= gaps.min():  # a tick inside every frame's nearest-tick cell
        return _thin(np.arange(timestamps.size, dtype=np.int64), max_frames)
    end = timestamps[-1] + (timestamps[-1] - timestamps[-2] if timestamps.size > 1 else 1.0 / fps)
    ticks = np.arange(int(np.ceil(end * fps - 1e-6))) / fps  # every tick before the end, float-safe
    right = np.clip(np.searchsorted(timestamps, ticks), 1, max(timestamps.size - 1, 1))
    left = right - 1
    nearest = np.where(np.abs(timestamps[left] - ticks) <= np.abs(timestamps[right] - ticks), left, right)
    return _thin(np.unique(nearest).astype(np.int64), max_frames)


def keyframe_indices(keyframes: np.ndarray, *, max_frames: int | None = None) -> np.ndarray:
    """The keyframes (cheapest to decode: no reference frames needed), thinned to ``max_frames``."""
    return _thin(np.unique(np.asarray(keyframes, dtype=np.int64)), max_frames)


def density_indices(weights: np.ndarray, num_frames: int) -> np.ndarray:
    """``num_frames`` distinct frames placed at equal steps of the cumulative ``weights``.

    Frame ``i`` gets on average ``weights[i] / weights.sum() * num_frames`` samples: denser where
    the weight is high. Collisions are pushed to neighbouring frames, so exactly ``num_frames``
    distinct indices come back.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or weights.size == 0 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise OmnikitValueError("`weights` expected a non-empty 1-D array of finite non-negative values")
    total = weights.size
    _check_count(num_frames, total)
    cdf = np.cumsum(weights)
    if cdf[-1] <= 0:
        return uniform_indices(total, num_frames)
    targets = (np.arange(num_frames) + 0.5) / num_frames * cdf[-1]
    picked = np.minimum(np.searchsorted(cdf, targets, side="right"), total - 1)
    for k in range(1, num_frames):  # strictly increasing ...
        picked[k] = max(picked[k], picked[k - 1] + 1)
    picked[-1] = min(picked[-1], total - 1)
    for k in range(num_frames - 2, -1, -1):  # ... and inside the video
        picked[k] = min(picked[k], picked[k + 1] - 1)
    return picked.astype(np.int64)


def scene_weights(total: int, cuts: Sequence[int], *, boost: float = 8.0, spread: float = 2.0) -> np.ndarray:
    """Sampling weights ``1 + boost * exp(-d / spread)``, ``d`` the distance in frames to the nearest
    shot boundary (a cut, or the last frame before it): denser around shot changes."""
    check_positive(total, "total")
    weights = np.ones(total)
    if len(cuts):
        edges = np.asarray(sorted({c for c in cuts} | {c - 1 for c in cuts}), dtype=np.float64)
        distance = np.abs(np.arange(total)[:, None] - edges[None, :]).min(axis=1)
        weights += boost * np.exp(-distance / spread)
    return weights


def _spikes(signal: np.ndarray) -> np.ndarray:
    """How far each value rises above the signal's median, in units of its median absolute deviation,
    clipped to [0, 10] and scaled to [0, 1]."""
    median = np.median(signal)
    spread = np.median(np.abs(signal - median)) + 1e-6 * (np.abs(median) + 1e-6)
    return np.clip((signal - median) / spread, 0.0, 10.0) / 10.0


def event_weights(
    frame_change: np.ndarray, audio_energy: np.ndarray | None = None, *, boost: float = 4.0
) -> np.ndarray:
    """Sampling weights ``1 + boost * spike``: denser where frame difference or audio energy spikes.

    Args:
        frame_change: ``(N,)`` per-frame visual change (e.g. ``FrameScores.pixel``).
        audio_energy: ``(N,)`` audio RMS energy around each frame, or ``None``.
    """
    frame_change = np.asarray(frame_change, dtype=np.float64)
    spike = _spikes(frame_change)
    if audio_energy is not None:
        audio_energy = np.asarray(audio_energy, dtype=np.float64)
        if audio_energy.shape != frame_change.shape:
            raise OmnikitValueError(
                f"`audio_energy` expected shape {frame_change.shape} (one value per frame) but got {audio_energy.shape}"
            )
        spike = np.maximum(spike, _spikes(audio_energy))
    return 1.0 + boost * spike
