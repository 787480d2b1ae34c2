"""Audio track extraction (audio-in-video) with PyAV, and per-frame audio energy."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.deps import require
from omnikit.video.backends import check_path

__all__ = ["frame_audio_energy", "iter_audio", "load_audio"]


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    mono: bool = False,
    start: float = 0.0,
    end: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of a media file.

    Args:
        path: any container PyAV reads (mp4, mkv, webm, wav ...).
        sample_rate: resample to this rate (Hz); ``None`` keeps the stream's rate.
        mono: average the channels.
        start, end: seconds from the start of the audio stream; ``end=None`` reads to the end.

    Returns:
        ``(waveform (channels, samples) float32 in [-1, 1], sample_rate)``.
    """
    if start < 0 or (end is not None and end <= start):
        raise OmnikitValueError(f"`start`/`end` expected 0 <= start < end but got start={start}, end={end}")
    chunks = list(iter_audio(path, sample_rate=sample_rate, mono=mono))
    rate = _stream_rate(path, sample_rate)
    if not chunks:
        raise OmnikitValueError(f"`path`: the audio stream of {check_path(path)!r} is empty")
    wave = np.concatenate(chunks, axis=1).astype(np.float32)
    first = round(start * rate)
    last = wave.shape[1] if end is None else round(end * rate)
    return torch.from_numpy(wave[:, first:last].copy()), rate


def _stream_rate(path: str | os.PathLike, sample_rate: int | None) -> int:
    """``sample_rate``, or the rate of the first audio stream of ``path``."""
    if sample_rate is not None:
        return sample_rate
    av = require("av")
    with av.open(check_path(path)) as container:
        if not container.streams.audio:
            raise OmnikitValueError(f"`path`: {check_path(path)!r} has no audio stream")
        return container.streams.audio[0].codec_context.sample_rate


def iter_audio(path: str | os.PathLike, *, sample_rate: int | None = None, mono: bool = False) -> Iterator[np.ndarray]:
    """The first audio stream of ``path`` decoded piece by piece (as PyAV decodes it): float32
    ``(channels, n)`` arrays in [-1, 1], resampled to ``sample_rate`` (``None``: the stream's rate).
    Only the current piece is in memory, so hours of audio stream in bounded memory."""
    av = require("av")
    file = check_path(path)
    try:
        container = av.open(file)
    except av.FFmpegError as err:
        raise OmnikitValueError(f"`path`: cannot open {file!r} ({err})") from err
    with container:
        if not container.streams.audio:
            raise OmnikitValueError(f"`path`: {file!r} has no audio stream")
        stream = container.streams.audio[0]
        rate = sample_rate or stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout="mono" if mono else None, rate=rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().astype(np.float32, copy=False)
            for out in resampler.resample(None):
                yield out.to_ndarray().astype(np.float32, copy=False)
        except av.FFmpegError as err:
            raise OmnikitValueError(f"`path`: {file!r} has corrupt audio data ({err})") from err


def frame_audio_energy(wave: torch.Tensor, sample_rate: int, timestamps: np.ndarray, fps: float) -> np.ndarray:
    """RMS energy of ``wave`` (channels, samples) in the ``1/fps`` window starting at each timestamp."""
    mono = wave.float().mean(dim=0).numpy()
    starts = np.round(np.asarray(timestamps) * sample_rate).astype(np.int64)
    width = max(1, round(sample_rate / fps))
    energy = np.zeros(len(starts))
    for k, s in enumerate(starts):
        window = mono[s : s + width]
        energy[k] = float(np.sqrt(np.mean(window**2))) if window.size else 0.0
    return energy
