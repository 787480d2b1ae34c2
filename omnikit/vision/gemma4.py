"""Gemma 4's vision tower: patches of any aspect ratio -> pooled soft tokens.

::

    patches (B, N, 3 p^2) in [0, 1], (x, y) patch positions (B, N, 2), (-1, -1) on padding
      -> Linear(2 * patches - 1) + x_table[x] + y_table[y]           (factorised position table)
      -> depth x sandwich-normed blocks (q/k/v norms, 2-D rotary, gated tanh-GELU MLP)
      -> k x k average pooling by patch position, * sqrt(dim)  [-> standardize] [-> embedder]

The 2-D rotary rotates the first half of each head by the x position and the second half by the
y position (:func:`omnikit.layers.apply_rotary` with ``parts=2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from omnikit.audio.gemma4 import MultimodalEmbedder
from omnikit.layers.attention import Attention
from omnikit.layers.decoder import run_blocks
from omnikit.layers.mlp import SwiGLU
from omnikit.layers.norm import RMSNorm
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_finite, check_positive, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.config_checks import Range
from omnikit.utils.parallel import ParallelPlan

__all__ = ["Gemma4VisionConfig", "Gemma4VisionEncoder", "SandwichBlock"]


@flat_keywords
@dataclass
class Gemma4VisionConfig(NestedConfig):
    """Hyper-parameters of :class:`Gemma4VisionEncoder`.

    Attributes:
        transformer: ``dim``, ``depth``, ``num_heads``, ``num_kv_heads``, ``head_dim``, ``mlp_hidden``,
            ``rope_base`` (of the 2-D rotary) and ``norm_eps``, also read and given as flat keywords.
        patch_size: patches are ``patch_size x patch_size`` RGB pixels, flattened.
        position_table: entries of each axis of the position table.
        pool: soft tokens are ``pool x pool`` patches averaged.
        standardize: soft tokens are ``(x - std_bias) * std_scale`` (buffers) after pooling.
        text_dim: width of the embedder into the language model (0: none).
    """

    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=768, depth=16, num_heads=12, num_kv_heads=12, head_dim=64, mlp_hidden=3072,
        rope_base=100.0, norm_eps=1e-6)
    patch_size: int = 16
    position_table: int = 10240
    pool: int = 3
    standardize: bool = False
    text_dim: int = field(default=0, metadata={"range": Range(0)})

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_hidden", "rope_base", "norm_eps")


class SandwichBlock(nn.Module):
    """``h = x + post_attn_norm(attn(norm1(x)))``; ``y = h + post_mlp_norm(mlp(norm2(h)))``: Gemma's
    block with norms before and after both branches. ``(B, T, dim) -> (B, T, dim)``."""

    def __init__(self, attn: nn.Module, mlp: nn.Module, dim: int, eps: float) -> None:
        super().__init__()
        self.attn, self.mlp = attn, mlp
        self.norm1, self.post_attn_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.norm2, self.post_mlp_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, **attn_kwargs: object) -> torch.Tensor:
        h = x + self.post_attn_norm(self.attn(self.norm1(x), **attn_kwargs))
        return h + self.post_mlp_norm(self.mlp(self.norm2(h)))


class Gemma4VisionEncoder(nn.Module):
    """``pixel_values (B, N, 3 p^2)``, ``positions (B, N, 2)`` -> :class:`EncoderOutput` of ``N / pool^2``
    soft tokens per item (the valid ones first, padding zeroed).

    Weights: ``patch_proj``, ``position_table (2, position_table, dim)``, ``blocks.{i}``
    (:class:`SandwichBlock`), ``std_bias`` / ``std_scale`` (with ``standardize``), ``embed``.
    Set ``gradient_checkpointing = True`` to recompute the blocks in backward.
    """

    def __init__(self, config: Gemma4VisionConfig) -> None:
        super().__init__()
        for name in ("dim", "depth", "num_heads", "head_dim", "mlp_hidden", "patch_size", "position_table", "pool"):
            check_positive(getattr(config, name), name)
        if config.head_dim % 4:
            raise OmnikitValueError(f"`head_dim` expected a multiple of 4 (2-D rotary) but got {config.head_dim}")
        self.config = config
        dim, eps = config.dim, config.norm_eps
        self.patch_proj = nn.Linear(3 * config.patch_size**2, dim, bias=False)
        self.position_table = nn.Parameter(torch.zeros(2, config.position_table, dim))
        self.blocks = nn.ModuleList(
            SandwichBlock(
                Attention(dim, config.num_heads, config.num_kv_heads, config.head_dim, qk_norm=True, norm_eps=eps,
                          scale=1.0, v_norm=True, rotary_parts=2),
                SwiGLU(dim, config.mlp_hidden, activation="gelu_tanh"), dim, eps,
            )
            for _ in range(config.depth)
        )
        half = config.head_dim // 2
        inv_freq = 1.0 / config.rope_base ** (torch.arange(0, half, 2, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if config.standardize:
            self.register_buffer("std_bias", torch.zeros(dim))
            self.register_buffer("std_scale", torch.ones(dim))
        self.embed = MultimodalEmbedder(dim, config.text_dim, eps) if config.text_dim else None
        self.gradient_checkpointing = False

    @property
    def output_dim(self) -> int:
        return self.config.text_dim or self.config.dim

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` ``(B, N, head_dim)``: x angles on the first half of the head, y on the second."""
        angles = positions.float()[..., None] * self.inv_freq  # (B, N, 2, head_dim / 4)
        angles = torch.cat((angles[:, :, 0], angles[:, :, 0], angles[:, :, 1], angles[:, :, 1]), dim=-1)
        return angles.cos(), angles.sin()

    def parallel_plan(self) -> ParallelPlan:
        """Every block is an FSDP unit."""
        return ParallelPlan(fsdp_units=list(self.blocks))

    def forward(self, pixel_values: torch.Tensor, positions: torch.Tensor) -> EncoderOutput:
        p2 = 3 * self.config.patch_size**2
        check_tensor(pixel_values, "pixel_values", shape=("B", "N", p2), floating=True)
        check_finite(pixel_values, "pixel_values")
        check_tensor(positions, "positions", shape=(pixel_values.shape[0], pixel_values.shape[1], 2), floating=False)
        tokens = pixel_values.shape[1] // self.config.pool**2
        if tokens * self.config.pool**2 != pixel_values.shape[1]:
            raise OmnikitValueError(f"`pixel_values` expected a multiple of pool^2 = {self.config.pool ** 2} "
                                    f"patches but got {pixel_values.shape[1]}")
        padding = (positions == -1).all(dim=-1)
        where = positions.clamp(min=0)
        table = self.position_table[0][where[..., 0]] + self.position_table[1][where[..., 1]]
        h = self.patch_proj((2 * pixel_values - 1).to(self.patch_proj.weight.dtype))
        h = h + table.masked_fill(padding[..., None], 0)
        rope = self.rope(positions)
        kwargs = {"rope": rope, "key_padding_mask": ~padding}
        h, _ = run_blocks(self.blocks, h, lambda block: kwargs,
                          checkpointing=self.gradient_checkpointing and self.training, return_aux=False)
        pooled, valid = self._pool(h.masked_fill(padding[..., None], 0), where, tokens)
        pooled = pooled.float() * self.config.dim**0.5
        if self.config.standardize:
            pooled = (pooled - self.std_bias.float()) * self.std_scale.float()
        out = pooled.to(h.dtype)
        if self.embed is not None:
            out = self.embed(out)
        return EncoderOutput(out.masked_fill(~valid[..., None], 0), valid.sum(-1))

    def _pool(self, h: torch.Tensor, where: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Average ``pool x pool`` neighbourhoods of patches (by position) into ``tokens`` rows; which
        rows received a patch."""
        k = self.config.pool
        if k == 1:
            return h, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        width = where[..., 0].max(dim=-1, keepdim=True).values + 1
        cell = where // k
        index = cell[..., 0] + (width // k) * cell[..., 1]  # (B, N) soft token of each patch
        weights = h.new_zeros(h.shape[0], tokens, h.shape[1], dtype=torch.float32)
        weights.scatter_(1, index[:, None, :], 1.0 / k**2)  # (B, tokens, N)
        return (weights @ h.float()).to(h.dtype), (weights != 0).any(dim=2)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Images of ``lengths[b]`` soft tokens, each a strip of ``pool x (pool * n)`` patches; the
        suite's lengths count patches (the padded ones have position ``(-1, -1)``)."""
        g = torch.Generator().manual_seed(seed)
        area = self.config.pool**2
        patches = torch.tensor([area * n for n in lengths])
        pixels = torch.rand(len(lengths), int(patches.max()), 3 * self.config.patch_size**2, generator=g)
        positions = torch.full((len(lengths), int(patches.max()), 2), -1, dtype=torch.long)
        for b, count in enumerate(lengths):
            ys, xs = torch.meshgrid(torch.arange(self.config.pool), torch.arange(self.config.pool * count),
                                    indexing="ij")
            positions[b, : area * count] = torch.stack((xs.flatten(), ys.flatten()), dim=-1)

        def item(b: int) -> ContractInputs:
            n = int(patches[b])
            return ContractInputs({"pixel_values": pixels[b:b + 1, :n], "positions": positions[b:b + 1, :n]},
                                  patches[b:b + 1], {"pixel_values": 1})

        return ContractInputs({"pixel_values": pixels, "positions": positions}, patches, {"pixel_values": 1},
                              item=item, aligned_dims={"positions": 1})
