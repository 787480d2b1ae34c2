"""A bidirectional pre-norm transformer stack (ViT layout) shared by the vision and video encoders."""

from __future__ import annotations

import torch
from torch import nn

from omnikit.layers.decoder import DecoderBlock, run_blocks
from omnikit.layers.norm import build_norm
from omnikit.utils.checks import check_positive

__all__ = ["TransformerStack"]


class TransformerStack(nn.Module):
    """``depth`` non-causal :class:`~omnikit.layers.DecoderBlock` s and a final norm.

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
        super().__init__()
        check_positive(depth, "depth")
        self.dim = dim
        self.blocks = nn.ModuleList(
            DecoderBlock(
                dim, num_heads, mlp=mlp, mlp_hidden=int(dim * mlp_ratio), norm=norm, norm_eps=norm_eps,
                qkv_bias=qkv_bias, qk_norm=qk_norm, use_rope=False, backend=backend, causal=False,
            )
            for _ in range(depth)
        )
        self.norm = build_norm(norm, dim, norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {"rope": rope, "key_padding_mask": key_padding_mask}
        x, _ = run_blocks(self.blocks, x, lambda block: kwargs,
                          checkpointing=self.gradient_checkpointing and self.training, return_aux=False)
        return self.norm(x)
