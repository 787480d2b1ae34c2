"""A native video ViT: tubelet embedding, 3-D rotary positions, full attention, optional 2x2 merger.

The layout of the Qwen2-VL / Qwen2.5-Omni vision tower (without its window attention): patches
of ``(2, 14, 14)`` pixels, (t, h, w) rotary positions, and a merger giving one token per
``28 x 28`` px per 2 frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.stack import TransformerStack
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.vision.merger import PatchMerger
from omnikit.vision.rotary import AxialRotaryEmbedding, grid_positions
from omnikit.vision.tubelet import TubeletEmbed, checked_frames

__all__ = ["VideoViT", "VideoViTConfig"]


@flat_keywords
@dataclass
class VideoViTConfig(NestedConfig):
    """Hyper-parameters of :class:`VideoViT`."""

    transformer: TransformerConfig = nested_field(TransformerConfig, mlp_ratio=4.0, norm_eps=1e-6, rope_base=10000.0)
    patch: tuple[int, int, int] = (2, 14, 14)
    in_chans: int = 3
    merge_size: int | None = 2
    out_dim: int | None = None
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "rope_base")


class VideoViT(nn.Module):
    """``frames (B, T, C, H, W) -> EncoderOutput((B, T/t * h'*w', out_dim), lengths)``.

    Tokens are ordered time, then rows, then columns; ``h' = H / (p * merge_size)``. Padding
    frames (past ``lengths``) are masked out of attention; an odd last tubelet repeats the last
    valid frame.
    """

    def __init__(self, config: VideoViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = TubeletEmbed(config.dim, tuple(config.patch), config.in_chans)
        self.rotary = AxialRotaryEmbedding(config.dim // config.num_heads, axes=3, base=config.rope_base)
        self.encoder = TransformerStack(
            config.dim, config.depth, config.num_heads, mlp_ratio=config.mlp_ratio, norm_eps=config.norm_eps,
            backend=config.backend,
        )
        out_dim = config.out_dim or config.dim
        self.merger = PatchMerger(config.dim, out_dim, config.merge_size) if config.merge_size else None
        self.proj = nn.Linear(config.dim, out_dim) if self.merger is None and config.out_dim else None
        self.output_dim = out_dim

    def tokens_per_group(self, height: int, width: int) -> int:
        """Output tokens per tubelet step of ``height x width`` frames."""
        _, ph, pw = self.config.patch
        m = self.config.merge_size or 1
        return (height // ph // m) * (width // pw // m)

    def num_output_tokens(self, lengths: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Valid output tokens for clips of ``lengths`` frames of ``height x width``."""
        return self.embed.output_frames(lengths) * self.tokens_per_group(height, width)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        lengths = checked_frames(frames, lengths, self.config.in_chans)
        batch = frames.shape[0]
        x = self.embed(frames, lengths)  # (B, gt, gh, gw, D)
        _, gt, gh, gw, dim = x.shape
        groups = self.embed.output_frames(lengths)
        valid = lengths_to_mask(groups, gt)  # (B, gt)
        key_mask = valid[:, :, None].expand(batch, gt, gh * gw).reshape(batch, -1)
        rope = self.rotary(grid_positions((gt, gh, gw), device=frames.device))
        x = self.encoder(x.reshape(batch, -1, dim), rope=rope, key_padding_mask=key_mask)
        if self.merger is not None:
            x = self.merger(x.view(batch * gt, gh, gw, dim)).view(batch, -1, self.output_dim)
        elif self.proj is not None:
            x = self.proj(x)
        per_group = x.shape[1] // gt
        out_mask = valid[:, :, None].expand(batch, gt, per_group).reshape(batch, -1)
        return EncoderOutput(x.masked_fill(~out_mask[..., None], 0), groups * per_group)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        side = 2 * self.config.patch[1] * (self.config.merge_size or 1)
        frames = torch.randn(len(lengths), max(lengths), self.config.in_chans, side, side, generator=g)
        lens = torch.tensor(list(lengths))
        return ContractInputs({"frames": frames, "lengths": lens}, lens, {"frames": 1}, "lengths")
