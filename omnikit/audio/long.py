"""Encode hours of audio in bounded memory, with a progress bar.

An encoder whose windows are independent declares ``independent_frames``: cutting its input at
multiples of that many frames changes nothing. :func:`iter_encode` feeds it ``chunk_frames`` at a
time (a multiple of ``independent_frames``) and yields each piece, so peak memory depends on the
chunk, not on the audio; :func:`encode_long` joins the pieces and equals one full forward:

- Qwen2.5-Omni-style :class:`~omnikit.audio.WindowedAudioEncoder`: 2 s windows (exact);
- Qwen3-Omni AuT :class:`~omnikit.audio.AuTEncoder`: 8 s attention windows (exact);
- Whisper: 30 s windows, each encoded on its own, which is how Whisper is used on long audio.

``features`` may be a memory-mapped tensor (``torch.from_file``): only the current chunk is read.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from omnikit.audio.blocks import check_features
from omnikit.outputs import EncoderOutput
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive

__all__ = ["encode_long", "iter_encode"]

FRAMES_PER_SECOND = 100


def _granularity(encoder: nn.Module) -> int:
    frames = getattr(encoder, "independent_frames", None)
    if not isinstance(frames, int):
        raise OmnikitTypeError(
            f"`encoder` ({type(encoder).__name__}) does not declare `independent_frames`, so it cannot be "
            "encoded chunk by chunk"
        )
    return frames


def iter_encode(
    encoder: nn.Module,
    features: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    chunk_frames: int | None = None,
    progress: bool = True,
) -> Iterator[EncoderOutput]:
    """Yield the encoder output of successive ``chunk_frames`` pieces of ``features (B, n_mels, T)``.

    Items whose audio has ended get zero rows and length 0 in later pieces. ``chunk_frames``
    defaults to about 5 minutes (or the encoder's ``max_frames``), rounded down to a multiple of
    its ``independent_frames``.
    """
    unit = _granularity(encoder)
    limit = getattr(encoder, "max_frames", None) or 30000
    chunk = chunk_frames if chunk_frames is not None else unit * max(1, limit // unit)
    check_positive(chunk, "chunk_frames")
    if chunk % unit or chunk > limit:
        raise OmnikitValueError(
            f"`chunk_frames` expected a multiple of {unit} (the encoder's windows) of at most {limit} but got {chunk}"
        )
    n_mels = encoder.config.n_mels
    x, n = check_features(features, lengths, n_mels)
    total = int(n.max())
    with tqdm(total=total / FRAMES_PER_SECOND, unit="s", unit_scale=True, disable=not progress,
              desc="encoding audio", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        for start in range(0, total, chunk):
            piece_lengths = (n - start).clamp(0, chunk)
            live = (piece_lengths > 0).nonzero().squeeze(-1)
            width = int(piece_lengths.max())
            piece = x[live, :, start : start + width].to(next(encoder.parameters()).device)
            out = encoder(piece, piece_lengths[live].to(piece.device))
            if live.numel() < x.shape[0]:
                hidden = out.hidden_states.new_zeros(x.shape[0], *out.hidden_states.shape[1:])
                hidden[live.to(hidden.device)] = out.hidden_states
                out_lengths = torch.zeros_like(n).to(out.lengths.device)
                out_lengths[live.to(out_lengths.device)] = out.lengths
                out = EncoderOutput(hidden, out_lengths)
            bar.update(min(chunk, total - start) / FRAMES_PER_SECOND)
            yield out


@torch.no_grad()
def encode_long(
    encoder: nn.Module,
    features: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    chunk_frames: int | None = None,
    progress: bool = True,
) -> EncoderOutput:
    """:func:`iter_encode` joined into one padded :class:`EncoderOutput` (no gradients)."""
    pieces = [[] for _ in range(features.shape[0])] if isinstance(features, torch.Tensor) else []
    for out in iter_encode(encoder, features, lengths, chunk_frames=chunk_frames, progress=progress):
        for b, rows in enumerate(out.unpad()):
            pieces[b].append(rows)
    items = [torch.cat(rows) for rows in pieces]
    out_lengths = torch.tensor([t.shape[0] for t in items], dtype=torch.long)
    hidden = items[0].new_zeros(len(items), int(out_lengths.max()), items[0].shape[-1])
    for b, rows in enumerate(items):
        hidden[b, : rows.shape[0]] = rows
    return EncoderOutput(hidden, out_lengths.to(hidden.device))
