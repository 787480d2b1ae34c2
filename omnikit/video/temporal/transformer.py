"""A temporal transformer over frame tokens, with time as its rotary position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from omnikit.layers.stack import TransformerStack
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.video.temporal.common import TimedFrameEncoder, check_frame_tokens, frame_mask_or_none, zero_padding

__all__ = ["TemporalTransformer", "TemporalTransformerConfig"]


@flat_keywords
@dataclass
class TemporalTransformerConfig(NestedConfig):
    """Hyper-parameters of :class:`TemporalTransformer`."""

    transformer: TransformerConfig = nested_field(TransformerConfig, mlp_ratio=4.0, norm_eps=1e-6, rope_base=10000.0)
    time_unit: float = 0.04
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "rope_base")


class TemporalTransformer(TimedFrameEncoder):
    """Contextualise frame tokens over time.

    Takes ``(B, T, D)`` (one token per frame) or ``(B, T, N, D)`` (every token of a frame shares
    its frame's temporal position) and returns ``EncoderOutput((B, T*N, D), lengths * N)``.
    Positions are frame numbers, or ``timestamps / time_unit`` so that clips sampled at uneven
    times keep their real spacing.
    """

    def __init__(self, config: TemporalTransformerConfig) -> None:
        super().__init__(config)
        self.encoder = TransformerStack(config.dim, config.depth, config.num_heads, mlp_ratio=config.mlp_ratio,
                                        norm_eps=config.norm_eps, backend=config.backend)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *, timestamps: torch.Tensor | None = None
    ) -> EncoderOutput:
        tokens, lengths = check_frame_tokens(tokens, lengths, self.config.dim, ndim=(3, 4), like=self)
        if tokens.ndim == 3:
            tokens = tokens.unsqueeze(2)
        batch, length, num_tokens, dim = tokens.shape
        rope = self.frame_rope(batch, length, timestamps, tokens.device, per_frame=num_tokens)
        frame_mask = frame_mask_or_none(lengths, length)
        key_mask = None if frame_mask is None else frame_mask.repeat_interleave(num_tokens, dim=1)
        out = self.encoder(tokens.reshape(batch, -1, dim), rope=rope, key_padding_mask=key_mask)
        return EncoderOutput(zero_padding(out, lengths * num_tokens), lengths * num_tokens)
