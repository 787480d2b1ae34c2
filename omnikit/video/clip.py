"""The containers that load functions return: :class:`VideoInfo` (no pixels) and :class:`Clip`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Clip", "VideoInfo"]


@dataclass(frozen=True)
class VideoInfo:
    """What the container index says about a video stream, known before decoding a frame.

    Attributes:
        path: the file.
        num_frames: frames in presentation order.
        fps: average frame rate.
        width, height: coded frame size in pixels.
        timestamps: ``(num_frames,)`` float64 seconds of every frame, from its presentation
            timestamp, the first frame at 0.
        keyframes: sorted frame indices of the keyframes (where decoding can start).
        has_audio: the container holds an audio stream.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    timestamps: np.ndarray
    keyframes: np.ndarray
    has_audio: bool

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one."""
        return float(self.timestamps[-1]) + 1.0 / self.fps


@dataclass
class Clip:
    """Frames sampled from a video.

    Attributes:
        frames: ``(T, C, H, W)`` uint8 RGB.
        timestamps: ``(T,)`` float64 seconds of each frame (presentation timestamp, first frame of
            the video at 0).
        indices: ``(T,)`` int64 frame numbers in the video.
        info: the source video's :class:`VideoInfo`.
        audio: ``(channels, samples)`` float32 waveform of the clip's time span, when requested.
        sample_rate: rate of ``audio`` in Hz (0 without audio).
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    indices: torch.Tensor
    info: VideoInfo
    audio: torch.Tensor | None = None
    sample_rate: int = 0

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def fps(self) -> float:
        """Frame rate of the source video."""
        return self.info.fps
