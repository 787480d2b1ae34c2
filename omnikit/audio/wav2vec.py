"""wav2vec 2.0-style raw-waveform conv feature encoder (+ feature projection).

``forward(features (B, 1, S) waveform, lengths=None) -> EncoderOutput((B, T', dim), lengths')``.
Seven unpadded convolutions (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2: 20 ms hop, 25 ms
receptive field at 16 kHz), each followed by GELU, then LayerNorm + Linear to ``dim``. Per layer
``L -> (L - k) // s + 1``, so a frame only sees samples inside the clip.

Two normalisation layouts, as in wav2vec 2.0:

- ``norm="group"`` (base): a per-channel GroupNorm over time after the first conv. Its statistics
  are taken over each item's valid frames only, so padding never changes the output.
- ``norm="layer"`` (large-lv60): a LayerNorm over channels after every conv. Every frame then
  depends only on its own receptive field, the encoder is causal, and it streams:
  ``with enc.streaming(B): enc(chunk)`` emits each frame as soon as its last sample arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import check_features, feature_contract_inputs, zero_padding
from omnikit.layers import LayerNorm, lengths_to_mask
from omnikit.layers.norm import GroupNorm
from omnikit.outputs import EncoderOutput
from omnikit.streaming import StreamingContainer, StreamingModule, StreamingState, is_streaming
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_choice

__all__ = ["ConvFeatureEncoder", "ConvFeatureEncoderConfig", "ValidConv1d"]


@dataclass
class ValidConvState(StreamingState):
    """Input samples not yet consumed by a complete output frame, ``(B, C_in, L)``."""

    batch_size: int
    pending: torch.Tensor | None = None


class ValidConv1d(StreamingModule[ValidConvState]):
    """Unpadded ``Conv1d``: ``(B, C_in, L) -> (B, C_out, (L - k) // s + 1)``; streams exactly."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)

    def init_streaming_state(self, batch_size: int) -> ValidConvState:
        return ValidConvState(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.streaming_state
        if state is None:
            return self.conv(x)
        state.check_batch(x.shape[0])
        if state.pending is not None:
            x = torch.cat((state.pending, x), dim=-1)
        (kernel,), (stride,) = self.conv.kernel_size, self.conv.stride
        frames = max(0, (x.shape[-1] - kernel) // stride + 1)
        state.pending = x[..., frames * stride :]
        if not frames:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        return self.conv(x[..., : (frames - 1) * stride + kernel])


@dataclass
class ConvFeatureEncoderConfig:
    """Hyper-parameters of :class:`ConvFeatureEncoder` (defaults: wav2vec 2.0 base)."""

    in_channels: int = 1
    channels: tuple[int, ...] = (512,) * 7
    kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    norm: str = "group"
    dim: int = 768
    norm_eps: float = 1e-5


class ConvFeatureEncoder(StreamingContainer, nn.Module):
    """Raw waveform -> frame features. Weights: ``convs.i.conv``, ``norms.i``, ``proj_norm``, ``proj``."""

    def __init__(self, config: ConvFeatureEncoderConfig) -> None:
        super().__init__()
        check_choice(config.norm, "norm", ("group", "layer"))
        if not len(config.channels) == len(config.kernels) == len(config.strides) > 0:
            raise OmnikitValueError(
                f"`channels`, `kernels` and `strides` expected the same non-zero length but got "
                f"{len(config.channels)}, {len(config.kernels)}, {len(config.strides)}"
            )
        self.config = config
        ins = (config.in_channels, *config.channels[:-1])
        self.convs = nn.ModuleList(
            ValidConv1d(i, o, k, s, config.conv_bias)
            for i, o, k, s in zip(ins, config.channels, config.kernels, config.strides)
        )
        if config.norm == "layer":
            self.norms = nn.ModuleList(LayerNorm(c, eps=config.norm_eps) for c in config.channels)
        else:
            self.norms = nn.ModuleList([GroupNorm(config.channels[0], config.channels[0], eps=config.norm_eps)])
        self.proj_norm = LayerNorm(config.channels[-1], eps=config.norm_eps)
        self.proj = nn.Linear(config.channels[-1], config.dim)

    @property
    def output_dim(self) -> int:
        return self.config.dim

    @property
    def supports_streaming(self) -> bool:
        return self.config.norm == "layer"

    @property
    def hop(self) -> int:
        """Input samples per output frame (320 = 20 ms at 16 kHz)."""
        out = 1
        for s in self.config.strides:
            out *= s
        return out

    stream_chunk = hop

    @property
    def receptive_field(self) -> int:
        """Input samples seen by one output frame (400 = 25 ms at 16 kHz)."""
        field, jump = 1, 1
        for k, s in zip(self.config.kernels, self.config.strides):
            field, jump = field + (k - 1) * jump, jump * s
        return field

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per item; 0 for an item shorter than the receptive field."""
        return self.output_lengths_after(torch.as_tensor(lengths), len(self.config.kernels))

    def output_lengths_after(self, lengths: torch.Tensor, layers: int) -> torch.Tensor:
        """Valid frames after the first ``layers`` convolutions."""
        for k, s in zip(self.config.kernels[:layers], self.config.strides[:layers]):
            lengths = ((lengths - k) // s + 1).clamp(min=0)
        return lengths

    def _masked_group_norm(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-item, per-channel normalisation over the valid frames of ``h (B, C, T)``."""
        norm = self.norms[0]
        if not torch.compiler.is_compiling() and bool((lengths == h.shape[-1]).all()):
            return norm(h)  # eager fast path; traced code always masks
        dtype, valid = h.dtype, lengths_to_mask(lengths, h.shape[-1])[:, None, :]
        h = h.float().masked_fill(~valid, 0)  # NaN/inf in padded frames must not reach the statistics
        count = lengths.clamp(min=1)[:, None, None].to(h.dtype)
        mean = h.sum(-1, keepdim=True) / count
        var = (h - mean).square().masked_fill(~valid, 0).sum(-1, keepdim=True) / count
        h = (h - mean) * torch.rsqrt(var + norm.eps)
        return (h * norm.weight[:, None] + norm.bias[:, None]).to(dtype)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """``features (B, in_channels, S)`` waveform, ``lengths (B,)`` valid samples -> ``(B, T', dim)``."""
        streaming = is_streaming(self)
        if streaming and lengths is not None:
            raise OmnikitValueError("`lengths` cannot be given while streaming: every chunk is fully valid")
        if streaming and self.config.norm != "layer":
            raise OmnikitValueError("norm='group' normalises over the whole clip and cannot stream; use norm='layer'")
        x, n = check_features(features, lengths, self.config.in_channels, like=self)
        if not streaming and not torch.compiler.is_compiling() and int(
            self.output_lengths(torch.tensor([x.shape[-1]]))[0]
        ) < 1:
            raise OmnikitValueError(
                f"`features` expected enough samples for one output frame but got shape {tuple(x.shape)}"
            )
        h = x if lengths is None else zero_padding(x, n)  # NaN/inf in the padding must not enter the convs
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if self.config.norm == "layer":
                h = self.norms[i](h.transpose(1, 2)).transpose(1, 2)
            elif i == 0:
                h = self._masked_group_norm(h, self.output_lengths_after(n, 1))
            h = F.gelu(h)
        out_lengths = torch.full_like(n, h.shape[-1]) if streaming else self.output_lengths(n)
        h = self.proj(self.proj_norm(h.transpose(1, 2)))
        return EncoderOutput(h * lengths_to_mask(out_lengths, h.shape[1])[..., None].to(h.dtype), out_lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return feature_contract_inputs(self.config.in_channels, lengths, seed)
