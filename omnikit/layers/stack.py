"""A bidirectional pre-norm transformer stack (ViT layout) shared by the vision and video encoders."""

from __future__ import annotations

import torch

from omnikit.layers.decoder import BlockStack, DecoderBlock
from omnikit.layers.norm import build_norm
from omnikit.utils.checks import check_positive

__all__ = ["TransformerStack"]


class TransformerStack(BlockStack):
    """A :class:`~omnikit.layers.decoder.BlockStack` of ``depth`` non-causal
    :class:`~omnikit.layers.DecoderBlock` s and a final norm.

    ``forward(x: (B, N, dim), rope=None, key_padding_mask=None) -> (B, N, dim)``; rotary tables
    are computed once by the caller (1-D time, 2-D or 3-D grid). Set ``gradient_checkpointing``
    to recompute blocks in backward.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        mlp: str = "gelu",
        mlp_ratio: float = 4.0,
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        backend: str = "sdpa",
    ) -> None:
        check_positive(depth, "depth")
        super().__init__((
            DecoderBlock(
                dim, num_heads, mlp=mlp, mlp_hidden=int(dim * mlp_ratio), norm=norm, norm_eps=norm_eps,
                qkv_bias=qkv_bias, qk_norm=qk_norm, use_rope=False, backend=backend, causal=False,
            )
            for _ in range(depth)
        ), build_norm(norm, dim, norm_eps))
        self.dim = dim

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.run(x, {"rope": rope, "key_padding_mask": key_padding_mask})
