"""Samples of mixed media and their decoded form.

A :class:`Sample` is chat-style text with media markers plus the media it points at:

- ``text`` (one user turn) or ``messages`` (``[{"role": ..., "content": ...}]``; the assistant's
  content is what a loss learns), where ``<audio>``, ``<video>`` and ``<image>`` stand for the
  next item of that kind, in order;
- ``audios``: waveforms ``(S,)`` / ``(C, S)`` at the processor's sample rate, or audio files;
- ``videos``: frame tensors ``(T, C, H, W)`` (uint8 or float in [0, 1]) or video files;
- ``images``: ``(C, H, W)`` tensors or image files;
- ``use_audio_in_video``: a video file's soundtrack also goes in, right after the video;
- ``codes``: the Talker's targets for a Thinker-Talker model, codec codes ``(K, F)`` int64 of the
  reply's speech (a tensor or a ``.npy`` file; e.g. ``model.codec.encode(wav)[0]``).

:func:`load_sample` decodes the files (in a ``DataLoader`` worker when used by
:class:`~omnikit.data.MediaDataset`) into a :class:`LoadedSample` of tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_finite

__all__ = ["MARKERS", "LoadedSample", "MediaFileError", "Sample", "as_sample", "load_sample"]

#: Marker of each media kind in sample text.
MARKERS = {"audio": "<audio>", "video": "<video>", "image": "<image>"}

Media = torch.Tensor | str | os.PathLike


class MediaFileError(OmnikitValueError):
    """A media file of a sample is missing or cannot be decoded; ``.path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"media file {path!r}: {reason}")
        self.path = path


@dataclass
class Sample:
    """One training or inference example (see the module docstring)."""

    text: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    audios: Sequence[Media] = ()
    videos: Sequence[Media] = ()
    images: Sequence[Media] = ()
    use_audio_in_video: bool = False
    codes: torch.Tensor | str | os.PathLike | None = None

    def turns(self) -> list[tuple[str, str]]:
        """``[(role, content)]``: ``text`` is one turn without a role (``""``) whose text is all learned."""
        if (self.text is None) == (self.messages is None):
            raise OmnikitValueError("a sample expected exactly one of `text` and `messages`")
        if self.text is not None:
            if not isinstance(self.text, str):
                raise OmnikitTypeError(f"`text` expected a str but got {type(self.text).__name__}")
            return [("", self.text)]
        return _turns(self.messages)


#: The roles of the published chat templates; another (a typo of "assistant") would silently learn nothing.
ROLES = ("system", "user", "assistant", "tool")


def _turns(messages: object) -> list[tuple[str, str]]:
    """``[(role, content)]`` of chat ``messages``, each checked."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise OmnikitValueError(f"`messages` expected a non-empty list of {{'role', 'content'}} dicts but got "
                                f"{messages!r:.80}")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise OmnikitValueError(f"`messages[{i}]` expected a dict with exactly 'role' and 'content' but got "
                                    f"{message!r:.80}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise OmnikitValueError(f"`messages[{i}]['role']` expected one of {list(ROLES)} but got {role!r}")
        if not isinstance(content, str):
            raise OmnikitTypeError(f"`messages[{i}]['content']` expected a str but got {type(content).__name__}")
        turns.append((role, content))
    return turns


@dataclass
class LoadedSample:
    """A :class:`Sample` with its media decoded.

    Attributes:
        turns: ``[(role, content)]``.
        audios: mono waveforms ``(S,)`` float32 at the processor's rate, in marker order.
        videos: frames ``(T, C, H, W)`` float32 in [0, 1] at the processor's size.
        images: ``(C, H, W)`` float32 in [0, 1] at the processor's size.
        soundtracks: per video, its mono waveform ``(S,)`` (``use_audio_in_video``) or None.
        codes: the Talker's target codes ``(K, F)`` int64, or None.
        source: a name for error messages (a file or manifest line).
    """

    turns: list[tuple[str, str]]
    audios: list[torch.Tensor] = field(default_factory=list)
    videos: list[torch.Tensor] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    soundtracks: list[torch.Tensor | None] = field(default_factory=list)
    source: str = "<sample>"
    codes: torch.Tensor | None = None


def as_sample(sample: Sample | Mapping[str, Any]) -> Sample:
    """A :class:`Sample` from itself or a mapping of its fields."""
    if isinstance(sample, Sample):
        return sample
    if isinstance(sample, Mapping):
        unknown = set(sample) - set(Sample.__dataclass_fields__)
        if unknown:
            raise OmnikitValueError(f"sample keys expected a subset of {sorted(Sample.__dataclass_fields__)} "
                                    f"but got unknown {sorted(unknown)}")
        return Sample(**sample)
    raise OmnikitTypeError(f"`sample` expected a Sample or a mapping but got {type(sample)}")


def load_sample(
    sample: Sample | Mapping[str, Any], *, sample_rate: int, num_frames: int, size: tuple[int, int],
    source: str = "<sample>",
) -> LoadedSample:
    """Decode every file of ``sample``: audio at ``sample_rate`` (mono), ``num_frames`` uniformly
    sampled video frames and images at ``size`` ``(H, W)``. A missing or undecodable file raises
    :class:`MediaFileError` naming it."""
    sample = as_sample(sample)
    loaded = LoadedSample(sample.turns(), source=source)
    loaded.audios = [_audio(a, sample_rate, f"audios[{i}]") for i, a in enumerate(sample.audios)]
    for i, video in enumerate(sample.videos):
        frames, soundtrack = _video(video, num_frames, size, sample_rate, sample.use_audio_in_video, f"videos[{i}]")
        loaded.videos.append(frames)
        loaded.soundtracks.append(soundtrack)
    loaded.images = [_resize(_image(image, f"images[{i}]")[None], size)[0] for i, image in enumerate(sample.images)]
    loaded.codes = None if sample.codes is None else _codes(sample.codes)
    return loaded


def _codes(codes: Media) -> torch.Tensor:
    if not isinstance(codes, torch.Tensor):
        path = _path(codes)
        try:
            codes = torch.from_numpy(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as err:
            raise MediaFileError(path, f"cannot read codes ({err})") from err
    if codes.ndim != 2 or codes.is_floating_point() or codes.is_complex():
        raise OmnikitValueError(f"`codes` expected integer codes (K, F) but got {codes.dtype} {tuple(codes.shape)}")
    return codes.long()


def _path(media: Media) -> str:
    path = os.fspath(media)
    if not os.path.isfile(path):
        raise MediaFileError(path, "no such file")
    return path


def _audio(audio: Media, sample_rate: int, name: str) -> torch.Tensor:
    if isinstance(audio, torch.Tensor):
        if audio.ndim not in (1, 2) or not audio.is_floating_point():
            raise OmnikitValueError(f"`{name}` expected a float waveform (S,) or (C, S) but got "
                                    f"{audio.dtype} {tuple(audio.shape)}")
        check_finite(audio, name)
        return (audio if audio.ndim == 1 else audio.mean(0)).float()
    from omnikit.video.audio import load_audio

    path = _path(audio)
    try:
        wave, _ = load_audio(path, sample_rate=sample_rate, mono=True)
    except (ValueError, OSError) as err:
        raise MediaFileError(path, f"cannot decode audio ({err})") from err
    return wave[0]


def _video(
    video: Media, num_frames: int, size: tuple[int, int], sample_rate: int, soundtrack: bool, name: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(video, torch.Tensor):
        if video.ndim != 4 or video.shape[0] == 0:
            raise OmnikitValueError(f"`{name}` expected frames (T, C, H, W) with T >= 1 but got {tuple(video.shape)}")
        _check_pixels(video, name)
        if soundtrack:
            raise OmnikitValueError("`use_audio_in_video` needs video files (a frame tensor has no soundtrack); "
                                    "pass the waveform in `audios` instead")
        frames = _to_float(video)
        index = torch.from_numpy(np.linspace(0, len(frames) - 1, num_frames).round().astype(np.int64))
        return _resize(frames[index], size), None
    from omnikit.video.load import load_video

    path = _path(video)
    try:
        clip = load_video(path, num_frames=num_frames, size=size, audio=soundtrack, audio_sample_rate=sample_rate)
    except (ValueError, OSError) as err:
        raise MediaFileError(path, f"cannot decode video ({err})") from err
    if len(clip.frames) != num_frames:
        raise MediaFileError(path, f"expected {num_frames} frames but the file gave {len(clip.frames)}")
    audio = clip.audio.mean(0) if soundtrack else None
    return _to_float(clip.frames), audio


def _image(image: Media, name: str) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise OmnikitValueError(f"`{name}` expected an image (C, H, W) but got {tuple(image.shape)}")
        _check_pixels(image[None], name)
        return _to_float(image)
    path = _path(image)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise MediaFileError(path, f"cannot decode image ({err})") from err
    return _to_float(torch.from_numpy(array.copy()).permute(2, 0, 1))


def _check_pixels(frames: torch.Tensor, name: str) -> None:
    """``frames (T, C, H, W)``: RGB, uint8 or float in [0, 1] (the range files decode to), finite."""
    if frames.shape[1] != 3:
        raise OmnikitValueError(f"`{name}` expected 3 (RGB) channels in dim -3 but got {frames.shape[1]} "
                                f"(shape {tuple(frames.shape[1:])})")
    if frames.dtype == torch.uint8:
        return
    if not frames.is_floating_point():
        raise OmnikitTypeError(f"`{name}` expected uint8 or float pixels but got {frames.dtype}")
    check_finite(frames, name)
    low, high = float(frames.min()), float(frames.max())
    if low < 0.0 or high > 1.0:
        raise OmnikitValueError(f"`{name}` expected float pixels in [0, 1] (or uint8 0-255) but got values in "
                                f"[{low:.3g}, {high:.3g}]")


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(T, C, H, W)`` -> ``(T, C, *size)`` (bilinear; unchanged when already that size)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
