"""Space-time attention over frame tokens: divided (TimeSformer) or joint.

Divided attention alternates, inside each block, attention across time (each spatial position
over the clip's frames) and attention across space (the tokens of one frame): cost
``O(T*N*(T+N))`` instead of joint attention's ``O((T*N)^2)``. Spatial positions are assumed to be
in the tokens already (a ViT adds them); time gets 1-D rotary positions (frame numbers, or
timestamps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnikit.layers.attention import Attention
from omnikit.layers.decoder import DecoderBlock
from omnikit.layers.mlp import GeluMLP
from omnikit.layers.norm import LayerNorm
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import check_choice
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.video.temporal.common import (
    check_frame_tokens,
    frame_mask_or_none,
    frame_positions,
    frame_tokens_contract,
    zero_padding,
)

__all__ = ["DividedSpaceTimeBlock", "SpaceTimeConfig", "SpaceTimeEncoder"]

Rope = tuple[torch.Tensor, torch.Tensor]


@flat_keywords
@dataclass
class SpaceTimeConfig(NestedConfig):
    """Hyper-parameters of :class:`SpaceTimeEncoder`."""

    transformer: TransformerConfig = nested_field(TransformerConfig, mlp_ratio=4.0, norm_eps=1e-6, rope_base=10000.0)
    attention: str = "divided"  # or "joint"
    time_unit: float = 0.04
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "rope_base")


class DividedSpaceTimeBlock(nn.Module):
    """``x (B, T, N, D)``: temporal attention, then spatial attention, then an MLP (all pre-norm)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, eps: float = 1e-6, backend: str = "sdpa"):
        super().__init__()
        self.norm_time, self.norm_space, self.norm_mlp = (LayerNorm(dim, eps=eps) for _ in range(3))
        self.attn_time = Attention(dim, num_heads, qkv_bias=True, backend=backend)
        self.attn_space = Attention(dim, num_heads, qkv_bias=True, backend=backend)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None, rope: Rope) -> torch.Tensor:
        """``frame_mask`` ``(B, T)`` True on valid frames (``None``: all valid); ``rope`` tables
        ``(B or 1, T, head_dim)``."""
        batch, length, num_tokens, dim = x.shape
        per_position = x.transpose(1, 2).reshape(batch * num_tokens, length, dim)
        # one table for every row when positions are shared, else each clip's table per spatial position
        rope_rows = rope if rope[0].shape[0] == 1 else tuple(t.repeat_interleave(num_tokens, dim=0) for t in rope)
        key_mask = None if frame_mask is None else frame_mask.repeat_interleave(num_tokens, dim=0)
        per_position = per_position + self.attn_time(self.norm_time(per_position), rope=rope_rows,
                                                     key_padding_mask=key_mask)
        x = per_position.view(batch, num_tokens, length, dim).transpose(1, 2)
        # padding frames are never attended over space
        frames = x.reshape(batch * length, num_tokens, dim) if frame_mask is None else x[frame_mask]
        frames = frames + self.attn_space(self.norm_space(frames))
        frames = frames + self.mlp(self.norm_mlp(frames))
        if frame_mask is None:
            return frames.view(batch, length, num_tokens, dim)
        out = torch.zeros_like(x)
        out[frame_mask] = frames
        return out


class SpaceTimeEncoder(nn.Module):
    """Frame tokens ``(B, T, N, D)`` -> ``EncoderOutput((B, T*N, D), lengths * N)``.

    ``attention="divided"`` stacks :class:`DividedSpaceTimeBlock` (TimeSformer);
    ``attention="joint"`` lets every token attend to every valid token of the clip.
    """

    def __init__(self, config: SpaceTimeConfig) -> None:
        super().__init__()
        check_choice(config.attention, "attention", ("divided", "joint"))
        self.config = config
        dim = config.dim
        self.rotary = RotaryEmbedding(dim // config.num_heads, config.rope_base)
        if config.attention == "divided":
            self.blocks = nn.ModuleList(
                DividedSpaceTimeBlock(dim, config.num_heads, mlp_ratio=config.mlp_ratio, eps=config.norm_eps,
                                      backend=config.backend)
                for _ in range(config.depth)
            )
        else:
            self.blocks = nn.ModuleList(
                DecoderBlock(dim, config.num_heads, mlp="gelu", mlp_hidden=int(dim * config.mlp_ratio),
                             norm="layernorm", norm_eps=config.norm_eps, qk_norm=False, qkv_bias=True, use_rope=False,
                             backend=config.backend, causal=False)
                for _ in range(config.depth)
            )
        self.norm = LayerNorm(dim, eps=config.norm_eps)
        self.output_dim = dim
        self.gradient_checkpointing = False

    def _run(self, block: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def forward(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *, timestamps: torch.Tensor | None = None
    ) -> EncoderOutput:
        """Args:
        tokens: ``(B, T, N, D)`` frame tokens.
        lengths: ``(B,)`` valid frames per clip.
        timestamps: ``(B, T)`` seconds of each frame for the temporal positions (default frame numbers).
        """
        tokens, lengths = check_frame_tokens(tokens, lengths, self.config.dim, like=self)
        batch, length, num_tokens, dim = tokens.shape
        frame_mask = frame_mask_or_none(lengths, length)
        positions = frame_positions(batch, length, timestamps, self.config.time_unit, tokens.device)
        if self.config.attention == "divided":
            rope = self.rotary(positions)
            x = tokens
            for block in self.blocks:
                x = self._run(block, x, frame_mask, rope)
            x = x.reshape(batch, length * num_tokens, dim)
        else:
            rope = self.rotary(positions.repeat_interleave(num_tokens, dim=1))
            key_mask = None if frame_mask is None else frame_mask.repeat_interleave(num_tokens, dim=1)
            x = tokens.reshape(batch, length * num_tokens, dim)
            for block in self.blocks:
                x = self._run(block, x, rope=rope, key_padding_mask=key_mask)
        return EncoderOutput(zero_padding(self.norm(x), lengths * num_tokens), lengths * num_tokens)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return frame_tokens_contract(lengths, 4, self.config.dim, seed)
