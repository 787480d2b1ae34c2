"""Synthetic test videos with known cuts, motion, timestamps and an audio track.

Every shot has its own colour gradient, a texture that drifts and a square that moves; a cut
switches all three at once. Audio is a quiet tone with loud bursts at chosen times. Used by the
tests, the benchmarks and the example: ground truth is known exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnikit.utils.checks import OmnikitValueError, check_positive
from omnikit.utils.deps import require

__all__ = ["SyntheticVideo", "random_cuts", "write_synthetic_video"]


@dataclass(frozen=True)
class SyntheticVideo:
    """Ground truth of a written video."""

    path: str
    num_frames: int
    fps: int
    cuts: list[int]
    audio_bursts: list[float]
    sample_rate: int


def random_cuts(num_frames: int, num_cuts: int, *, min_gap: int = 8, seed: int = 0) -> list[int]:
    """``num_cuts`` sorted cut frames in ``[min_gap, num_frames - min_gap]``, at least ``min_gap`` apart."""
    rng = np.random.default_rng(seed)
    slack = num_frames - min_gap * (num_cuts + 1)
    if slack < 0:
        raise OmnikitValueError(f"`num_cuts`={num_cuts} shots of >= {min_gap} frames do not fit in {num_frames}")
    extra = np.sort(rng.integers(0, slack + 1, num_cuts))
    return [int(min_gap * (i + 1) + e) for i, e in enumerate(extra)]


def _shot_renderer(rng: np.random.Generator, height: int, width: int):
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0.3, 1.0)
    ramp = ramp + np.linspace(0, 1, height)[:, None, None] * rng.uniform(0.0, 0.7)
    background = c0 + (c1 - c0) * np.clip(ramp, 0, 1)
    texture = rng.normal(0, 18, (height, 2 * width, 3))
    square_colour = rng.uniform(0, 255, 3)
    side = max(4, min(height, width) // 4)
    start = rng.uniform(0, 1, 2) * [height - side, width - side]
    velocity = rng.uniform(-1.5, 1.5, 2)
    drift = rng.uniform(0.5, 1.5)

    def render(t: int) -> np.ndarray:
        shift = int(t * drift) % width
        img = background + texture[:, shift : shift + width]
        y, x = (start + velocity * t) % [height - side, width - side]
        img[int(y) : int(y) + side, int(x) : int(x) + side] = square_colour
        return np.clip(img, 0, 255).astype(np.uint8)

    return render


def write_synthetic_video(
    path: str | Path,
    *,
    num_frames: int = 96,
    fps: int = 24,
    size: tuple[int, int] = (64, 96),
    cuts: Sequence[int] = (),
    audio_bursts: Sequence[float] = (),
    sample_rate: int = 16000,
    codec: str = "libx264",
    gop: int = 12,
    seed: int = 0,
) -> SyntheticVideo:
    """Write an mp4 with shots starting at ``cuts`` (frame indices) and an audio track.

    Args:
        size: ``(height, width)``, even numbers.
        audio_bursts: seconds at which a 0.2 s loud burst plays (``sample_rate=0``: no audio).
        codec: ``"libx264"`` (B-frames, reordered timestamps) or ``"mpeg4"``.
        gop: keyframe interval in frames.
    """
    av = require("av")
    check_positive(num_frames, "num_frames")
    check_positive(fps, "fps")
    cuts = sorted(int(c) for c in cuts)
    if any(c <= 0 or c >= num_frames for c in cuts):
        raise OmnikitValueError(f"`cuts` expected frame indices in (0, {num_frames}) but got {cuts}")
    height, width = size
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop
        audio = container.add_stream("aac", rate=sample_rate) if sample_rate else None
        bounds = [0, *cuts, num_frames]
        for start, stop in itertools.pairwise(bounds):
            render = _shot_renderer(rng, height, width)
            for t in range(stop - start):
                frame = av.VideoFrame.from_ndarray(render(t), format="rgb24")
                container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            _write_audio(av, container, audio, num_frames / fps, audio_bursts, sample_rate, rng)
    return SyntheticVideo(str(path), num_frames, fps, cuts, [float(b) for b in audio_bursts], sample_rate)


def _write_audio(av, container, stream, seconds: float, bursts: Sequence[float], rate: int, rng) -> None:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.02 * np.sin(2 * np.pi * 220 * t)
    for b in bursts:
        on = (t >= b) & (t < b + 0.2)
        wave[on] += 0.6 * rng.uniform(-1, 1, int(on.sum()))
    wave = wave.astype(np.float32)
    chunk = 1024
    for start in range(0, len(wave), chunk):
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + chunk], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
