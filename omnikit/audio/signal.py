"""Waveform handling: validation, mono/stereo, resampling, kaldi-style fbank.

Waveforms are float tensors ``(B, C, S)`` (``(B, S)`` and ``(S,)`` are read as mono batches),
with optional ``lengths (B,)`` counting valid samples. Invalid input raises a clear error:
NaN/inf samples, an empty signal, an unexpected sample rate or channel count. torchaudio is
imported only by :func:`resample` and :func:`kaldi_fbank`.
"""

from __future__ import annotations

from typing import Any

import torch

from omnikit.layers.masks import lengths_to_mask
from omnikit.utils.checks import (
    OmnikitValueError,
    check_finite,
    check_lengths_or_full,
    check_positive,
    check_tensor,
)

__all__ = ["check_sample_rate", "check_waveform", "kaldi_fbank", "require_torchaudio", "resample", "to_mono"]


def require_torchaudio() -> Any:
    """Import torchaudio or explain how to install it."""
    try:
        import torchaudio
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("this function needs torchaudio: pip install omnikit[audio]") from error
    return torchaudio


def check_waveform(
    wav: object, lengths: object = None, *, name: str = "wav", channels: int | None = None,
    like: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a waveform batch; returns ``(wav (B, C, S), lengths (B,))``.

    Raises on a non-float tensor, more than 3 dims, no samples, NaN/inf values in the valid
    samples, or a channel count other than ``channels`` (when given). Samples past ``lengths``
    come back zeroed, whatever they held (NaN included). ``like``: the module whose weights' dtype
    the waveform must have.
    """
    x = check_tensor(wav, name, ndim=(1, 2, 3), floating=True, like=like)
    x = x.reshape(1, 1, -1) if x.ndim == 1 else (x[:, None] if x.ndim == 2 else x)
    if x.shape[-1] == 0 or x.shape[0] == 0:
        raise OmnikitValueError(f"`{name}` expected at least one sample but got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        hint = "; mix it down with omnikit.audio.to_mono(wav)" if channels == 1 else ""
        raise OmnikitValueError(f"`{name}` expected {channels} channel(s) (B, {channels}, S) but got "
                                f"{x.shape[1]} in shape {tuple(x.shape)}{hint}")
    n = check_lengths_or_full(lengths, x, axis=-1)
    if lengths is not None:
        x = x.masked_fill(~lengths_to_mask(n, x.shape[-1])[:, None, :], 0)
    check_finite(x, name, "NaN or infinite samples")
    return x, n


def check_sample_rate(sample_rate: object, expected: int) -> None:
    """Refuse audio recorded at another rate than a model's: ``sample_rate`` (``None``: not given, not
    checked) must equal ``expected``; a codec never resamples silently."""
    if sample_rate is None or (isinstance(sample_rate, (int, float)) and not isinstance(sample_rate, bool)
                               and sample_rate == expected):
        return
    raise OmnikitValueError(
        f"`sample_rate` expected {expected} (the codec's rate) but got {sample_rate!r}; resample first with "
        f"omnikit.audio.resample(wav, {sample_rate!r}, {expected})"
    )


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Average the channels: ``(B, C, S) -> (B, 1, S)``; ``(B, S)`` / ``(S,)`` are already mono."""
    x = check_tensor(wav, "wav", ndim=(1, 2, 3), floating=True)
    return x.mean(dim=1, keepdim=True) if x.ndim == 3 else x


def resample(
    wav: torch.Tensor, orig_rate: int, new_rate: int, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Band-limited (sinc) resampling with torchaudio: ``(B, C, S) -> (B, C, ceil(S * new / orig))``.

    Returns the resampled waveform and the valid length of each item, ``ceil(lengths * new / orig)``.
    """
    check_positive(orig_rate, "orig_rate")
    check_positive(new_rate, "new_rate")
    x, n = check_waveform(wav, lengths)
    out_lengths = (n * new_rate + orig_rate - 1) // orig_rate
    if orig_rate == new_rate:
        return x, out_lengths
    functional = require_torchaudio().functional
    return functional.resample(x, orig_rate, new_rate), out_lengths


def kaldi_fbank(
    wav: torch.Tensor, *, sample_rate: int, lengths: torch.Tensor | None = None, n_mels: int = 80, **kaldi: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaldi-compatible log-mel filterbank (torchaudio's ``compliance.kaldi.fbank``) of a mono batch.

    Kaldi's defaults apply (25 ms frames, 10 ms shift, ``snip_edges=True``: ``1 + (S - 400) // 160``
    frames at 16 kHz) and Kaldi expects int16-scaled samples (multiply [-1, 1] audio by 32768).
    Extra keyword arguments go to torchaudio (``dither``, ``frame_shift`` ...).

    Returns ``(features (B, n_mels, F), lengths (B,))``, padded frames zero.
    """
    check_positive(sample_rate, "sample_rate")
    x, n = check_waveform(wav, lengths, channels=1)
    kaldi_fbank_fn = require_torchaudio().compliance.kaldi.fbank
    kaldi.setdefault("dither", 0.0)
    items = []
    for b in range(x.shape[0]):
        if int(n[b]) < int(sample_rate * kaldi.get("frame_length", 25.0) / 1000):
            raise OmnikitValueError(f"`wav` item {b} has {int(n[b])} samples, fewer than one kaldi frame")
        items.append(kaldi_fbank_fn(x[b, :, : int(n[b])], sample_frequency=sample_rate, num_mel_bins=n_mels, **kaldi))
    frames = torch.tensor([f.shape[0] for f in items], dtype=torch.long, device=x.device)
    out = x.new_zeros(x.shape[0], n_mels, int(frames.max()))
    for b, f in enumerate(items):
        out[b, :, : f.shape[0]] = f.T
    return out, frames
