"""Qwen2.5-Omni's token2wav: Talker codes (50 Hz) -> 24 kHz waveform, in a chosen voice.

A flow-matching DiT (:class:`~omnikit.audio.token2wav_dit.Token2WavDiT`) turns the codes, a
speaker x-vector (``conditioning``) and a reference mel of the voice into a 100 Hz log-mel
spectrogram, starting from Gaussian noise; BigVGAN (:class:`~omnikit.audio.bigvgan.BigVGAN`)
turns that into samples (240 per mel frame, 480 per code). The voices of a published snapshot
come in its ``spk_dict.pt`` (:mod:`omnikit.audio.speakers`).

The output depends on the initial noise: pass ``noise`` to fix it. With ``noise=None`` it is
drawn with ``torch.randn`` of shape ``(B, F * repeats, mel_dim)`` from the global generator, as
transformers does, so after the same ``torch.manual_seed`` both draw the same sample.

Chunked decoding (:meth:`Token2Wav.stream`, :class:`Token2WavStream`) runs the DiT over windows of
``past + chunk + future`` mel frames and keeps the middle ``chunk``: the DiT's block attention
limits each evaluation's reach to one block ahead and two behind, but 36 evaluations (10 steps)
compound it, so a window differs slightly from the whole utterance decoded at once (measured in
``docs/audio.md``). The vocoder is exact by chunks: each chunk is vocoded with
:meth:`~omnikit.audio.bigvgan.BigVGAN.context_frames` frames of context on both sides (its
receptive field), and its audio is emitted once the mel frames that context needs exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from omnikit.audio.bigvgan import BigVGAN, BigVGANConfig
from omnikit.audio.code2wav import Code2WavOutput
from omnikit.audio.speakers import Voice
from omnikit.audio.token2wav_dit import DiTConfig, Token2WavDiT
from omnikit.layers.masks import lengths_to_mask
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import (
    OmnikitValueError,
    check_finite,
    check_input,
    check_lengths,
    check_positive,
    check_tensor,
)

__all__ = ["Token2Wav", "Token2WavConfig", "Token2WavStream"]


@dataclass
class Token2WavConfig:
    """:class:`Token2Wav`'s DiT and vocoder (each a config, or a mapping of its fields) and output rate."""

    dit: DiTConfig = field(default_factory=DiTConfig)
    vocoder: BigVGANConfig = field(default_factory=BigVGANConfig)
    sample_rate: int = 24000

    def __post_init__(self) -> None:
        if isinstance(self.dit, Mapping):
            self.dit = DiTConfig(**self.dit)
        if isinstance(self.vocoder, Mapping):
            self.vocoder = BigVGANConfig(**self.vocoder)
        if self.dit.mel_dim != self.vocoder.mel_dim:
            raise OmnikitValueError(f"`vocoder.mel_dim` ({self.vocoder.mel_dim}) must equal `dit.mel_dim` "
                                    f"({self.dit.mel_dim})")


class Token2Wav(nn.Module):
    """``codes (B, F) -> waveform (B, F * samples_per_code)`` (:meth:`token2wav`); ``forward`` returns a
    :class:`~omnikit.audio.Code2WavOutput` (``hidden_states (B, S, 1)``, ``lengths``, ``audio (B, 1, S)``);
    :meth:`decode` is the codec interface (one codebook).

    Attributes:
        sample_rate, frame_rate: output samples and codes per second (24000 and 50 published).
        samples_per_code: ``repeats * hop`` (480 published).
        codebook_size: valid code ids are ``0 .. codebook_size - 1`` (``num_embeds + 1``).
    """

    num_codebooks = 1
    output_dim = 1

    def __init__(self, config: Token2WavConfig) -> None:
        super().__init__()
        self.config = config
        self.dit = Token2WavDiT(config.dit)
        self.vocoder = BigVGAN(config.vocoder)
        self.sample_rate = config.sample_rate
        self.samples_per_code = config.dit.repeats * self.vocoder.hop
        self.frame_rate = config.sample_rate / self.samples_per_code
        self.codebook_size = config.dit.num_embeds + 1
        #: the voice :meth:`decode` uses when given none (None: the unconditioned voice)
        self.default_voice: Voice | None = None

    def decode(self, codes: torch.Tensor, *, conditioning: torch.Tensor | None = None,
               reference_mel: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
        """The codec interface (:class:`~omnikit.audio.CodeDecoder`): ``codes (B, 1, F)`` -> ``(B, 1, S)``.

        Without ``conditioning`` / ``reference_mel`` the voice is :attr:`default_voice` (a
        :class:`~omnikit.audio.speakers.Voice`, e.g. ``load_speakers(snapshot)["Chelsie"]``), or, when that is
        None, the unconditioned voice (zero x-vector and reference mel: the input classifier-free guidance
        drops to). ``options``: :meth:`token2wav`'s (``noise``, ``steps``, ...).
        """
        check_tensor(codes, "codes", shape=("B", 1, "F"), floating=False)
        if conditioning is None and reference_mel is None:
            voice, weight = self.default_voice, self.dit.input_proj.weight
            if voice is None:
                conditioning = weight.new_zeros(self.config.dit.xvector_dim)
                reference_mel = weight.new_zeros(self.dit.speaker_encoder.min_frames, self.config.dit.mel_dim)
            else:
                conditioning = voice.conditioning.to(weight.device, weight.dtype)
                reference_mel = voice.reference_mel.to(weight.device, weight.dtype)
        wav = self.token2wav(codes[:, 0], conditioning=conditioning, reference_mel=reference_mel, **options)
        return wav[:, None]

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Samples produced from ``lengths`` codes."""
        return lengths * self.samples_per_code

    def voice(self, conditioning: torch.Tensor, reference_mel: torch.Tensor, batch: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``conditioning (B | 1, xvector_dim)`` or ``(xvector_dim,)`` and ``reference_mel (B | 1, T, mel_dim)``
        or ``(T, mel_dim)`` (one voice for every item) -> both with batch ``batch``."""
        c = self.config.dit
        conditioning = check_input(conditioning, "conditioning", self, ndim=(1, 2, 3))  # leading dims merge
        reference_mel = check_input(reference_mel, "reference_mel", self, ndim=(2, 3, 4))
        check_tensor(conditioning, "conditioning", shape=(*[None] * (conditioning.ndim - 1), c.xvector_dim))
        check_tensor(reference_mel, "reference_mel", shape=(*[None] * (reference_mel.ndim - 2), "T", c.mel_dim))
        conditioning = conditioning.reshape(-1, c.xvector_dim)
        reference_mel = reference_mel.reshape(-1, reference_mel.shape[-2], c.mel_dim)
        shortest = self.dit.speaker_encoder.min_frames
        if reference_mel.shape[1] < shortest:
            raise OmnikitValueError(f"`reference_mel` expected at least {shortest} frames (the speaker encoder's "
                                    f"reflection padding) but got {reference_mel.shape[1]}")
        for name, value in (("conditioning", conditioning), ("reference_mel", reference_mel)):
            if value.shape[0] not in (1, batch):
                raise OmnikitValueError(f"`{name}` expected batch 1 or {batch} (the codes') but got {value.shape[0]}")
        return conditioning.expand(batch, -1), reference_mel.expand(batch, -1, -1)

    def _noise(self, noise: torch.Tensor | None, batch: int, codes: int, like: torch.Tensor,
               mel_lengths: torch.Tensor | None) -> torch.Tensor:
        c = self.config.dit
        if noise is None:
            return torch.randn((batch, codes * c.repeats, c.mel_dim), dtype=like.dtype, device=like.device)
        check_tensor(noise, "noise", ndim=3, floating=True, like=self)
        if noise.shape[1:] == (codes, c.repeats * c.mel_dim):  # the same values, one row per code
            noise = noise.reshape(noise.shape[0], codes * c.repeats, c.mel_dim)
        check_tensor(noise, "noise", shape=(batch, codes * c.repeats, c.mel_dim))
        valid = noise if mel_lengths is None else noise.masked_fill(
            ~lengths_to_mask(mel_lengths, noise.shape[1])[..., None], 0)
        check_finite(valid, "noise")  # the padding may hold anything
        return noise.to(like.dtype)

    def vocode(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``mel (B, T, mel_dim)`` -> ``(B, T * hop)``; ``lengths`` (B,): valid frames per item (each item as if
        alone, zeros past its end)."""
        return self.vocoder(mel.transpose(1, 2), lengths)

    def token2wav(self, codes: torch.Tensor, *, conditioning: torch.Tensor, reference_mel: torch.Tensor,
                  noise: torch.Tensor | None = None, steps: int = 10, guidance_scale: float = 0.5,
                  sway: float | None = -1.0, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Decode codes to a waveform (transformers' ``Qwen2_5OmniToken2WavModel(code, conditioning, reference_mel,
        num_steps=steps, guidance_scale=, sway_coefficient=sway)``).

        Args:
            codes: ``(B, F)`` int64 Talker codes (ids ``0 .. num_embeds``; strip the end-of-speech code first).
            conditioning: ``(B | 1, xvector_dim)`` speaker x-vector (a voice's ``"cond"`` in ``spk_dict.pt``).
            reference_mel: ``(B | 1, T_ref, mel_dim)`` the voice's reference mel (its ``"ref_mel"``).
            noise: ``(B, F * repeats, mel_dim)`` initial sample (or the same values as ``(B, F, repeats * mel_dim)``,
                one row per code); None: ``torch.randn`` (global generator).
            steps, guidance_scale, sway: the ODE's time points, classifier-free guidance, time sway.
            lengths: ``(B,)`` valid codes per item of a right-padded batch (padding never reaches valid samples).

        Returns:
            ``(B, F * samples_per_code)`` waveform in [-1, 1], zero past each item's length.
        """
        self.dit.check_codes(codes)
        batch, frames = codes.shape
        repeats = self.config.dit.repeats
        conditioning, reference_mel = self.voice(conditioning, reference_mel, batch)
        mel_lengths = None
        if lengths is not None:
            mel_lengths = check_lengths(lengths, "lengths", batch=batch, max_len=frames).to(codes.device) * repeats
        noise = self._noise(noise, batch, frames, reference_mel, mel_lengths)
        mel = self.dit.sample(codes, conditioning, reference_mel, noise, steps=steps, guidance_scale=guidance_scale,
                              sway=sway, lengths=mel_lengths)
        return self.vocode(mel, mel_lengths)

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor | None = None, *, conditioning: torch.Tensor,
                reference_mel: torch.Tensor, noise: torch.Tensor | None = None, steps: int = 10,
                guidance_scale: float = 0.5, sway: float | None = -1.0) -> Code2WavOutput:
        """:meth:`token2wav` as a codec decoder's output (``lengths``: valid codes per item)."""
        wav = self.token2wav(codes, conditioning=conditioning, reference_mel=reference_mel, noise=noise, steps=steps,
                             guidance_scale=guidance_scale, sway=sway, lengths=lengths)
        batch, frames = codes.shape
        if lengths is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=codes.device)
        samples = self.output_lengths(lengths.long())
        return Code2WavOutput(wav[..., None], samples, wav[:, None])

    def stream(self, codes: torch.Tensor, *, conditioning: torch.Tensor, reference_mel: torch.Tensor,
               noise: torch.Tensor | None = None, **options: Any) -> Iterator[torch.Tensor]:
        """Decode ``codes (B, F)`` chunk by chunk: yields ``(B, S_i)`` waveform pieces whose concatenation has
        :meth:`token2wav`'s shape. ``options``: :class:`Token2WavStream`'s (``chunk``, ``past``, ``future``,
        ``steps``, ...)."""
        self.dit.check_codes(codes)
        stream = Token2WavStream(self, conditioning=conditioning, reference_mel=reference_mel, batch=codes.shape[0],
                                 noise=noise, **options)
        for start in range(0, codes.shape[1], stream.chunk // self.config.dit.repeats):
            piece = stream.push(codes[:, start : start + stream.chunk // self.config.dit.repeats])
            if piece.shape[-1]:
                yield piece
        yield stream.finish()

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        c = self.config.dit
        g = torch.Generator().manual_seed(seed)
        batch, frames = len(lengths), max(lengths)
        kwargs = {
            "codes": torch.randint(0, self.codebook_size, (batch, frames), generator=g),
            "lengths": torch.tensor(list(lengths)),
            "conditioning": torch.randn(batch, c.xvector_dim, generator=g),
            "reference_mel": torch.randn(batch, 3 * c.block_size, c.mel_dim, generator=g) - 4,
            "noise": torch.randn(batch, frames, c.repeats * c.mel_dim, generator=g),  # one row per code
            "steps": 2,
        }
        return ContractInputs(kwargs, kwargs["lengths"], {"codes": 1, "noise": 1}, "lengths")


class Token2WavStream:
    """Incremental token2wav: :meth:`push` codes as they come, get the waveform that is final so far;
    :meth:`finish` at the end gives the rest.

    Mel frames are produced ``chunk`` at a time, each by the DiT over the window ``[start - past,
    start + chunk + future)`` (as far as the codes reach) from the utterance's noise, so a chunk is
    ready once the codes of ``future`` frames after it are in. Its audio follows once the vocoder has
    :meth:`BigVGAN.context_frames` mel frames after it.

    Args:
        model: the :class:`Token2Wav`.
        conditioning, reference_mel: the voice (as in :meth:`Token2Wav.token2wav`).
        batch: items decoded in lockstep (every push gives each the same number of codes).
        noise: ``(B, N, mel_dim)`` the utterance's initial sample, ``N`` at least its mel frames; None:
            drawn with ``torch.randn`` as frames are needed.
        chunk, past, future: mel frames per chunk and the DiT window's context, multiples of ``block_size``
            (defaults: the published streaming's 3, 2 and 1 blocks, i.e. 72, 48 and 24 frames).
        vocoder_context: mel frames of context for the vocoder (default: its full receptive field, exact).
        steps, guidance_scale, sway: as in :meth:`Token2Wav.token2wav`.
    """

    def __init__(self, model: Token2Wav, *, conditioning: torch.Tensor, reference_mel: torch.Tensor, batch: int = 1,
                 noise: torch.Tensor | None = None, chunk: int | None = None, past: int | None = None,
                 future: int | None = None, vocoder_context: int | None = None, steps: int = 10,
                 guidance_scale: float = 0.5, sway: float | None = -1.0) -> None:
        c = model.config.dit
        self.model = model
        self.conditioning, self.reference_mel = model.voice(conditioning, reference_mel, batch)
        block = c.block_size
        self.chunk = 3 * block if chunk is None else chunk
        self.past = 2 * block if past is None else past
        self.future = block if future is None else future
        for name in ("chunk", "past", "future"):
            value = getattr(self, name)
            check_positive(value, name, allow_zero=name != "chunk")
            if value % block or block % c.repeats:
                raise OmnikitValueError(f"`{name}` expected a multiple of block_size ({block}, itself a multiple of "
                                        f"repeats {c.repeats}) but got {value}")
        self.vocoder_context = model.vocoder.context_frames() if vocoder_context is None else vocoder_context
        check_positive(self.vocoder_context, "vocoder_context", allow_zero=True)
        if noise is not None:
            check_input(noise, "noise", model, shape=(batch, None, c.mel_dim))
        self.noise, self.drawn = noise, noise is None
        self.options = {"steps": steps, "guidance_scale": guidance_scale, "sway": sway}
        self.batch = batch
        self.codes = torch.zeros(batch, 0, dtype=torch.long, device=self.conditioning.device)
        self.mel = self.conditioning.new_zeros(batch, 0, c.mel_dim)
        self.vocoded = 0  # mel frames whose audio was emitted

    def _noise_until(self, frames: int) -> torch.Tensor:
        if self.noise is None:
            self.noise = self.conditioning.new_zeros(self.batch, 0, self.model.config.dit.mel_dim)
        if self.noise.shape[1] < frames and not self.drawn:
            raise OmnikitValueError(f"`noise` expected at least {frames} mel frames (the codes pushed so far) but "
                                    f"has {self.noise.shape[1]}")
        if self.noise.shape[1] < frames:
            extra = torch.randn(self.batch, frames - self.noise.shape[1], self.noise.shape[2],
                                dtype=self.noise.dtype, device=self.noise.device)
            self.noise = torch.cat([self.noise, extra], dim=1)
        return self.noise[:, :frames].to(self.conditioning.dtype)

    def _decode_chunk(self, total: int) -> None:
        """Mel frames ``[start, start + chunk)`` (cut at ``total``) from the window around them."""
        repeats = self.model.config.dit.repeats
        start = self.mel.shape[1]
        low, high = max(start - self.past, 0), min(start + self.chunk + self.future, total)
        noise = self._noise_until(high)[:, low:high]
        mel = self.model.dit.sample(self.codes[:, low // repeats : high // repeats], self.conditioning,
                                    self.reference_mel, noise, **self.options)
        self.mel = torch.cat([self.mel, mel[:, start - low : start - low + self.chunk]], dim=1)

    def _vocode_until(self, end: int) -> torch.Tensor:
        """The audio of mel frames ``[vocoded, end)``, vocoded with their context."""
        hop, context = self.model.vocoder.hop, self.vocoder_context
        if end <= self.vocoded:
            return self.mel.new_zeros(self.batch, 0)
        low = max(self.vocoded - context, 0)
        wav = self.model.vocode(self.mel[:, low : min(end + context, self.mel.shape[1])])
        start = self.vocoded
        self.vocoded = end
        return wav[:, (start - low) * hop : (end - low) * hop]

    @torch.no_grad()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Append ``codes (B, n)``; returns the newly final waveform ``(B, S)`` (maybe ``S = 0``)."""
        check_tensor(codes, "codes", shape=(self.batch, None), floating=False)
        self.model.dit.check_codes(codes)
        self.codes = torch.cat([self.codes, codes.to(self.codes.device)], dim=1)
        total = self.codes.shape[1] * self.model.config.dit.repeats
        while self.mel.shape[1] + self.chunk + self.future <= total:
            self._decode_chunk(total)
        return self._vocode_until(self.mel.shape[1] - self.vocoder_context)

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """Decode what is left (no more codes come); returns the last waveform ``(B, S)``."""
        total = self.codes.shape[1] * self.model.config.dit.repeats
        while self.mel.shape[1] < total:
            self._decode_chunk(total)
        return self._vocode_until(total)
