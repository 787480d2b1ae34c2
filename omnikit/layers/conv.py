"""Causal 1-D convolution that streams: chunked output equals the offline output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.streaming import StreamingModule, StreamingState
from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive, check_tensor

__all__ = ["CausalConv1d", "CausalConvState"]


@dataclass
class CausalConvState(StreamingState):
    """Input samples not yet consumed by a full output frame, ``(B, C_in, L)``."""

    batch_size: int
    pending: torch.Tensor | None = None


class CausalConv1d(StreamingModule[CausalConvState]):
    """``(B, C_in, T) -> (B, C_out, T // stride)``, each output seeing only current and past input.

    Offline, the input is left-padded with ``(kernel_size - 1) * dilation + 1 - stride`` zeros, so
    output frame ``t`` covers input samples up to ``(t + 1) * stride - 1``; trailing samples that
    do not fill a frame are dropped. Streaming keeps those samples and emits each frame as soon
    as its last input arrives, so concatenated chunk outputs equal the offline output.

    Options (Mimi checkpoints): ``pad_mode="replicate"`` pads with copies of the edge samples instead of
    zeros; ``pad_last=True`` makes the offline output ``ceil(T / stride)`` frames long by padding a
    partial last frame on the right (a stream emits that frame only once its samples arrive, so
    chunks of whole frames equal the offline output).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
        pad_last: bool = False,
    ) -> None:
        super().__init__()
        check_choice(pad_mode, "pad_mode", ("constant", "replicate"))
        for value, name in ((kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")):
            check_positive(value, name)
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias
        )
        self.stride = stride
        self.receptive_field = (kernel_size - 1) * dilation + 1
        if stride > self.receptive_field:
            raise OmnikitValueError(f"`stride` ({stride}) must not exceed the receptive field ({self.receptive_field})")
        self.left_pad = self.receptive_field - stride
        self.pad_mode, self.pad_last = pad_mode, pad_last

    def init_streaming_state(self, batch_size: int) -> CausalConvState:
        return CausalConvState(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", shape=("B", self.conv.in_channels, "T"), floating=True)
        state = self.streaming_state
        if state is None:
            right = -(x.shape[-1] % -self.stride) if self.pad_last else 0
            return self.conv(self._pad(x, right))
        state.check_batch(x.shape[0])
        if state.pending is None:
            if x.shape[-1] == 0:
                return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
            state.pending = self._pad(x[..., :1], 0)[..., : self.left_pad]
        buffer = torch.cat((state.pending, x), dim=-1)
        frames = max(0, (buffer.shape[-1] - self.receptive_field) // self.stride + 1)
        state.pending = buffer[..., frames * self.stride :]
        used = (frames - 1) * self.stride + self.receptive_field if frames else 0
        return self.conv(buffer[..., :used]) if frames else x.new_zeros(x.shape[0], self.conv.out_channels, 0)

    def _pad(self, x: torch.Tensor, right: int) -> torch.Tensor:
        """``x (B, C, T)`` with ``left_pad`` samples in front and ``right`` behind, in ``pad_mode``."""
        if self.pad_mode == "constant" or not (self.left_pad or right):
            return F.pad(x, (self.left_pad, right))
        return F.pad(x, (self.left_pad, right), mode="replicate")
