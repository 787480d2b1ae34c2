"""Whisper-compatible log-mel spectrogram, in pure torch (no torchaudio needed).

``log_mel_spectrogram(wav, sample_rate=16000, n_mels=80 or 128)`` computes exactly what Whisper's
feature extractor computes: a periodic Hann window of ``n_fft=400``, hop 160 (10 ms), centred
frames with reflection at the start, power spectrum, Slaney-normalised mel filters on the Slaney
mel scale, ``log10(max(mel, 1e-10))``, values floored at ``max - 8`` and mapped by
``(x + 4) / 4``. An item of ``S`` samples gives ``S // 160`` frames.

Documented behaviour at the edges:

- samples past an item's end count as zeros (as in Whisper's zero padding to 30 s), so an item's
  frames do not depend on its batch; padded frames of the output are 0;
- the ``max - 8`` floor uses each item's own valid frames;
- pure silence maps to the constant ``-1.5`` (the floor), not to NaN;
- loud items (peak above ``2**40``, where the float32 power spectrum would overflow from about
  1e16 on) are scaled by an exact power of two before the STFT and the log shifted back, so the
  features stay finite and equal the exact ones: the ``max - 8`` floor lies far above the
  ``1e-10`` clamp at such levels, so the clamp never decides a value there;
- NaN/inf samples, no samples, fewer than ``hop_length`` samples, several channels or a sample
  rate other than 16 kHz raise ``ValueError`` (resample with :func:`omnikit.audio.resample`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.signal import check_waveform
from omnikit.layers import lengths_to_mask
from omnikit.utils.checks import OmnikitValueError, check_positive

__all__ = ["LogMelSpectrogram", "log_mel_spectrogram", "mel_filterbank"]

WHISPER_SAMPLE_RATE = 16000


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    log_step = math.log(6.4) / 27.0
    return torch.where(hz < 1000.0, 3.0 * hz / 200.0, 15.0 + torch.log(hz.clamp(min=1e-10) / 1000.0) / log_step)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * torch.exp(log_step * (mel - 15.0)))


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular Slaney-normalised mel filters ``(n_freqs, n_mels)`` (librosa/Whisper convention), float32."""
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_freqs = torch.linspace(0.0, sample_rate // 2, n_freqs, dtype=torch.float64)
    mels = torch.linspace(float(_hz_to_mel(torch.tensor(f_min, dtype=torch.float64))),
                          float(_hz_to_mel(torch.tensor(f_max, dtype=torch.float64))), n_mels + 2,
                          dtype=torch.float64)
    edges = _mel_to_hz(mels)
    widths = edges.diff()
    slopes = edges[None, :] - fft_freqs[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    filters = filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters.float()


#: items whose peak |sample| exceeds 2**this are scaled down by a power of two before the STFT
_LOUDNESS_OCTAVES = 40


def _loudness_octaves(x: torch.Tensor) -> torch.Tensor:
    """Per item of ``x`` (B, S): the power of two ``k >= 0`` to divide by so its peak is at most
    ``2**40`` (0 for any ordinary recording); int32 (B,)."""
    _, exponent = torch.frexp(x.abs().amax(dim=-1))
    return (exponent - _LOUDNESS_OCTAVES).clamp(min=0)


class LogMelSpectrogram(nn.Module):
    """Module form of :func:`log_mel_spectrogram`; holds the window and filters as buffers.

    ``forward(wav (B, 1, S) or (B, S), lengths=None, *, sample_rate=16000) -> (mel (B, n_mels, F), lengths (B,))``.
    """

    def __init__(self, n_mels: int = 80, *, sample_rate: int = WHISPER_SAMPLE_RATE, n_fft: int = 400,
                 hop_length: int = 160) -> None:
        super().__init__()
        for value, name in ((n_mels, "n_mels"), (sample_rate, "sample_rate"), (n_fft, "n_fft"),
                            (hop_length, "hop_length")):
            check_positive(value, name)
        self.n_mels, self.sample_rate, self.n_fft, self.hop_length = n_mels, sample_rate, n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).T.contiguous(),
                             persistent=False)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per item: ``lengths // hop_length``."""
        return torch.as_tensor(lengths) // self.hop_length

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None, *,
                sample_rate: int = WHISPER_SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
        if sample_rate != self.sample_rate:
            raise OmnikitValueError(
                f"`sample_rate` expected {self.sample_rate} but got {sample_rate}; resample first with "
                f"omnikit.audio.resample(wav, {sample_rate}, {self.sample_rate})"
            )
        x, n = check_waveform(wav, lengths, channels=1)
        frames = self.output_lengths(n)
        if int(frames.min()) < 1:
            raise OmnikitValueError(
                f"`wav` items need at least hop_length={self.hop_length} samples for one frame; shortest has "
                f"{int(n.min())}"
            )
        x = x[:, 0]
        if bool((n < x.shape[-1]).any()):
            x = x * lengths_to_mask(n, x.shape[-1]).to(x.dtype)
        x = x.float()
        octaves = _loudness_octaves(x)  # (B,)
        x = F.pad(torch.ldexp(x, -octaves[:, None]), (0, self.n_fft // 2))
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)
        power = spec[..., : int(frames.max())].abs().square()
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()  # (B, n_mels, F)
        log_spec = log_spec + (2 * math.log10(2.0)) * octaves[:, None, None].float()
        valid = lengths_to_mask(frames, log_spec.shape[-1])[:, None, :]
        peak = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        return log_spec.masked_fill(~valid, 0.0), frames


def log_mel_spectrogram(wav: torch.Tensor, *, sample_rate: int, lengths: torch.Tensor | None = None,
                        n_mels: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper log-mel features of a mono 16 kHz batch: ``(mel (B, n_mels, S // 160), frames (B,))``."""
    frontend = LogMelSpectrogram(n_mels)
    if isinstance(wav, torch.Tensor):
        frontend = frontend.to(wav.device)
    return frontend(wav, lengths, sample_rate=sample_rate)
