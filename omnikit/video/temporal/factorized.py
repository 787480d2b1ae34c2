"""Factorized encoder (ViViT model 2): a spatial transformer per frame, then a temporal one over frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.stack import TransformerStack
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.video.temporal.common import TimedFrameEncoder, check_frame_tokens, frame_mask_or_none, zero_padding

__all__ = ["FactorizedConfig", "FactorizedEncoder"]


@flat_keywords
@dataclass
class FactorizedConfig(NestedConfig):
    """Hyper-parameters of :class:`FactorizedEncoder`."""

    transformer: TransformerConfig = nested_field(TransformerConfig, mlp_ratio=4.0, norm_eps=1e-6, rope_base=10000.0)
    temporal_depth: int
    time_unit: float = 0.04
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "num_heads", "mlp_ratio", "norm_eps", "rope_base", spatial_depth="depth")


class FactorizedEncoder(TimedFrameEncoder):
    """Frame tokens ``(B, T, N, D)`` -> one token per frame ``EncoderOutput((B, T, D), lengths)``.

    Each valid frame's tokens, with a learned CLS token in front, go through the spatial
    transformer; the frames' CLS outputs then go through the temporal transformer (1-D rotary
    positions over frame numbers or timestamps, padding frames masked).
    """

    def __init__(self, config: FactorizedConfig) -> None:
        super().__init__(config)
        stack = dict(num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, norm_eps=config.norm_eps,
                     backend=config.backend)
        self.cls_token = nn.Parameter(torch.zeros(config.dim))
        nn.init.normal_(self.cls_token, std=0.02)
        self.spatial = TransformerStack(config.dim, config.spatial_depth, **stack)
        self.temporal = TransformerStack(config.dim, config.temporal_depth, **stack)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *, timestamps: torch.Tensor | None = None
    ) -> EncoderOutput:
        """``tokens (B, T, N, D)``, ``lengths (B,)`` valid frames, ``timestamps (B, T)`` seconds (optional)."""
        tokens, lengths = check_frame_tokens(tokens, lengths, self.config.dim, like=self)
        batch, length, _, dim = tokens.shape
        frame_mask = lengths_to_mask(lengths, length)
        frames = tokens[frame_mask]  # (valid frames, N, D)
        cls = self.cls_token.to(frames.dtype).expand(frames.shape[0], 1, dim)
        summary = self.spatial(torch.cat([cls, frames], dim=1))[:, 0]
        per_frame = summary.new_zeros(batch, length, dim)
        per_frame[frame_mask] = summary
        rope = self.frame_rope(batch, length, timestamps, tokens.device)
        out = self.temporal(per_frame, rope=rope, key_padding_mask=frame_mask_or_none(lengths, length))
        return EncoderOutput(zero_padding(out, lengths), lengths)
