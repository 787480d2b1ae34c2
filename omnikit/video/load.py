"""``load_video``: open, choose frames with a strategy (optionally under a token budget), decode only those."""

from __future__ import annotations

import os

import numpy as np
import torch

from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive, check_positive_number
from omnikit.video import sampling
from omnikit.video.audio import frame_audio_energy, load_audio
from omnikit.video.backends import Size, VideoBackend, open_video, resolve_size
from omnikit.video.budget import TokenSpec, plan_budget
from omnikit.video.clip import Clip
from omnikit.video.scenes import find_cuts
from omnikit.video.scores import compute_frame_scores

__all__ = ["STRATEGIES", "load_video", "sample_indices"]

#: Sampling strategies of :func:`load_video`.
STRATEGIES: tuple[str, ...] = ("uniform", "fps", "keyframe", "scene", "event")


def _count(video: VideoBackend, num_frames: int | None, fps: float | None, strategy: str) -> int:
    """Frames for the density strategies: ``num_frames``, else ``fps`` times the duration."""
    if num_frames is not None:
        return num_frames
    if fps is not None:
        return max(1, min(video.info.num_frames, round(video.info.duration * fps)))
    raise OmnikitValueError(f"strategy={strategy!r} needs `num_frames` or `fps` but got neither")


def sample_indices(
    video: VideoBackend,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    strategy: str = "uniform",
    progress: bool = False,
) -> np.ndarray:
    """The frame indices :func:`load_video` decodes (sorted, unique, int64).

    ``"scene"`` and ``"event"`` first decode every frame at 64 px to score changes.
    """
    check_choice(strategy, "strategy", STRATEGIES)
    if fps is not None:
        check_positive_number(fps, "fps")
    if num_frames is not None:
        check_positive(num_frames, "num_frames")
    info = video.info
    if strategy == "uniform":
        if fps is not None:
            raise OmnikitValueError("`fps` is not used by strategy='uniform'; pass strategy='fps'")
        if num_frames is None:
            return np.arange(info.num_frames)
        return sampling.uniform_indices(info.num_frames, num_frames)
    if strategy == "fps":
        if fps is None:
            raise OmnikitValueError("strategy='fps' needs `fps` (frames per second to sample)")
        return sampling.fps_indices(info.timestamps, fps, max_frames=num_frames)
    if strategy == "keyframe":
        return sampling.keyframe_indices(info.keyframes, max_frames=num_frames)
    count = _count(video, num_frames, fps, strategy)
    scores = compute_frame_scores(video, progress=progress)
    if strategy == "scene":
        weights = sampling.scene_weights(info.num_frames, find_cuts(scores.cut))
    else:
        energy = None
        if info.has_audio:
            wave, rate = load_audio(info.path, mono=True)
            energy = frame_audio_energy(wave, rate, info.timestamps, info.fps)
        weights = sampling.event_weights(scores.pixel, energy)
    return sampling.density_indices(weights, count)


def load_video(
    path: str | os.PathLike,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    strategy: str = "uniform",
    size: Size = None,
    backend: str = "auto",
    max_tokens: int | None = None,
    token_spec: TokenSpec | None = None,
    audio: bool = False,
    audio_sample_rate: int | None = 16000,
    progress: bool = False,
) -> Clip:
    """Decode the frames of ``path`` chosen by ``strategy``.

    Args:
        path: a video file.
        num_frames: frames to return (``"uniform"``, ``"scene"``, ``"event"``) or at most
            (``"fps"``, ``"keyframe"``). ``"uniform"`` with neither ``num_frames`` nor
            ``max_tokens`` returns every frame.
        fps: frames per second (``"fps"``; for ``"scene"``/``"event"`` it sets the count).
        strategy: ``"uniform"`` (segment centres), ``"fps"`` (nearest frame to each tick),
            ``"keyframe"`` (the codec's keyframes), ``"scene"`` (denser around hard cuts),
            ``"event"`` (denser where frame difference or audio energy spikes).
        size: ``None`` (as stored), an int (shorter side, aspect kept) or ``(height, width)``.
        backend: ``"auto"``, ``"pyav"`` or ``"decord"``.
        max_tokens: a token budget: frame count and resolution are planned by
            :func:`omnikit.video.budget.plan_budget` with ``token_spec`` (then ``num_frames``
            and ``size`` must be left out).
        audio: also decode the audio of the clip's time span into ``clip.audio``.
        audio_sample_rate: resample the audio to this rate (``None``: keep).
        progress: show a progress bar while scoring frames.

    Returns:
        A :class:`Clip` with ``frames`` ``(T, 3, H, W)`` uint8, ``timestamps`` ``(T,)`` float64
        seconds and ``indices`` ``(T,)`` int64.
    """
    with open_video(path, backend=backend) as video:
        info = video.info
        if max_tokens is not None:
            if num_frames is not None or size is not None:
                raise OmnikitValueError("`max_tokens` plans `num_frames` and `size`: pass it alone, not with them")
            if strategy == "fps":
                raise OmnikitValueError("`max_tokens` picks the frame count; use it with strategy != 'fps'")
            plan = plan_budget(info, max_tokens, spec=token_spec, max_fps=fps or 2.0)
            num_frames, size, fps = plan.num_frames, (plan.height, plan.width), None
        indices = sample_indices(video, num_frames=num_frames, fps=fps, strategy=strategy, progress=progress)
        frames = video.read(indices, resolve_size(size, info.height, info.width))
    timestamps = torch.from_numpy(info.timestamps[indices].copy())
    clip = Clip(frames, timestamps, torch.from_numpy(indices.astype(np.int64)), info)
    if audio:
        start = float(timestamps[0]) if len(indices) else 0.0
        end = float(timestamps[-1]) + 1.0 / info.fps if len(indices) else None
        clip.audio, clip.sample_rate = load_audio(info.path, sample_rate=audio_sample_rate, start=start, end=end)
    return clip
