"""Temporal pooling: average (or max) every ``stride`` frames, optionally projected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from omnikit.layers.masks import lengths_to_mask, masked_mean
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import check_choice, check_positive
from omnikit.video.temporal.common import check_frame_tokens, frame_tokens_contract, zero_padding

__all__ = ["TemporalPooling", "TemporalPoolingConfig"]


@dataclass
class TemporalPoolingConfig:
    """Hyper-parameters of :class:`TemporalPooling`."""

    dim: int
    stride: int = 2
    mode: str = "mean"
    out_dim: int | None = None


class TemporalPooling(nn.Module):
    """Frame tokens ``(B, T, N, D)`` -> ``EncoderOutput((B, ceil(T/s)*N, D'), ceil(lengths/s)*N)``.

    Each window of ``stride`` frames is pooled position by position over its *valid* frames only
    (a clip's last window may be partial), then optionally projected to ``out_dim`` (an
    LLaVA-style projector).
    """

    def __init__(self, config: TemporalPoolingConfig) -> None:
        super().__init__()
        check_positive(config.stride, "stride")
        check_choice(config.mode, "mode", ("mean", "max"))
        self.config = config
        self.proj = nn.Linear(config.dim, config.out_dim) if config.out_dim else None
        self.output_dim = config.out_dim or config.dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        tokens, lengths = check_frame_tokens(tokens, lengths, self.config.dim, like=self)
        batch, length, num_tokens, dim = tokens.shape
        stride = self.config.stride
        windows = -(-length // stride)
        valid = lengths_to_mask(lengths, windows * stride).view(batch, windows, stride, 1, 1)
        padded = torch.nn.functional.pad(tokens, (0, 0, 0, 0, 0, windows * stride - length))
        grouped = padded.view(batch, windows, stride, num_tokens, dim)
        if self.config.mode == "mean":
            pooled = masked_mean(grouped, valid, dim=2)
        else:
            pooled = grouped.masked_fill(~valid, float("-inf")).amax(2)
            pooled = pooled.masked_fill(~valid.any(2), 0.0)
        out = pooled.reshape(batch, windows * num_tokens, dim)
        if self.proj is not None:
            out = self.proj(out)
        out_lengths = -(-lengths // stride) * num_tokens
        return EncoderOutput(zero_padding(out, out_lengths), out_lengths)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return frame_tokens_contract(lengths, 4, self.config.dim, seed)
