"""ECAPA-TDNN: an utterance-level embedding of a mel spectrogram (Desplanques et al., 2020).

Qwen2.5-Omni's token2wav encodes its reference mel (the voice to imitate) with it. Layout:

1. a time-delay (dilated 1-D conv + ReLU) layer ``n_mels -> channels[0]``;
2. SE-Res2Net blocks ``channels[i-1] -> channels[i]``: a 1x1 TDNN, a Res2Net split of the channels
   into ``res2net_scale`` groups (group ``j`` sees its own input plus the previous group's output
   through a dilated TDNN), a 1x1 TDNN, squeeze-excitation, and a residual connection;
3. multi-layer feature aggregation: the SE-Res2Net outputs concatenated, then a TDNN;
4. attentive statistics pooling: an attention over time (conditioned on the global mean and
   standard deviation) gives a weighted mean and standard deviation per channel;
5. a 1x1 conv to ``out_dim``.

Every conv pads "same" by reflection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["SpeakerEncoder"]


def _conv(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding="same",
                     padding_mode="reflect")


class TDNN(nn.Module):
    """``relu(conv(x))`` with a dilated "same" conv. ``(B, C_in, T) -> (B, C_out, T)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = _conv(in_channels, out_channels, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class Res2Net(nn.Module):
    """Channels split in ``scale`` groups: group 0 passes, group ``j`` is ``tdnn_j(x_j + y_{j-1})``
    (``y_0`` not added to group 1). ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        if channels % scale:
            raise OmnikitValueError(f"`res2net_scale` ({scale}) must divide the channels ({channels})")
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(TDNN(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(x.chunk(self.scale, dim=1))
        out = [parts[0]]
        for j, block in enumerate(self.blocks, start=1):
            out.append(block(parts[j] if j == 1 else parts[j] + out[-1]))
        return torch.cat(out, dim=1)


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(conv2(relu(conv1(mean_t(x)))))``. ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, bottleneck)
        self.conv2 = _conv(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(x.mean(dim=2, keepdim=True)))))
        return x * gate


class SERes2NetBlock(nn.Module):
    """``x + se(tdnn2(res2net(tdnn1(x))))``. ``(B, C, T) -> (B, C, T)``."""

    def __init__(self, in_channels: int, channels: int, *, scale: int, se_channels: int, kernel_size: int,
                 dilation: int) -> None:
        super().__init__()
        if in_channels != channels:
            raise OmnikitValueError(f"SE-Res2Net blocks keep their width: expected {in_channels} channels "
                                    f"in and out but got {channels} out")
        self.tdnn1 = TDNN(in_channels, channels)
        self.res2net_block = Res2Net(channels, scale, kernel_size, dilation)
        self.tdnn2 = TDNN(channels, channels)
        self.se_block = SqueezeExcitation(channels, se_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))))


def _weighted_stats(x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``x (B, C, T)`` over time under ``weights`` (summing to 1)."""
    mean = (weights * x).sum(2)
    std = (weights * (x - mean[..., None]).pow(2)).sum(2).clamp(min=eps).sqrt()
    return mean, std


class AttentiveStatsPool(nn.Module):
    """Attention over time, conditioned on the utterance mean and std: ``(B, C, T) -> (B, 2C)``."""

    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.tdnn = TDNN(3 * channels, attention_channels)
        self.conv = _conv(attention_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        mean, std = _weighted_stats(x, torch.full_like(x[:1, :1], 1.0 / length))
        context = torch.cat([x, mean[..., None].expand_as(x), std[..., None].expand_as(x)], dim=1)
        weights = self.conv(torch.tanh(self.tdnn(context))).softmax(dim=2)
        return torch.cat(_weighted_stats(x, weights), dim=1)


class SpeakerEncoder(nn.Module):
    """ECAPA-TDNN ``mel (B, T, n_mels) -> (B, out_dim)``.

    Args:
        n_mels: input mel bins.
        out_dim: embedding width.
        channels, kernel_sizes, dilations: per layer; the first is the input TDNN, the middle ones
            SE-Res2Net blocks, the last the aggregation TDNN (its width is the sum of the middle ones).
        attention_channels: width of the pooling attention.
        res2net_scale: Res2Net groups.
        se_channels: squeeze-excitation bottleneck.
    """

    def __init__(self, n_mels: int, out_dim: int, *, channels: Sequence[int], kernel_sizes: Sequence[int],
                 dilations: Sequence[int], attention_channels: int, res2net_scale: int, se_channels: int) -> None:
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(dilations) or len(channels) < 3:
            raise OmnikitValueError(
                "`channels`, `kernel_sizes` and `dilations` expected the same length (at least 3) but got "
                f"{len(channels)}, {len(kernel_sizes)}, {len(dilations)}"
            )
        if sum(channels[1:-1]) != channels[-1]:
            raise OmnikitValueError(f"the last of `channels` ({channels[-1]}) expected the sum of the SE-Res2Net "
                                    f"widths ({sum(channels[1:-1])})")
        self.n_mels = n_mels
        #: the shortest input the reflection padding of every conv accepts
        self.min_frames = 1 + max(d * (k - 1) // 2 for k, d in zip(kernel_sizes, dilations))
        self.blocks = nn.ModuleList([TDNN(n_mels, channels[0], kernel_sizes[0], dilations[0])])
        self.blocks.extend(
            SERes2NetBlock(channels[i - 1], channels[i], scale=res2net_scale, se_channels=se_channels,
                           kernel_size=kernel_sizes[i], dilation=dilations[i])
            for i in range(1, len(channels) - 1)
        )
        self.mfa = TDNN(channels[-1], channels[-1], kernel_sizes[-1], dilations[-1])
        self.asp = AttentiveStatsPool(channels[-1], attention_channels)
        self.fc = _conv(2 * channels[-1], out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel (B, T, n_mels)`` -> ``(B, out_dim)``."""
        check_tensor(mel, "reference_mel", shape=("B", "T", self.n_mels), floating=True)
        x = mel.transpose(1, 2)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        x = self.mfa(torch.cat(outputs[1:], dim=1))
        return self.fc(self.asp(x)[..., None])[..., 0]
