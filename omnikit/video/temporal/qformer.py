"""Q-Former (BLIP-2 / Video-LLaMA style): learned queries with self-attention and cross-attention to tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from omnikit.layers.attention import Attention
from omnikit.layers.mlp import GeluMLP
from omnikit.layers.norm import LayerNorm
from omnikit.layers.positions import TimeEmbedding
from omnikit.layers.transformer_config import TransformerConfig
from omnikit.outputs import EncoderOutput
from omnikit.utils.checks import check_positive
from omnikit.utils.config import flat_keywords, nested_field
from omnikit.video.temporal.cross_attention import CrossAttention
from omnikit.video.temporal.resampler import LatentConfig, LatentReader

__all__ = ["QFormer", "QFormerConfig"]


@flat_keywords
@dataclass
class QFormerConfig(LatentConfig):
    """Hyper-parameters of :class:`QFormer`."""

    transformer: TransformerConfig = nested_field(TransformerConfig, depth=2, num_heads=8, mlp_ratio=4.0, norm_eps=1e-6)
    num_queries: int = 32


class QFormerBlock(nn.Module):
    """Queries: self-attention, cross-attention to the tokens, feed-forward (pre-norm, residual)."""

    def __init__(self, dim: int, num_heads: int, context_dim: int, mlp_ratio: float, eps: float, backend: str):
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = (LayerNorm(dim, eps=eps) for _ in range(3))
        self.self_attn = Attention(dim, num_heads, qkv_bias=True, backend=backend)
        self.cross_attn = CrossAttention(dim, num_heads, context_dim=context_dim, bias=True, backend=backend)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        queries = queries + self.self_attn(self.norm_self(queries))
        queries = queries + self.cross_attn(self.norm_cross(queries), tokens, key_padding_mask=key_mask)
        return queries + self.mlp(self.norm_mlp(queries))


class QFormer(LatentReader):
    """``tokens (B, N, context_dim)`` -> ``EncoderOutput((B, num_queries, dim), lengths=num_queries)``.

    Unlike :class:`~omnikit.video.PerceiverResampler` the queries attend to each other in a
    separate self-attention and read the tokens (raw, un-normalised, any width) through
    cross-attention. Import: ``from omnikit.video import QFormer``.
    """

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        check_positive(config.num_queries, "num_queries")
        check_positive(config.depth, "depth")
        self.config = config
        self.context_dim = config.context_dim or config.dim
        self.queries = nn.Parameter(torch.randn(config.num_queries, config.dim) * 0.02)
        self.time_embed = TimeEmbedding(config.time_steps, self.context_dim) if config.time_steps else None
        self.blocks = nn.ModuleList(
            QFormerBlock(config.dim, config.num_heads, self.context_dim, config.mlp_ratio, config.norm_eps,
                         config.backend)
            for _ in range(config.depth)
        )
        self.norm = LayerNorm(config.dim, eps=config.norm_eps)
        self.output_dim = config.dim
        self.gradient_checkpointing = False

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *, times: torch.Tensor | None = None
    ) -> EncoderOutput:
        """``tokens (B, N, context_dim)``; ``lengths (B,)`` valid tokens per item; ``times (B, N)`` or
        ``(N,)`` time step of every token (needs ``config.time_steps`` > 0)."""
        return self.read(self.queries, tokens, lengths, times)
