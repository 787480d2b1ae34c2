"""Encode a video of any length from disk in windows of frames, with peak memory independent of its duration.

::

    tower = omnikit.create_model("qwen2_5_omni_vision_tiny").eval()
    for tokens in stream_encode_video(tower, "lecture.mp4", fps=1.0, size=(56, 56)):   # (T_i, dim)
        ...

:func:`iter_video_windows` decodes ``window_frames`` frames at a time (one per ``1/fps`` seconds,
the nearest frame to each tick, as ``load_video(strategy="fps")`` picks them), seeking to each
window instead of holding the video. :func:`stream_encode_video` runs a vision tower whose
attention never crosses one temporal step (the Qwen2.5-Omni / Qwen2.5-VL
:class:`~omnikit.vision.window_vit.WindowViT`, :class:`~omnikit.vision.qwen3_vit.Qwen3ViT`: two
frames a step; a per-frame :class:`~omnikit.vision.frame_encoder.FrameEncoder`: one) on each
window, so the tokens equal one forward over all the frames; what is held at once is one window
of frames and activations, plus the output tokens. Only the towers' main output is streamed
(Qwen3ViT's deepstack features are not).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from omnikit.utils.checks import OmnikitTypeError, check_positive, check_positive_number
from omnikit.video.backends import open_video
from omnikit.video.backends.base import Size, resolve_size
from omnikit.video.sampling import fps_indices

__all__ = ["encode_video_stream", "iter_video_windows", "stream_encode_video"]


def iter_video_windows(
    path: str | os.PathLike,
    *,
    fps: float = 1.0,
    size: Size = None,
    window_frames: int = 32,
    backend: str = "auto",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(frames (n, 3, H, W) uint8, timestamps (n,) float64 seconds)`` of ``path`` sampled at ``fps``,
    ``window_frames`` at a time (the last window shorter)."""
    check_positive_number(fps, "fps")
    check_positive(window_frames, "window_frames")
    with open_video(path, backend=backend) as video:
        info = video.info
        indices = fps_indices(info.timestamps, fps)
        shape = resolve_size(size, info.height, info.width)
        for start in range(0, len(indices), window_frames):
            chosen = indices[start : start + window_frames]
            yield video.read(chosen, shape), torch.from_numpy(np.ascontiguousarray(info.timestamps[chosen]))


def _frames_per_step(encoder: nn.Module) -> int:
    """The ``frames_per_step`` a vision tower whose attention stays inside one temporal step declares
    (WindowViT, Qwen3ViT, FrameEncoder); the video floor does not import the towers."""
    step = getattr(encoder, "frames_per_step", None)
    if not isinstance(step, int) or step < 1:
        raise OmnikitTypeError(f"`encoder` expected a vision tower whose attention stays inside one temporal step "
                               f"(WindowViT, Qwen3ViT, FrameEncoder: `frames_per_step`) but got "
                               f"{type(encoder).__name__}")
    return step


def _to_unit(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0


def stream_encode_video(
    encoder: nn.Module,
    path: str | os.PathLike,
    *,
    fps: float = 1.0,
    size: Size = None,
    window_frames: int = 32,
    transform: Callable[[torch.Tensor], torch.Tensor] = _to_unit,
    backend: str = "auto",
) -> Iterator[torch.Tensor]:
    """Tokens ``(T_i, dim)`` of each window of ``path`` (see the module doc), each under ``torch.no_grad``.

    Args:
        encoder: a WindowViT, Qwen3ViT or FrameEncoder.
        path, fps, size, backend: as :func:`iter_video_windows`.
        window_frames: frames per window, rounded down to a multiple of the encoder's temporal
            patch (at least one step).
        transform: uint8 frames ``(n, 3, H, W)`` -> the encoder's input (default: scaled to [0, 1]).
    """
    step = _frames_per_step(encoder)
    window = step * max(1, window_frames // step)
    device = next(encoder.parameters()).device
    for frames, _ in iter_video_windows(path, fps=fps, size=size, window_frames=window, backend=backend):
        with torch.no_grad():  # per window: grad mode is not held across the yield
            out = encoder(transform(frames)[None].to(device))
        yield out.hidden_states[0, : int(out.lengths[0])]


def encode_video_stream(encoder: nn.Module, path: str | os.PathLike, **kwargs: object) -> torch.Tensor:
    """:func:`stream_encode_video` joined: ``(T, dim)``."""
    return torch.cat(list(stream_encode_video(encoder, path, **kwargs)))  # type: ignore[arg-type]
