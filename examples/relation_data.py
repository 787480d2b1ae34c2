"""On-the-fly audio-visual relation tasks: the answer depends on a relation between what is seen and heard.

Every sample is a 1 s clip: 8 frames of ``8 x 8`` RGB at 8 frames/s (with 2-frame tubelets of
``4 x 4`` patches: 4 time steps of 2 x 2 tokens, one token per quadrant and quarter second) and
100 frames of a 16-band log-mel spectrogram (100 frames/s: 25 audio tokens of 40 ms). Both media
carry Gaussian noise. The answer is yes/no and balanced; each medium alone gives no information
about it (chance: 0.5).

- ``place``: a square lights up in one quadrant for a random stretch of frames and a tone sounds in
  one of 4 pitch bands (band ``k`` points to quadrant ``k``); yes iff the pitch points to the square.
- ``time``: one flash (a square in a random quadrant for one quarter second) and one short beep
  (60 ms, random pitch); yes iff the beep starts during the flash, otherwise it is 250-1000 ms off.
- ``count``: 1-3 flashes (each one quarter second, in distinct quarters) and 1-3 beeps (in distinct
  quarters); yes iff there are as many beeps as flashes.

Each sample also says what each medium alone shows (``video_part``, ``audio_part``), for the
perception questions of the training recipe in ``relation_tasks.py``.
"""

from __future__ import annotations

import torch

__all__ = ["CLIP", "TASKS", "make_batch", "swap_media"]

TASKS = ("place", "time", "count")


class CLIP:
    """Sizes of a clip (see the module docstring)."""

    frames, size, fps, channels = 8, 8, 8.0, 3
    mels, mel_frames = 16, 100
    steps = 4  # quarter-second time steps (2 frames, 25 mel frames each)
    bands = 4  # pitch bands of 4 mels each
    noise, square, tone = 0.3, 1.5, 1.5


def _randint(high: int | torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """``(n,)`` uniform ints in ``[0, high)`` (``high`` a scalar or ``(n,)``)."""
    return (torch.rand(n, generator=g) * torch.as_tensor(high, dtype=torch.float)).long()


def _empty(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise frames ``(n, 8, 3, 8, 8)`` and noise mels ``(n, 16, 100)``."""
    frames = torch.randn(n, CLIP.frames, CLIP.channels, CLIP.size, CLIP.size, generator=g) * CLIP.noise
    mels = torch.randn(n, CLIP.mels, CLIP.mel_frames, generator=g) * CLIP.noise
    return frames, mels


def _square(frames: torch.Tensor, i: int, quadrant: int, first: int, last: int, g: torch.Generator) -> None:
    """Light a 4 x 4 square of a random colour in ``quadrant`` (0..3, row-major) for frames ``first..last-1``."""
    half = CLIP.size // 2
    y, x = (quadrant // 2) * half, (quadrant % 2) * half
    colour = torch.rand(CLIP.channels, generator=g) * 0.5 + 0.5
    frames[i, first:last, :, y : y + half, x : x + half] += CLIP.square * colour[None, :, None, None]


def _beep(mels: torch.Tensor, i: int, band: int, start: int, length: int) -> None:
    mels[i, 4 * band : 4 * band + 4, start : start + length] += CLIP.tone


def _flash_at(frames: torch.Tensor, i: int, step: int, g: torch.Generator) -> None:
    """A square in a random quadrant during quarter ``step`` (its 2 frames)."""
    _square(frames, i, int(_randint(4, 1, g)), 2 * step, 2 * step + 2, g)


def _beep_in(mels: torch.Tensor, i: int, step: int, g: torch.Generator, length: int = 6) -> None:
    """A beep of random pitch starting in the first 16 mel frames of quarter ``step``."""
    _beep(mels, i, int(_randint(4, 1, g)), 25 * step + int(_randint(16, 1, g)), length)


def _place(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    frames, mels = _empty(n, g)
    label = _randint(2, n, g)
    quadrant = _randint(4, n, g)
    band = torch.where(label.bool(), quadrant, (quadrant + 1 + _randint(3, n, g)) % 4)
    for i in range(n):
        first = int(_randint(CLIP.frames - 2, 1, g))
        _square(frames, i, int(quadrant[i]), first, first + 2 + int(_randint(CLIP.frames - first - 1, 1, g)), g)
        start = int(_randint(50, 1, g))
        _beep(mels, i, int(band[i]), start, 30 + int(_randint(CLIP.mel_frames - start - 29, 1, g)))
    return {"frames": frames, "mels": mels, "label": label, "video_part": quadrant, "audio_part": band}


def _time(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    frames, mels = _empty(n, g)
    label = _randint(2, n, g)
    flash = _randint(CLIP.steps, n, g)
    beep = torch.where(label.bool(), flash, (flash + 1 + _randint(CLIP.steps - 1, n, g)) % CLIP.steps)
    for i in range(n):
        _flash_at(frames, i, int(flash[i]), g)
        _beep_in(mels, i, int(beep[i]), g)
    return {"frames": frames, "mels": mels, "label": label, "video_part": flash, "audio_part": beep}


def _distinct_steps(count: int, g: torch.Generator) -> list[int]:
    return torch.randperm(CLIP.steps, generator=g)[:count].tolist()


def _count(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    frames, mels = _empty(n, g)
    label = _randint(2, n, g)
    flashes = 1 + _randint(3, n, g)
    beeps = torch.where(label.bool(), flashes, (flashes + _randint(2, n, g)) % 3 + 1)
    for i in range(n):
        for step in _distinct_steps(int(flashes[i]), g):
            _flash_at(frames, i, step, g)
        for step in _distinct_steps(int(beeps[i]), g):
            _beep_in(mels, i, step, g)
    return {"frames": frames, "mels": mels, "label": label, "video_part": flashes - 1, "audio_part": beeps - 1}


_MAKERS = {"place": _place, "time": _time, "count": _count}


def make_batch(task: str, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """``frames (n, 8, 3, 8, 8)``, ``mels (n, 16, 100)``, ``label (n,)`` (1: yes) of ``task``, and what each
    medium alone shows, ``video_part`` / ``audio_part (n,)`` in ``0..3``: the square's quadrant and the
    tone's band (place), the flash's and the beep's quarter (time), flashes - 1 and beeps - 1 (count)."""
    return _MAKERS[task](n, g)


def swap_media(batch: dict[str, torch.Tensor], medium: str) -> dict[str, torch.Tensor]:
    """Give every sample the audio (``"audio"``) or video (``"video"``) of the next one; labels stay."""
    key = "mels" if medium == "audio" else "frames"
    return {**batch, key: batch[key].roll(1, dims=0)}
