"""Audio read piece by piece: a file, a tensor (memory-mapped ones too) or the chunks of an iterator.

An :data:`AudioSource` is one recording:

- a path (any container PyAV reads), decoded and resampled as it is read
  (:func:`omnikit.video.audio.iter_audio`);
- a tensor ``(S,)`` (e.g. ``torch.from_file`` of raw float32 samples: only the slices read are
  paged in), or ``(C, T)`` feature frames where a caller asks for features;
- an iterable of such tensors (chunks of any sizes, concatenated along the last dimension), or a
  function returning a fresh one.

:func:`rechunk` cuts any of them into pieces of a fixed size, so memory follows the piece, not the
recording. :func:`reopen` turns a source into a function that reads it again from the start (the
log-mel frontend reads the audio twice); a one-shot iterator cannot be read twice and is refused there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive

__all__ = ["AudioSource", "rechunk", "reopen"]

#: One recording: a path, a tensor, an iterable of tensor chunks, or a function returning one.
AudioSource = str | os.PathLike | torch.Tensor | Iterable[torch.Tensor] | Callable[[], Iterable[torch.Tensor]]


def _pieces(source: AudioSource, sample_rate: int) -> Iterator[torch.Tensor]:
    """The source's pieces as float32 tensors (a path: mono at ``sample_rate``)."""
    if isinstance(source, (str, os.PathLike)):
        from omnikit.video.audio import iter_audio

        for piece in iter_audio(source, sample_rate=sample_rate, mono=True):
            yield torch.from_numpy(np.ascontiguousarray(piece[0]))
        return
    if isinstance(source, torch.Tensor):
        yield source
        return
    if callable(source):
        source = source()
    if not isinstance(source, Iterable):
        raise OmnikitTypeError(f"`source` expected a path, a tensor or an iterable of tensors but got "
                               f"{type(source).__name__}")
    for index, piece in enumerate(source):
        if not isinstance(piece, torch.Tensor) or not piece.is_floating_point():
            raise OmnikitTypeError(f"`source` chunk {index} expected a float tensor but got {type(piece).__name__}"
                                   f"{'' if not isinstance(piece, torch.Tensor) else ' of ' + str(piece.dtype)}")
        yield piece


def rechunk(source: AudioSource, size: int, *, sample_rate: int = 16000, rows: int | None = None
            ) -> Iterator[torch.Tensor]:
    """Pieces of ``size`` along the last dimension (the last one shorter), float32.

    ``rows=None``: a waveform, pieces ``(size,)``; ``rows=C``: feature frames, pieces ``(C, size)``.
    Raises a ValueError for a chunk of the wrong shape, for NaN/inf (naming where) and for an empty source.
    """
    check_positive(size, "size")
    held: list[torch.Tensor] = []
    count = total = 0
    for index, piece in enumerate(_pieces(source, sample_rate)):
        wanted = (1,) if rows is None else (2,)
        if piece.ndim not in wanted or (rows is not None and piece.shape[0] != rows):
            expected = "(n,) samples" if rows is None else f"({rows}, n) frames"
            raise OmnikitValueError(f"`source` chunk {index} expected shape {expected} but got {tuple(piece.shape)}")
        held.append(piece)
        count += piece.shape[-1]
        while count >= size:
            joined = torch.cat(held, dim=-1) if len(held) > 1 else held[0]
            yield _finite(joined[..., :size], total)
            held, count = [joined[..., size:]], count - size
            total += size
    if count:
        yield _finite(torch.cat(held, dim=-1), total)
        total += count
    if not total:
        raise OmnikitValueError("`source` expected at least one sample but is empty")


def _finite(piece: torch.Tensor, start: int) -> torch.Tensor:
    piece = piece.float().contiguous()
    if not bool(torch.isfinite(piece).all()):
        raise OmnikitValueError(f"`source` holds NaN or inf in the {piece.shape[-1]} samples/frames from {start} on")
    return piece


def reopen(source: AudioSource) -> Callable[[], AudioSource]:
    """A function giving ``source`` read again from its start; refuses one-shot iterators."""
    if isinstance(source, (str, os.PathLike, torch.Tensor)) or callable(source):
        return lambda: source
    if isinstance(source, Iterator) or not isinstance(source, Iterable):
        raise OmnikitTypeError(
            f"`source` ({type(source).__name__}) can be read only once, but the log-mel frontend reads the audio "
            "twice (its max - 8 floor needs the whole recording's peak first); pass a path, a tensor, a list of "
            "chunks or a function returning a fresh iterator")
    return lambda: source
