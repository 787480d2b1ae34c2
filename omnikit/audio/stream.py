"""Encode audio of any length, streamed from disk, with peak memory independent of its duration.

::

    encoder = omnikit.create_model("qwen2_5_omni_audio_tiny").eval()
    for tokens in stream_encode(encoder, "ten_hours.wav"):      # (T_i, dim) pieces, in order
        ...
    tokens = encode_stream(encoder, "ten_hours.wav")            # joined: (T, dim)

The source (:data:`~omnikit.audio.sources.AudioSource`) is read ``chunk_seconds`` at a time; what
is held at once is one window of audio, features and activations, plus the output tokens. Per
encoder:

- Whisper, Qwen2.5-Omni (:class:`~omnikit.audio.WindowedAudioEncoder`), Qwen3-Omni AuT: the
  Whisper log-mel (:func:`stream_log_mel`, exact: two reads of the source, the first finds the
  peak its ``max - 8`` floor needs), then windows of a multiple of the encoder's
  ``independent_frames``: equal to one forward over the whole clip (Whisper: to its 30 s windows,
  as :func:`~omnikit.audio.encode_long`);
- Gemma 4 (:class:`~omnikit.audio.gemma4.Gemma4AudioEncoder`): causal and local, so each window
  is run with ``history_frames`` of earlier features and 8 later ones: equal to one pass. Its
  feature extractor is not in omnikit: pass its log-mel frames (``features=True``);
- wav2vec2 (:class:`~omnikit.audio.Wav2Vec2Encoder`): full self-attention, so no window is exact
  on long audio: windows of ``chunk_seconds`` (plus the 80 samples that keep the conv frame grid
  continuous) are encoded on their own, as Whisper's 30 s windows are; one window, so one forward,
  when the clip fits it; as many frames as one forward;
- streaming codecs (``supports_streaming``: Mimi, the SEANet codecs): their own stream, codes
  ``(K, F_i)`` per piece, equal to ``encode`` of the whole clip (but for Mimi's last partial frame,
  zero-padded here). Mimi's stream keeps its
  transformer's keys and values, which grow with the duration (2 x depth x dim floats per
  latent step).

``features=True``: the source holds feature frames ``(n_mels, T)`` (a tensor, e.g. memory-mapped,
or chunks) for the log-mel encoders.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from omnikit.audio.features import LogMelSpectrogram, _loudness_octaves
from omnikit.audio.gemma4 import Gemma4AudioEncoder
from omnikit.audio.sources import AudioSource, rechunk, reopen
from omnikit.audio.wav2vec2 import Wav2Vec2Encoder
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_positive_number

__all__ = ["encode_stream", "stream_encode", "stream_log_mel"]


def _log_mel_pieces(frontend: LogMelSpectrogram, source: AudioSource, chunk: int, octaves: int
                    ) -> Iterator[tuple[torch.Tensor, float]]:
    """Unfloored ``log10`` mel frames ``(n_mels, F_i)`` of ``source`` in order, with each piece's peak
    sample; frame ``f`` is centred on sample ``f * hop`` (reflection at the start, zeros after the
    end), ``S // hop`` frames in all, as :class:`LogMelSpectrogram` computes them in one call."""
    hop, half, n_fft = frontend.hop_length, frontend.n_fft // 2, frontend.n_fft
    buf: torch.Tensor | None = None  # padded signal from frame `done`'s first sample on
    done = seen = 0
    pieces = rechunk(source, chunk, sample_rate=frontend.sample_rate)
    scale = (lambda x: torch.ldexp(x, torch.tensor(-octaves))) if octaves else (lambda x: x)
    for piece in pieces:
        peak = float(piece.abs().max())
        piece = scale(piece)
        seen += piece.shape[-1]
        if buf is None:
            while piece.shape[-1] <= half:  # the reflection needs half + 1 samples
                more = next(pieces, None)
                if more is None:
                    break
                peak = max(peak, float(more.abs().max()))
                seen += more.shape[-1]
                piece = torch.cat((piece, scale(more)))
            start = torch.nn.functional.pad(piece, (0, max(0, half + 1 - piece.shape[-1])))
            buf = torch.cat((start[1 : half + 1].flip(0), piece))
        else:
            buf = torch.cat((buf, piece))
        ready = min((buf.shape[-1] - n_fft) // hop + 1, seen // hop - done) if buf.shape[-1] >= n_fft else 0
        if ready > 0:
            yield _frames(frontend, buf[: (ready - 1) * hop + n_fft], octaves), peak
            buf, done = buf[ready * hop :], done + ready
        else:
            yield buf.new_zeros(frontend.n_mels, 0), peak
    if buf is not None and seen // hop > done:
        tail = torch.cat((buf, buf.new_zeros(n_fft)))
        yield _frames(frontend, tail[: (seen // hop - done - 1) * hop + n_fft], octaves), 0.0


def _frames(frontend: LogMelSpectrogram, x: torch.Tensor, octaves: int) -> torch.Tensor:
    spec = torch.stft(x, frontend.n_fft, frontend.hop_length, window=frontend.window, center=False,
                      return_complex=True)
    power = spec.abs().square()
    return torch.clamp(frontend.filters @ power, min=1e-10).log10() + 2 * math.log10(2.0) * octaves


def stream_log_mel(frontend: LogMelSpectrogram, source: AudioSource, *, chunk_frames: int = 6000
                   ) -> Iterator[torch.Tensor]:
    """:class:`LogMelSpectrogram` of one recording, ``(n_mels, F_i)`` pieces of about ``chunk_frames``
    frames; joined they equal ``frontend(wav)`` of the whole waveform. The source is read twice:
    first for its peak (the ``max - 8`` floor and the loudness scaling), then for the features."""
    again = reopen(source)
    chunk = chunk_frames * frontend.hop_length
    top, loudest = -math.inf, 0.0
    for frames, peak in _log_mel_pieces(frontend, again(), chunk, 0):
        loudest = max(loudest, peak)
        if frames.numel():
            top = max(top, float(frames.max()))
    octaves = int(_loudness_octaves(torch.tensor([[loudest]]))[0])
    if octaves:  # audio above 2**40: the first read's powers overflowed; read the peak again, scaled
        top = max(float(f.max()) for f, _ in _log_mel_pieces(frontend, again(), chunk, octaves) if f.numel())
    if top == -math.inf:
        raise OmnikitValueError(f"`source` expected at least hop_length={frontend.hop_length} samples (one frame)")
    for frames, _ in _log_mel_pieces(frontend, again(), chunk, octaves):
        if frames.numel():
            yield (torch.maximum(frames, torch.tensor(top - 8.0)) + 4.0) / 4.0


def _windows(pieces: Iterator[torch.Tensor], step: int, history: int = 0, lookahead: int = 0
             ) -> Iterator[tuple[torch.Tensor, int]]:
    """Windows ``[start - history, start + step + lookahead)`` (clipped to the stream) of the pieces
    joined along the last dimension, for ``start = 0, step, 2 step, ...``, with ``start``'s offset
    in the window. Holds one window (and one piece) at a time."""
    buf: torch.Tensor | None = None
    origin = start = 0
    ended = False
    while True:
        while not ended and (buf is None or origin + buf.shape[-1] < start + step + lookahead):
            piece = next(pieces, None)
            if piece is None:
                ended = True
            else:
                buf = piece if buf is None else torch.cat((buf, piece), dim=-1)
        if buf is None or start >= origin + buf.shape[-1]:
            return
        first = max(origin, start - history)
        yield buf[..., first - origin : start + step + lookahead - origin], start - first
        start += step
        drop = max(0, start - history) - origin
        buf, origin = buf[..., drop:], origin + drop


def _run(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x[None])``'s first item, without gradients (grad mode is not held across a ``yield``)."""
    with torch.no_grad():
        return encoder(x[None].to(next(encoder.parameters()).device)).hidden_states[0]


def _feature_windows(encoder: nn.Module, features: Iterator[torch.Tensor], chunk: int) -> Iterator[torch.Tensor]:
    """Tokens of a log-mel encoder, window by window."""
    if isinstance(encoder, Gemma4AudioEncoder):
        step = 4 * max(1, chunk // 4)
        for window, skip in _windows(features, step, encoder.history_frames, 8):
            yield _run(encoder, window)[skip // 4 : skip // 4 + step // 4]
        return
    unit = encoder.independent_frames
    limit = getattr(encoder, "max_frames", None) or chunk
    step = unit * max(1, min(chunk, limit) // unit)
    for window, _ in _windows(features, step):
        if int(encoder.output_lengths(torch.tensor([window.shape[-1]]))[0]) >= 1:  # else no token, as in one pass
            yield _run(encoder, window)


def stream_encode(
    encoder: nn.Module,
    source: AudioSource,
    *,
    chunk_seconds: float = 60.0,
    features: bool = False,
) -> Iterator[torch.Tensor]:
    """Encode one recording window by window (see the module doc); yields ``(T_i, dim)`` tokens
    (codecs: ``(K, F_i)`` codes) in order; each window runs under ``torch.no_grad``.

    Args:
        encoder: a Whisper, Qwen2.5-Omni, AuT, Gemma 4 or wav2vec2 audio encoder, or a streaming codec.
        source: a path, a tensor, an iterable of chunks or a function returning one (16 kHz mono
            samples; the codec's rate for a codec; ``(n_mels, T)`` frames with ``features=True``).
        chunk_seconds: audio per window (rounded down to the encoder's independent windows; at
            most the encoder's ``max_frames``).
        features: the source holds log-mel frames, not samples.
    """
    check_positive_number(chunk_seconds, "chunk_seconds")
    n_mels = getattr(getattr(encoder, "config", None), "n_mels", None)
    if n_mels is not None and (hasattr(encoder, "independent_frames") or isinstance(encoder, Gemma4AudioEncoder)):
        frontend = LogMelSpectrogram(n_mels)
        chunk = max(1, round(chunk_seconds * frontend.sample_rate / frontend.hop_length))
        if features:
            frames = rechunk(source, chunk, rows=n_mels)
        elif isinstance(encoder, Gemma4AudioEncoder):
            raise OmnikitValueError("Gemma 4's audio feature extractor is not in omnikit: pass its log-mel "
                                    "frames (n_mels, T) as `source` with features=True")
        else:
            frames = stream_log_mel(frontend, source, chunk_frames=chunk)
        yield from _feature_windows(encoder, frames, chunk)
        return
    if features:
        raise OmnikitValueError(f"`features=True` needs a log-mel encoder but got {type(encoder).__name__}")
    if isinstance(encoder, Wav2Vec2Encoder):
        yield from _wave_windows(encoder, source, chunk_seconds)
    elif getattr(encoder, "supports_streaming", False) is True and hasattr(encoder, "encode"):
        yield from _codec_stream(encoder, source, chunk_seconds)
    else:
        raise OmnikitTypeError(f"`encoder` expected an audio encoder of omnikit.audio or a streaming codec but "
                               f"got {type(encoder).__name__}")


def _wave_windows(encoder: Wav2Vec2Encoder, source: AudioSource, chunk_seconds: float) -> Iterator[torch.Tensor]:
    """wav2vec2: independent windows on one continuous frame grid."""
    hop, field = encoder.hop, encoder.features.receptive_field
    step = hop * max(1, round(chunk_seconds * 16000) // hop)
    for window, _ in _windows(rechunk(source, step), step, 0, field - hop):
        if window.shape[-1] >= field:  # shorter: no frame, as in one pass
            yield _run(encoder, window)


def _codec_stream(codec: nn.Module, source: AudioSource, chunk_seconds: float) -> Iterator[torch.Tensor]:
    """A streaming codec's own stream; the last partial frame is zero-padded to a whole one when the
    codec's offline ``encode`` counts partial frames (``output_lengths(hop + 1) == 2``; Mimi's
    offline encode pads it its own way, so that one frame's codes may differ)."""
    hop = codec.stream_chunk
    step = hop * max(1, round(chunk_seconds * codec.sample_rate) // hop)
    pads = int(codec.output_lengths(torch.tensor([hop + 1]))[0]) == 2
    with codec.streaming(1):
        for piece in rechunk(source, step, sample_rate=codec.sample_rate):
            if piece.shape[-1] % hop:
                if not pads:
                    piece = piece[: piece.shape[-1] // hop * hop]
                else:
                    piece = torch.nn.functional.pad(piece, (0, hop - piece.shape[-1] % hop))
            if piece.shape[-1]:
                with torch.no_grad():
                    codes = codec.encode(piece[None, None].to(next(codec.parameters()).device))[0]
                yield codes


def encode_stream(encoder: nn.Module, source: AudioSource, *, chunk_seconds: float = 60.0,
                  features: bool = False) -> torch.Tensor:
    """:func:`stream_encode` joined: ``(T, dim)`` tokens (codecs: ``(K, F)`` codes)."""
    pieces = list(stream_encode(encoder, source, chunk_seconds=chunk_seconds, features=features))
    return torch.cat(pieces, dim=-1 if pieces[0].dtype == torch.long else 0)
