"""Causal SEANet encoder and decoder (EnCodec/Mimi layout) that stream exactly.

Encoder ``(B, C, S) -> (B, dim, S // hop)``: a k7 conv, then per ratio ``r`` residual units and a
strided conv (kernel ``2r``, stride ``r``) doubling the channels, then a k7 conv to ``dim``.
Decoder ``(B, dim, F) -> (B, C, F * hop)`` mirrors it with causal transposed convolutions.
Every convolution is causal (:class:`~omnikit.layers.CausalConv1d`, :class:`CausalConvTranspose1d`),
so inside ``with module.streaming(B):`` chunks of any size give the offline output piece by piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers import CausalConv1d
from omnikit.streaming import StreamingModule, StreamingState
from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["CausalConvTranspose1d", "ResidualUnit", "SEANetDecoder", "SEANetEncoder"]


@dataclass
class ConvTransposeState(StreamingState):
    """Overlap-add tail ``(B, C_out, kernel - stride)`` still waiting for later inputs' contributions."""

    batch_size: int
    tail: torch.Tensor | None = None


class CausalConvTranspose1d(StreamingModule[ConvTransposeState]):
    """``(B, C_in, T) -> (B, C_out, T * stride)``; output ``[t*s, (t+1)*s)`` needs only inputs ``<= t``.

    Offline it is ``ConvTranspose1d`` with the last ``kernel - stride`` samples trimmed. Streaming
    keeps those samples (without bias) and adds them to the next chunk's output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        check_positive(stride, "stride")
        if kernel_size < stride:
            raise OmnikitValueError(f"`kernel_size` ({kernel_size}) must be >= `stride` ({stride})")
        self.stride = stride
        self.convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                                         bias=bias)

    def init_streaming_state(self, batch_size: int) -> ConvTransposeState:
        return ConvTransposeState(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", shape=("B", self.convtr.in_channels, "T"), floating=True)
        steps = x.shape[-1] * self.stride
        state = self.streaming_state
        if state is None:
            y = _conv_transpose(x, self.convtr.weight, self.stride, self.convtr.groups)[..., :steps]
            return y if self.convtr.bias is None else y + self.convtr.bias[:, None]
        state.check_batch(x.shape[0])
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.convtr.out_channels, 0)
        y = _conv_transpose(x, self.convtr.weight, self.stride, self.convtr.groups)
        if state.tail is not None:
            y = torch.cat((y[..., : state.tail.shape[-1]] + state.tail, y[..., state.tail.shape[-1] :]), dim=-1)
        state.tail = y[..., steps:]
        out = y[..., :steps]
        return out if self.convtr.bias is None else out + self.convtr.bias[:, None]


#: Inputs of at most this many steps take the matmul + overlap-add path of :func:`_conv_transpose`.
_FOLD_STEPS = 64


def _conv_transpose(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
    """``conv_transpose1d`` without bias, ``(B, C_in, T) -> (B, C_out, (T - 1) * stride + kernel)``. Short
    ungrouped inputs go as one matmul and an overlap-add (``fold``): the CPU kernel of ``conv_transpose1d`` is
    up to 20x slower on the few frames a streaming step holds (138 ms vs 12 ms for Mimi's first decoder layer
    on 2 frames, 134 vs 63 ms on 50); on long inputs (hundreds of steps) it is the faster one."""
    if groups != 1 or x.shape[-1] > _FOLD_STEPS:
        return F.conv_transpose1d(x, weight, None, stride=stride, groups=groups)
    c_in, c_out, kernel = weight.shape
    batch, _, steps = x.shape
    cols = torch.matmul(x.transpose(1, 2), weight.reshape(c_in, c_out * kernel)).transpose(1, 2)
    length = (steps - 1) * stride + kernel
    return F.fold(cols, (1, length), (1, kernel), stride=(1, stride)).view(batch, c_out, length)


class ResidualUnit(nn.Module):
    """``x + conv_k1(elu(conv_k3_dilated(elu(x))))`` with causal convolutions; ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, dilation: int, compress: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // compress)
        self.block = nn.Sequential(
            nn.ELU(), CausalConv1d(channels, hidden, 3, dilation=dilation),
            nn.ELU(), CausalConv1d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _residual_units(channels: int, n_residual: int, compress: int) -> list[nn.Module]:
    return [ResidualUnit(channels, 3**j, compress) for j in range(n_residual)]


class SEANetEncoder(nn.Sequential):
    """Causal SEANet encoder ``(B, channels, S) -> (B, dim, S // prod(ratios))``.

    ``ratios`` are listed decoder-first (as in EnCodec: ``(8, 5, 4, 2)``); the encoder downsamples by
    them in reverse order.
    """

    def __init__(self, channels: int, dim: int, n_filters: int, ratios: Sequence[int], *, n_residual: int = 1,
                 compress: int = 2) -> None:
        width = n_filters
        layers: list[nn.Module] = [CausalConv1d(channels, width, 7)]
        for ratio in reversed(ratios):
            layers += _residual_units(width, n_residual, compress)
            layers += [nn.ELU(), CausalConv1d(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [nn.ELU(), CausalConv1d(width, dim, 7)]
        super().__init__(*layers)


class SEANetDecoder(nn.Sequential):
    """Causal SEANet decoder ``(B, dim, F) -> (B, channels, F * prod(ratios))``."""

    def __init__(self, channels: int, dim: int, n_filters: int, ratios: Sequence[int], *, n_residual: int = 1,
                 compress: int = 2) -> None:
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [CausalConv1d(dim, width, 7)]
        for ratio in ratios:
            layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio)]
            width //= 2
            layers += _residual_units(width, n_residual, compress)
        layers += [nn.ELU(), CausalConv1d(width, channels, 7)]
        super().__init__(*layers)
