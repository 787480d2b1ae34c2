"""BigVGAN vocoder: a log-mel spectrogram -> waveform (Lee et al., 2023), as Qwen2.5-Omni's token2wav uses it.

``conv_pre`` (k7) -> per stage ``i``: a transposed conv (``x upsample_rates[i]``, halving the
width), then the mean of ``len(resblock_kernel_sizes)`` AMP blocks -> an anti-aliased SnakeBeta ->
``conv_post`` (k7, no bias) -> clamp to [-1, 1]. One mel frame gives ``prod(upsample_rates)`` samples.

An AMP block is three residual pairs ``x + conv2(act(conv1(act(x))))`` (``conv1`` dilated by 1, 3,
5 by default), every activation anti-aliased: upsample x2 with a Kaiser-windowed sinc filter,
SnakeBeta, low-pass and downsample x2 (both filters pad by replicating the edge sample).

Input mels are natural-log magnitudes; they are mapped to decibels, clipped at -115 dB, lowered by
20 dB and scaled to [-1, 1] before ``conv_pre`` (:meth:`BigVGAN.normalize`).

A right-padded batch (``lengths``) gives each item what it gives alone: before every convolution the
padding is zeroed (what zero padding shows an item alone) and before every resampling filter it holds
the item's last valid sample (what replicate padding shows it), with tensor operations only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.code2wav import SnakeBeta
from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["AntiAliasedSnake", "BigVGAN", "BigVGANConfig", "kaiser_sinc_filter"]


def _valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, 1, T)`` bool: True on the first ``lengths[b]`` steps of ``x (B, C, T)``."""
    return (torch.arange(x.shape[-1], device=x.device) < lengths[:, None])[:, None]


def zero_padding(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x (B, C, T)`` with the steps past each item's length zeroed (None: ``x``)."""
    return x if lengths is None else x.masked_fill(~_valid(x, lengths), 0)


def hold_last(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x (B, C, T)`` with the steps past each item's length set to its last valid step (None: ``x``)."""
    if lengths is None:
        return x
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, x.shape[1], 1)
    return torch.where(_valid(x, lengths), x, x.gather(2, index))


@dataclass
class BigVGANConfig:
    """Hyper-parameters of :class:`BigVGAN` (transformers' ``Qwen2_5OmniBigVGANConfig`` names; published values)."""

    mel_dim: int = 80
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (5, 3, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (11, 7, 4, 4, 4, 4)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """A low-pass FIR filter ``(kernel_size,)``: a sinc at ``cutoff`` (cycles per sample) under a Kaiser
    window whose beta follows Kaiser's formula for a transition band of ``half_width``; sums to 1."""
    half = kernel_size // 2
    transition = 4 * half_width
    attenuation = 2.285 * (half - 1) * math.pi * transition + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False, dtype=torch.float32)
    taps = torch.arange(-half, half) + 0.5 if kernel_size % 2 == 0 else torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * taps)
    return taps / taps.sum()


class AntiAliasedSnake(nn.Module):
    """SnakeBeta at twice the sample rate: ``down2(snake(up2(x)))``, 12-tap Kaiser-sinc filters.
    ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, kernel_size: int = 12) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.kernel_size = kernel_size
        self.register_buffer("filter", kaiser_sinc_filter(0.25, 0.3, kernel_size), persistent=False)

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T) -> (B, C, 2T)``: zero-stuffing then the low-pass (gain 2), edges replicated."""
        k, channels = self.kernel_size, x.shape[1]
        pad = k // 2 - 1
        x = F.pad(x, (pad, pad), mode="replicate")
        weight = self.filter.to(x.dtype).expand(channels, 1, k)
        y = 2 * F.conv_transpose1d(x, weight, stride=2, groups=channels)
        trim = 2 * pad + (k - 2) // 2
        return y[..., trim : y.shape[-1] - (2 * pad + (k - 1) // 2)]

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 2T) -> (B, C, T)``: the low-pass then every other sample, edges replicated."""
        k, channels = self.kernel_size, x.shape[1]
        x = F.pad(x, (k // 2 - (k % 2 == 0), k // 2), mode="replicate")
        return F.conv1d(x, self.filter.to(x.dtype).expand(channels, 1, k), stride=2, groups=channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: valid steps per item of a right-padded batch (see the module docs)."""
        y = self.act(self.upsample(hold_last(x, lengths)))
        return self.downsample(hold_last(y, None if lengths is None else 2 * lengths))


def _same_conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)


class AMPBlock(nn.Module):
    """Three residual pairs ``x + conv2_j(act(conv1_j(act(x))))``; ``conv1_j`` dilated by ``dilations[j]``.
    ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_same_conv(channels, kernel_size, 1) for _ in dilations)
        self.activations = nn.ModuleList(AntiAliasedSnake(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        for j, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2)):
            h = conv1(zero_padding(self.activations[2 * j](x, lengths), lengths))
            x = x + conv2(zero_padding(self.activations[2 * j + 1](h, lengths), lengths))
        return x


class BigVGAN(nn.Module):
    """``mel (B, mel_dim, T)`` natural-log magnitudes -> waveform ``(B, T * hop)`` in [-1, 1]."""

    def __init__(self, config: BigVGANConfig) -> None:
        super().__init__()
        c = config
        if len(c.upsample_rates) != len(c.upsample_kernel_sizes):
            raise OmnikitValueError(f"`upsample_kernel_sizes` expected {len(c.upsample_rates)} entries (one per "
                                    f"upsample rate) but got {len(c.upsample_kernel_sizes)}")
        if len(c.resblock_kernel_sizes) != len(c.resblock_dilation_sizes):
            raise OmnikitValueError("`resblock_dilation_sizes` expected one entry per resblock kernel size but got "
                                    f"{len(c.resblock_dilation_sizes)} for {len(c.resblock_kernel_sizes)}")
        if c.upsample_initial_channel % 2 ** len(c.upsample_rates):
            raise OmnikitValueError(f"`upsample_initial_channel` ({c.upsample_initial_channel}) must be divisible "
                                    f"by 2**len(upsample_rates) = {2 ** len(c.upsample_rates)}")
        self.config = c
        width = [c.upsample_initial_channel // 2**i for i in range(len(c.upsample_rates) + 1)]
        self.conv_pre = nn.Conv1d(c.mel_dim, width[0], 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(width[i], width[i + 1], k, r, padding=(k - r) // 2)])
            for i, (r, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock(width[i + 1], k, d)
            for i in range(len(c.upsample_rates))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
        )
        self.activation_post = AntiAliasedSnake(width[-1])
        self.conv_post = nn.Conv1d(width[-1], 1, 7, padding=3, bias=False)
        self.hop = math.prod(c.upsample_rates)

    def context_frames(self) -> int:
        """Mel frames on each side that reach an output sample (an upper bound of the receptive field):
        vocoding a chunk with this much context gives the samples of the whole-sequence vocoding."""
        c = self.config
        radius = 3 + 6  # conv_post (k7) and an anti-aliased activation (12-tap filters at 2x), in samples
        for i in reversed(range(len(c.upsample_rates))):
            radius += max(sum(12 + (d + 1) * (k - 1) // 2 for d in dilations)
                          for k, dilations in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes))
            rate, kernel = c.upsample_rates[i], c.upsample_kernel_sizes[i]
            radius = -(-radius // rate) + -(-kernel // rate)
        return radius + 3  # conv_pre (k7)

    @staticmethod
    def normalize(mel: torch.Tensor) -> torch.Tensor:
        """Natural-log magnitudes -> ``dB - 20`` (floored at -115 dB) scaled from [-115, 0] dB to [-1, 1]."""
        floor = torch.exp(torch.tensor(-115 / 20.0 * math.log(10), device=mel.device, dtype=mel.dtype))
        decibels = 20 * torch.log10(torch.clamp(torch.exp(mel), min=floor)) - 20
        return torch.clamp(2 * ((decibels + 115) / 115) - 1, -1, 1)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, mel_dim, T)`` -> ``(B, T * hop)``; ``lengths`` ``(B,)``: valid frames per item of a right-padded
        batch (samples past ``lengths * hop`` are zero)."""
        check_tensor(mel, "mel", shape=("B", self.config.mel_dim, "T"), floating=True)
        x = self.conv_pre(zero_padding(self.normalize(mel), lengths))
        per_stage = len(self.config.resblock_kernel_sizes)
        for i, (up,) in enumerate(self.ups):
            x = up(zero_padding(x, lengths))
            lengths = None if lengths is None else lengths * self.config.upsample_rates[i]
            blocks = self.resblocks[i * per_stage : (i + 1) * per_stage]
            x = sum(block(x, lengths) for block in blocks) / per_stage
        x = self.conv_post(zero_padding(self.activation_post(x, lengths), lengths))
        return zero_padding(x.clamp(-1.0, 1.0), lengths)[:, 0]
