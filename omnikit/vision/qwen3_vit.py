"""The Qwen3-VL / Qwen3-Omni vision tower: learned position grid, 2-D rotary, deepstack mergers.

Layout (as published in Qwen3-Omni-30B-A3B): a Conv3d tubelet embedding with bias
(``(2, 16, 16)`` px), a learned ``side x side`` position table resampled (bilinear,
corners aligned) to each image's patch grid and added to the patch embeddings, 2-D ``(h, w)``
rotary positions, LayerNorm blocks with a GELU(tanh) MLP and full attention within each
temporal step, a final 2x2 merger, and "deepstack" mergers that turn the hidden states after
blocks ``deepstack_indexes`` into extra features the language model adds into its first layers.

Two entry points:

- ``forward(frames (B, T, C, H, W), lengths)``: the batch API of the frame encoders;
- ``forward_patches(pixel_values (N, C*t*p*p), grid_thw (M, 3))``: the packed layout of
  transformers' processor (patches listed block by block, each ``m x m`` block contiguous).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.decoder import DecoderBlock, run_blocks
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.mlp import GeluMLP
from omnikit.layers.norm import LayerNorm
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput, traceable_output
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import OmnikitValueError, check_finite, check_tensor
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.parallel import ParallelPlan
from omnikit.vision.merger import PatchMerger
from omnikit.vision.patch_grids import PatchGrids, check_grids, grid_list
from omnikit.vision.rotary import AxialRotaryEmbedding, grid_positions
from omnikit.vision.tubelet import TubeletEmbed, checked_frames

__all__ = ["BlockPatchMerger", "DeepstackOutput", "PackedVisionOutput", "Qwen3ViT", "Qwen3ViTConfig"]


@flat_keywords
@dataclass
class Qwen3ViTConfig(NestedConfig):
    """Hyper-parameters of :class:`Qwen3ViT` (transformers' names in brackets).

    Attributes:
        dim, depth, num_heads, mlp_hidden: the blocks (hidden_size, depth, num_heads, intermediate_size).
        out_dim: width of the merged tokens (out_hidden_size).
        patch: ``(t, p, p)`` tubelet (temporal_patch_size, patch_size).
        merge_size: ``m`` of the ``m x m`` mergers (spatial_merge_size).
        num_position_embeddings: entries of the learned position table, a square number.
        deepstack_indexes: blocks whose outputs feed a deepstack merger (deepstack_visual_indexes).
        rope_base: theta of the 2-D rotary.
    """

    transformer: TransformerConfig = nested_field(TransformerConfig, norm_eps=1e-6, rope_base=10000.0)
    out_dim: int
    patch: tuple[int, int, int] = (2, 16, 16)
    in_chans: int = 3
    merge_size: int = 2
    num_position_embeddings: int = 2304
    deepstack_indexes: tuple[int, ...] = ()
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_hidden", "norm_eps", "rope_base")


@traceable_output
@dataclass
class DeepstackOutput(EncoderOutput):
    """:class:`EncoderOutput` plus ``deepstack``: one ``(B, T', out_dim)`` tensor per deepstack merger."""

    deepstack: list[torch.Tensor] = field(default_factory=list)


@traceable_output
@dataclass
class PackedVisionOutput:
    """Packed outputs of :meth:`Qwen3ViT.forward_patches`, in the order of the input patches.

    Attributes:
        hidden_states: ``(N / m^2, out_dim)`` merged tokens (transformers' ``pooler_output``).
        deepstack: one ``(N / m^2, out_dim)`` tensor per deepstack merger.
        last_hidden_state: ``(N, dim)`` block outputs before merging.
    """

    hidden_states: torch.Tensor
    deepstack: list[torch.Tensor]
    last_hidden_state: torch.Tensor


class BlockPatchMerger(PatchMerger):
    """A :class:`PatchMerger` for tokens already listed block by block: ``(N, dim) -> (N / m^2, out_dim)``.

    ``norm_after_grouping`` puts the LayerNorm on the concatenated ``m*m*dim`` vector (the deepstack
    mergers) instead of on each token (the final merger).
    """

    def __init__(
        self, dim: int, out_dim: int, merge_size: int = 2, *, norm_after_grouping: bool = False, eps: float = 1e-6
    ) -> None:
        super().__init__(dim, out_dim, merge_size, eps=eps)
        self.norm_after_grouping = norm_after_grouping
        if norm_after_grouping:
            self.norm = LayerNorm(dim * merge_size**2, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", shape=("N", self.dim), floating=True)
        grouped = self.dim * self.merge_size**2
        if self.norm_after_grouping:
            return self.mlp(self.norm(x.reshape(-1, grouped)))
        return self.mlp(self.norm(x).reshape(-1, grouped))


def _block_order(x: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``(G, h, w, D) -> (G, h*w, D)`` listed block by block (each ``m x m`` block contiguous)."""
    g, h, w, d = x.shape
    m = merge_size
    if h % m or w % m:
        raise OmnikitValueError(f"the patch grid {h}x{w} must be divisible by merge_size={m}")
    return x.view(g, h // m, m, w // m, m, d).permute(0, 1, 3, 2, 4, 5).reshape(g, h * w, d)


class Qwen3ViT(nn.Module):
    """Qwen3-Omni's vision tower. ``frames (B, T, C, H, W) -> DeepstackOutput((B, T/t * h'*w', out_dim))``.

    ``h' = H / (p * m)``; tokens are ordered time, then ``m x m`` blocks row-major. An odd last
    tubelet repeats the last valid frame; padded steps give zero outputs.
    """

    #: The patch mergers: the ``projector`` part for per-tower recipes and LoRA (omnikit.fusion.towers).
    projector_modules: tuple[str, ...] = ("merger", "deepstack_mergers")

    def __init__(self, config: Qwen3ViTConfig) -> None:
        super().__init__()
        side = round(config.num_position_embeddings**0.5)
        if side * side != config.num_position_embeddings:
            raise OmnikitValueError(
                f"`num_position_embeddings` expected a square number but got {config.num_position_embeddings}"
            )
        bad = [i for i in config.deepstack_indexes if not 0 <= i < config.depth]
        if bad:
            raise OmnikitValueError(f"`deepstack_indexes` expected block indexes in [0, {config.depth}) but got {bad}")
        self.config = config
        self.side = side
        self.embed = TubeletEmbed(config.dim, tuple(config.patch), config.in_chans, bias=True)
        self.pos_embed = nn.Embedding(config.num_position_embeddings, config.dim)
        self.rotary = AxialRotaryEmbedding(config.dim // config.num_heads, axes=2, base=config.rope_base)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                config.dim, config.num_heads, mlp=GeluMLP(config.dim, config.mlp_hidden, approximate="tanh"),
                norm="layernorm", norm_eps=config.norm_eps, qk_norm=False, qkv_bias=True, out_bias=True, use_rope=False,
                backend=config.backend, causal=False,
            )
            for _ in range(config.depth)
        )
        m = config.merge_size
        self.merger = BlockPatchMerger(config.dim, config.out_dim, m, eps=config.norm_eps)
        self.deepstack_mergers = nn.ModuleList(
            BlockPatchMerger(config.dim, config.out_dim, m, norm_after_grouping=True, eps=config.norm_eps)
            for _ in config.deepstack_indexes
        )
        self.output_dim = config.out_dim
        self.gradient_checkpointing = False

    def parallel_plan(self) -> ParallelPlan:
        """Block by block; the Thinker calls the tower through ``forward_patches``, hooked as ``forward`` is."""
        return ParallelPlan(fsdp_units=list(self.blocks), fsdp_methods=[(self, "forward_patches")])

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The learned table resampled to an ``height x width`` patch grid, block order: ``(h*w, dim)``."""
        table = self.pos_embed.weight.view(1, self.side, self.side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(table.float(), size=(height, width), mode="bilinear", align_corners=True)
        return _block_order(grid.permute(0, 2, 3, 1), self.config.merge_size)[0].to(table.dtype)

    def _rope(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotary(grid_positions((height, width), merge_size=self.config.merge_size, device=device))

    def _blocks(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the blocks on ``(G, S, dim)`` tokens (``G`` temporal steps attending within themselves);
        returns the block outputs and the deepstack features ``(G * S / m^2, out_dim)``."""
        deepstack: list[torch.Tensor] = []
        kwargs = {"rope": rope}
        start = 0
        for index, merger in zip(self.config.deepstack_indexes, self.deepstack_mergers, strict=True):
            x = self._run(self.blocks[start : index + 1], x, kwargs)
            deepstack.append(merger(x.reshape(-1, x.shape[-1])))
            start = index + 1
        x = self._run(self.blocks[start:], x, kwargs)
        return x, deepstack

    def _run(self, blocks: nn.ModuleList, x: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        x, _ = run_blocks(blocks, x, lambda block: kwargs, checkpointing=self.gradient_checkpointing and self.training,
                          return_aux=False)
        return x

    @property
    def frames_per_step(self) -> int:
        """Frames one temporal step reads (its tubelet's depth); attention stays inside a step, so a video
        streamed in windows of whole steps gives the tokens of one pass."""
        return self.config.patch[0]

    def grid(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """Merged-token grid ``(t, h, w)`` of frames of shape ``(B, T, C, H, W)``."""
        pt, ph, pw = self.config.patch
        m = self.config.merge_size
        return -(-shape[1] // pt), shape[3] // (ph * m), shape[4] // (pw * m)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> DeepstackOutput:
        lengths = checked_frames(frames, lengths, self.config.in_chans)
        batch = frames.shape[0]
        x = self.embed(frames, lengths)  # (B, gt, gh, gw, D)
        _, gt, gh, gw, dim = x.shape
        x = _block_order(x.reshape(batch * gt, gh, gw, dim), self.config.merge_size)
        x = x + self.position_embedding(gh, gw).to(x.dtype)
        x, deepstack = self._blocks(x, self._rope(gh, gw, frames.device))
        merged = self.merger(x.reshape(-1, dim))
        steps = self.embed.output_frames(lengths)
        per_step = merged.shape[0] // (batch * gt)
        mask = lengths_to_mask(steps, gt)[:, :, None].expand(batch, gt, per_step).reshape(batch, -1, 1)

        def batched(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, gt * per_step, -1) * mask.to(t.dtype)

        return DeepstackOutput(batched(merged), steps * per_step, [batched(d) for d in deepstack])

    def forward_patches(self, pixel_values: torch.Tensor, grid_thw: PatchGrids) -> PackedVisionOutput:
        """Packed patches ``(N, C*t*p*p)`` of items with patch grids ``grid_thw (M, 3)`` (as transformers'
        processor returns them, or ``(t, h, w)`` ints per item: no host read, the form to give under
        ``torch.compile``) -> :class:`PackedVisionOutput`; attention stays within each temporal step."""
        pt, ph, pw = self.config.patch
        check_tensor(pixel_values, "pixel_values", shape=("N", self.config.in_chans * pt * ph * pw), floating=True)
        check_finite(pixel_values, "pixel_values")
        grids = grid_list(grid_thw)
        check_grids(grids, merge_size=self.config.merge_size, rows=pixel_values.shape[0])
        total = sum(t * h * w for t, h, w in grids)
        weight = self.embed.proj.weight
        x = F.linear(pixel_values.to(weight.dtype), weight.view(self.config.dim, -1), self.embed.proj.bias)
        # Temporal steps of equal (h, w) share positions and rotary tables: run each such group as a batch.
        starts: dict[tuple[int, int], list[int]] = {}
        offset = 0
        for t, h, w in grids:
            for _ in range(t):
                starts.setdefault((h, w), []).append(offset)
                offset += h * w
        unit = self.config.merge_size**2
        hidden_out = torch.empty_like(x)
        merged_out = x.new_empty(total // unit, self.config.out_dim)
        deepstack_out = [merged_out.new_empty(merged_out.shape) for _ in self.deepstack_mergers]
        for (h, w), first in starts.items():
            rows = (torch.tensor(first, device=x.device)[:, None] + torch.arange(h * w, device=x.device)).reshape(-1)
            group = x[rows].view(len(first), h * w, -1) + self.position_embedding(h, w).to(x.dtype)
            hidden, deepstack = self._blocks(group, self._rope(h, w, x.device))
            merged_rows = rows[::unit] // unit
            hidden_out[rows] = hidden.reshape(-1, hidden.shape[-1])
            merged_out[merged_rows] = self.merger(hidden.reshape(-1, hidden.shape[-1]))
            for out, feature in zip(deepstack_out, deepstack, strict=True):
                out[merged_rows] = feature
        return PackedVisionOutput(merged_out, deepstack_out, hidden_out)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        g = torch.Generator().manual_seed(seed)
        _, ph, pw = self.config.patch
        m = self.config.merge_size
        frames = torch.randn(len(lengths), max(lengths), self.config.in_chans, 2 * ph * m, 4 * pw * m, generator=g)
        lens = torch.tensor(list(lengths))
        return ContractInputs({"frames": frames, "lengths": lens}, lens, {"frames": 1}, "lengths")
