"""DAC (Descript Audio Codec) as an omnikit codec tokenizer, in the published layout.

    wav (B, 1, S) -> conv k7 -> per ratio: 3 residual units (dilations 1, 3, 9), Snake, strided conv
                  -> Snake, conv k3                                          = latents (B, D, S / hop)
                  -> residual VQ: per codebook, a k1 projection to ``codebook_dim``, the nearest code by
                     cosine similarity (codes and input L2-normalised), a k1 projection back
    codes -> sum of projected code vectors -> conv k7 -> per ratio: Snake, transposed conv,
             3 residual units -> Snake, conv k7 -> tanh                      = wav (B, 1, ~F * hop)

Every convolution is centred ("same" padding), so the codec is not causal and does not stream.
Activations are the plain :class:`~omnikit.audio.snake.Snake`. The published Hub checkpoints store
the convolutions with their weight norm folded in (plain ``weight``); module names follow them, so
:func:`omnikit.convert.load_hf` maps every tensor by name.

Padding: ``encode`` pads the clip with zeros to a whole number of frames (as DAC's feature
extractor does). With ``lengths``, ``forward`` zeroes every layer's output past each item's valid
length at that layer's rate, so a padded batch equals its items coded alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import feature_contract_inputs
from omnikit.audio.signal import check_sample_rate, check_waveform
from omnikit.audio.snake import Snake
from omnikit.layers.masks import lengths_to_mask
from omnikit.outputs import traceable_output
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["DacCodec", "DacConfig", "DacOutput"]


@dataclass
class DacConfig:
    """Hyper-parameters of :class:`DacCodec` (transformers' ``DacConfig`` names in brackets).

    Defaults: the published ``descript/dac_44khz``.

    Attributes:
        sample_rate: (sampling_rate).
        encoder_dim: width of the first encoder conv, doubled by every downsampling (encoder_hidden_size).
        ratios: downsampling ratios, encoder order; the decoder upsamples in reverse (downsampling_ratios).
        decoder_dim: width of the first decoder conv, halved by every upsampling (decoder_hidden_size).
        num_codebooks, codebook_size, codebook_dim: the residual VQ (n_codebooks, codebook_size, codebook_dim).
    """

    sample_rate: int = 44100
    encoder_dim: int = 64
    ratios: tuple[int, ...] = (2, 4, 8, 8)
    decoder_dim: int = 1536
    num_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8

    @property
    def latent_dim(self) -> int:
        """Width of the latents the quantizer codes (``encoder_dim * 2 ** len(ratios)``)."""
        return self.encoder_dim * 2 ** len(self.ratios)


@traceable_output
@dataclass
class DacOutput:
    """What :meth:`DacCodec.forward` returns.

    Attributes:
        hidden_states: ``(B, S', 1)`` the reconstruction, samples along dim 1 (zero past ``lengths``).
        lengths: ``(B,)`` valid samples per item.
        audio: ``(B, 1, S')`` the same reconstruction in the codec layout.
        codes: ``(B, K, F)`` int64.
        loss: the quantizer's commitment + codebook loss (DAC's weights 0.25 and 1), over valid frames.
    """

    hidden_states: torch.Tensor
    lengths: torch.Tensor
    audio: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor


def _masked(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x (B, C, T)`` zeroed past ``lengths`` (unchanged when ``lengths`` is None)."""
    return x if lengths is None else x.masked_fill(~lengths_to_mask(lengths, x.shape[-1])[:, None, :], 0)


def _mse(x: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of ``(B, C, F)`` tensors over the ``valid (B, 1, F)`` frames (all when None)."""
    if valid is None:
        return F.mse_loss(x, target)
    error = (x - target).square().masked_fill(~valid, 0)
    return error.sum() / (valid.sum() * x.shape[1]).clamp(min=1)


def _conv_lengths(conv: nn.Conv1d | nn.ConvTranspose1d, lengths: torch.Tensor | None) -> torch.Tensor | None:
    """Valid output steps of ``conv`` for ``lengths`` valid input steps (zero beyond them)."""
    if lengths is None:
        return None
    (k,), (s,), (p,) = conv.kernel_size, conv.stride, conv.padding
    if isinstance(conv, nn.ConvTranspose1d):
        return (lengths - 1) * s - 2 * p + k
    return torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1


class DacResidualUnit(nn.Module):
    """``x + conv_k1(snake(conv_k7_dilated(snake(x))))``, length kept; ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = Snake(channels, broadcast=True)
        self.conv1 = nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(channels, broadcast=True)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return _masked(x + self.conv2(self.snake2(self.conv1(self.snake1(x)))), lengths)


def _residual_units(channels: int) -> tuple[DacResidualUnit, DacResidualUnit, DacResidualUnit]:
    return DacResidualUnit(channels, 1), DacResidualUnit(channels, 3), DacResidualUnit(channels, 9)


class DacEncoderBlock(nn.Module):
    """Residual units at ``channels``, Snake, then a conv of kernel ``2 * stride`` to ``2 * channels``."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.res_unit1, self.res_unit2, self.res_unit3 = _residual_units(channels)
        self.snake1 = Snake(channels, broadcast=True)
        self.conv1 = nn.Conv1d(channels, 2 * channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        for unit in (self.res_unit1, self.res_unit2, self.res_unit3):
            x = unit(x, lengths)
        lengths = _conv_lengths(self.conv1, lengths)
        return _masked(self.conv1(self.snake1(x)), lengths), lengths


class DacDecoderBlock(nn.Module):
    """Snake, a transposed conv of kernel ``2 * stride`` to ``out_channels``, then residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake(in_channels, broadcast=True)
        self.conv_t1 = nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                                          padding=math.ceil(stride / 2))
        self.res_unit1, self.res_unit2, self.res_unit3 = _residual_units(out_channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        lengths = _conv_lengths(self.conv_t1, lengths)
        x = _masked(self.conv_t1(self.snake1(x)), lengths)
        for unit in (self.res_unit1, self.res_unit2, self.res_unit3):
            x = unit(x, lengths)
        return x, lengths


class DacEncoder(nn.Module):
    """``(B, 1, S) -> (B, latent_dim, S / hop)`` (and the valid frames when ``lengths`` are given)."""

    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        width = config.encoder_dim
        self.conv1 = nn.Conv1d(1, width, 7, padding=3)
        self.block = nn.ModuleList(DacEncoderBlock(width * 2**i, r) for i, r in enumerate(config.ratios))
        self.snake1 = Snake(config.latent_dim, broadcast=True)
        self.conv2 = nn.Conv1d(config.latent_dim, config.latent_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = _masked(self.conv1(x), lengths)
        for block in self.block:
            h, lengths = block(h, lengths)
        return _masked(self.conv2(self.snake1(h)), lengths), lengths


class DacDecoder(nn.Module):
    """``(B, latent_dim, F) -> (B, 1, S')`` in [-1, 1]; ``S' = F * hop`` when every ratio is even."""

    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        width = config.decoder_dim
        self.conv1 = nn.Conv1d(config.latent_dim, width, 7, padding=3)
        self.block = nn.ModuleList(
            DacDecoderBlock(width // 2**i, width // 2 ** (i + 1), r) for i, r in enumerate(reversed(config.ratios))
        )
        out = width // 2 ** len(config.ratios)
        self.snake1 = Snake(out, broadcast=True)
        self.conv2 = nn.Conv1d(out, 1, 7, padding=3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = _masked(self.conv1(_masked(x, lengths)), lengths)
        for block in self.block:
            h, lengths = block(h, lengths)
        return _masked(torch.tanh(self.conv2(self.snake1(h))), lengths), lengths


class DacQuantizer(nn.Module):
    """One factorised codebook: ``in_proj`` (k1 conv to ``codebook_dim``), ``codebook`` (an embedding),
    ``out_proj`` (k1 conv back). The nearest code maximises the cosine similarity."""

    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        self.in_proj = nn.Conv1d(config.latent_dim, config.codebook_dim, 1)
        self.out_proj = nn.Conv1d(config.codebook_dim, config.latent_dim, 1)
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim)

    def nearest(self, projected: torch.Tensor) -> torch.Tensor:
        """``projected (B, codebook_dim, F) -> codes (B, F)``: argmax over codes of ``-|e|^2 + 2 e.c + |c|^2``
        with ``e``, ``c`` L2-normalised (the published arithmetic, so codes match bit for bit)."""
        batch, dim, frames = projected.shape
        e = F.normalize(projected.transpose(1, 2).reshape(batch * frames, dim))
        c = F.normalize(self.codebook.weight)
        score = -(e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t()) + c.pow(2).sum(1, keepdim=True).t()
        return score.argmax(1).reshape(batch, frames)

    def forward(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``residual (B, latent_dim, F)`` -> quantized ``(B, latent_dim, F)``, codes ``(B, F)``, and the
        projected latents and their code vectors ``(B, codebook_dim, F)`` (for the losses).

        The quantized value is the published straight-through form ``p + (q - p)``; gradients reach the
        encoder through ``p`` and the codebook through ``q``."""
        projected = self.in_proj(residual)
        codes = self.nearest(projected)
        vectors = self.codebook(codes).transpose(1, 2)
        straight = projected + (vectors - projected).detach() + (vectors - vectors.detach())
        return self.out_proj(straight), codes, projected, vectors


class DacResidualVQ(nn.Module):
    """``num_codebooks`` :class:`DacQuantizer` s, each coding what the previous ones left."""

    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(DacQuantizer(config) for _ in range(config.num_codebooks))

    def forward(
        self, latents: torch.Tensor, frames: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``latents (B, latent_dim, F)`` -> quantized latents, codes ``(B, K, F)``, and the loss
        ``0.25 * commitment + codebook`` (mean squared errors over the ``frames`` valid ones)."""
        quantized, residual = torch.zeros_like(latents), latents
        codes, loss = [], latents.new_zeros(())
        valid = None if frames is None else lengths_to_mask(frames, latents.shape[-1])[:, None, :]
        for quantizer in self.quantizers:
            q, index, projected, vectors = quantizer(residual)
            quantized, residual = quantized + q, residual - q
            codes.append(index)
            loss = loss + 0.25 * _mse(projected, vectors.detach(), valid) + _mse(vectors, projected.detach(), valid)
        return quantized, torch.stack(codes, dim=1), loss

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K, F)`` with ``K <= num_codebooks`` -> latents ``(B, latent_dim, F)``."""
        out = 0.0
        for i in range(codes.shape[1]):
            quantizer = self.quantizers[i]
            out = out + quantizer.out_proj(quantizer.codebook(codes[:, i]).transpose(1, 2))
        return out


class DacCodec(nn.Module):
    """Codec interface: ``encode(wav (B, 1, S)) -> codes (B, K, ceil(S / hop))`` int64,
    ``decode(codes) -> wav (B, 1, S')``; ``forward(wav, lengths)`` is the training pass (a :class:`DacOutput`).

    Weights: ``encoder``, ``quantizer.quantizers.{k}``, ``decoder`` with transformers' ``DacModel`` names.
    """

    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        if config.codebook_size & (config.codebook_size - 1):
            raise OmnikitValueError(f"`codebook_size` expected a power of 2 but got {config.codebook_size}")
        self.config = config
        self.encoder = DacEncoder(config)
        self.quantizer = DacResidualVQ(config)
        self.decoder = DacDecoder(config)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop(self) -> int:
        """Samples per frame (``prod(ratios)``: 512 for the 44.1 kHz model)."""
        return math.prod(self.config.ratios)

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.hop

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def _frames(self, wav: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav`` checked and zero-padded to whole frames, and the valid samples rounded up to whole frames."""
        x, n = check_waveform(wav, lengths, channels=1)
        x = F.pad(x, (0, -x.shape[-1] % self.hop))
        return x.to(self.encoder.conv1.weight.dtype), -(-n // self.hop) * self.hop

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, *, sample_rate: int | None = None) -> torch.Tensor:
        """``wav (B, 1, S)`` -> ``codes (B, num_codebooks, ceil(S / hop))`` int64; a given ``sample_rate``
        must be the codec's."""
        check_sample_rate(sample_rate, self.sample_rate)
        x, _ = self._frames(wav, None)
        return self.quantizer(self.encoder(x)[0])[1]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, K, F)`` with ``1 <= K <= num_codebooks`` -> ``wav (B, 1, S')``."""
        check_tensor(codes, "codes", ndim=3, floating=False)
        if codes.shape[-1] == 0:
            raise OmnikitValueError(f"`codes` expected at least one frame but got shape {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise OmnikitValueError(
                f"`codes` expected between 1 and {self.num_codebooks} codebooks but got {codes.shape[1]}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise OmnikitValueError(f"`codes` expected values in [0, {self.codebook_size})")
        return self.decoder(self.quantizer.decode(codes))[0]

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> DacOutput:
        """Training pass: ``wav (B, 1, S)``, ``lengths (B,)`` valid samples -> :class:`DacOutput`, the
        reconstruction trimmed to ``S`` samples (gradients pass the quantizers straight through)."""
        x, n = self._frames(wav, lengths)
        masked = None if lengths is None else n
        latents, frames = self.encoder(x, masked)
        quantized, codes, loss = self.quantizer(latents, frames)
        audio, samples = self.decoder(quantized, frames)
        audio = audio[..., : wav.shape[-1]]
        valid = torch.full_like(n, audio.shape[-1]) if samples is None else samples.clamp(max=audio.shape[-1])
        if lengths is not None:
            valid = torch.minimum(valid, lengths.to(valid.device))
            audio = _masked(audio, valid)
        return DacOutput(audio.transpose(1, 2), valid, audio, codes, loss)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Waveforms of ``lengths[b]`` whole frames (``lengths[b] * hop`` samples)."""
        return feature_contract_inputs(1, [n * self.hop for n in lengths], seed, name="wav", scale=0.1)
