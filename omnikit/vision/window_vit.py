"""The Qwen2.5-VL / Qwen2.5-Omni vision tower: window attention with a few full-attention blocks.

Patches of ``(2, 14, 14)`` pixels (a Conv3d applied as one matmul), 2-D ``(h, w)`` rotary
positions, pre-RMSNorm blocks with a SwiGLU MLP (biases on every projection), and a 2x2 merger
with an RMSNorm. Attention never crosses one temporal step (two frames) of one image or video;
most blocks attend inside windows of ``window_size`` pixels (112 px = 4x4 merged tokens), the
blocks in ``full_attention_blocks`` across the whole step.

Two call forms:

- :meth:`WindowViT.forward_patches` takes what the Qwen2-VL family's image processor returns:
  ``pixel_values (N, C*2*14*14)``, one row per patch with each 2x2 merge group contiguous, and
  ``grid_thw (n, 3)`` patch grids; it returns the merged tokens ``(N / 4, out_dim)`` of all items
  in order, equal to transformers' ``Qwen2_5OmniVisionEncoder`` pooler output.
- :meth:`WindowViT.forward` takes frames ``(B, T, C, H, W)`` with ``lengths`` and returns an
  :class:`~omnikit.outputs.EncoderOutput`; it cuts the frames like the processor does
  (:func:`patchify_frames`).

Tokens are reordered window by window with tensor index arithmetic (a stable sort on window ids),
and attention segments (windows or temporal steps) of equal length are gathered into one batch,
so each block makes one attention call per distinct segment length (full windows, edge windows,
frame sizes), with no padding and no mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnikit.layers.decoder import DecoderBlock
from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.mlp import SwiGLU
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import (
    OmnikitValueError,
    check_finite,
    check_positive,
    check_tensor,
)
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.utils.parallel import ParallelPlan
from omnikit.vision.merger import PatchMerger
from omnikit.vision.patch_grids import Grid, PatchGrids, check_grids, grid_list
from omnikit.vision.rotary import AxialRotaryEmbedding
from omnikit.vision.tubelet import TubeletEmbed, checked_frames, repeat_last_valid_frame

__all__ = ["WindowViT", "WindowViTConfig", "patchify_frames", "window_order"]


@flat_keywords
@dataclass
class WindowViTConfig(NestedConfig):
    """Hyper-parameters of :class:`WindowViT` (defaults: Qwen2.5-Omni-7B's vision tower)."""

    transformer: TransformerConfig = nested_field(
        TransformerConfig, dim=1280, depth=32, num_heads=16, mlp_hidden=3420, window=112, norm_eps=1e-6,
        rope_base=10000.0)
    out_dim: int = 3584
    patch: tuple[int, int, int] = (2, 14, 14)
    in_chans: int = 3
    merge_size: int = 2
    full_attention_blocks: tuple[int, ...] = (7, 15, 23, 31)
    backend: str = "sdpa"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat(
        "dim", "depth", "num_heads", "mlp_hidden", "norm_eps", "rope_base", window_size="window")


def patchify_frames(
    frames: torch.Tensor, lengths: torch.Tensor, patch: tuple[int, int, int], merge_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(B, T, C, H, W)`` -> processor layout ``pixel_values (N, C*pt*ph*pw)``, ``grid_thw (B, 3)``.

    Item ``b`` has ``ceil(lengths[b] / pt)`` temporal steps (an odd last step repeats the last
    valid frame); rows are listed step by step, merge group by merge group (row-major), and
    row-major inside a group, each row flattened as ``(C, pt, ph, pw)``.
    """
    pt, ph, pw = patch
    batch, _, _, height, width = frames.shape
    x = _step_patches(frames, lengths, patch, merge_size)
    steps, gh, gw = x.shape[1], height // ph, width // pw
    x = x.reshape(batch, steps, gh * gw, x.shape[-1])
    valid_steps = -(-lengths // pt)
    pixel_values = x[lengths_to_mask(valid_steps, steps)].reshape(-1, x.shape[-1])
    sides = torch.tensor([gh, gw], device=lengths.device).expand(batch, 2)
    return pixel_values, torch.cat((valid_steps[:, None], sides), dim=1)


def _step_patches(
    frames: torch.Tensor, lengths: torch.Tensor, patch: tuple[int, int, int], merge_size: int
) -> torch.Tensor:
    """Frames ``(B, T, C, H, W)`` -> every temporal step's patches ``(B, steps, GH, GW, m*m, C*pt*ph*pw)``:
    a ``GH x GW`` grid of merge groups of ``m x m`` patches (row-major), padded steps repeating the
    item's last valid frame."""
    pt, ph, pw = patch
    batch, _, chans, height, width = frames.shape
    if height % (ph * merge_size) or width % (pw * merge_size) or not height or not width:
        raise OmnikitValueError(
            f"`frames` sides expected positive multiples of {ph * merge_size}x{pw * merge_size} px "
            f"(patch x merge_size) but got {height}x{width}"
        )
    frames = repeat_last_valid_frame(frames, lengths, pt)
    steps, m = frames.shape[1] // pt, merge_size
    groups_h, groups_w = height // (ph * m), width // (pw * m)
    x = frames.reshape(batch, steps, pt, chans, groups_h, m, ph, groups_w, m, pw)
    return x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(batch, steps, groups_h, groups_w, m * m, -1)


def window_order(
    grid_thw: PatchGrids, merge_size: int, window_groups: int, *, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window reordering of the merge groups of packed items.

    Args:
        grid_thw: ``(n, 3)`` patch grids of the items, in packing order (a tensor, or ``(t, h, w)`` ints).
        merge_size: ``m``; a merge group is an ``m x m`` block of patches.
        window_groups: window side in merge groups (``window_px // (m * patch)``).
        device: where the indices go when the grids are ints (default: the grid tensor's device, else CPU).

    Returns:
        ``order (G,)``: the merge groups (item by item, row-major) listed window by window (windows
        row-major per temporal step, groups row-major inside a window); ``window_sizes (n_win,)``:
        merge groups per window in that order; ``group_hw (2, G)``: each group's row and column, in
        the original order.
    """
    if device is None and isinstance(grid_thw, torch.Tensor):
        device = grid_thw.device
    order, sizes, group_hw = _window_layout(grid_list(grid_thw), merge_size, window_groups, device)
    return order, torch.tensor(sizes, dtype=torch.long, device=device), group_hw


def _window_layout(
    grids: Sequence[Grid], merge_size: int, window_groups: int, device: torch.device | None
) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """:func:`window_order` of host grids, the window sizes as ints: the index tensors have shapes fixed
    by the grids (no value is read back)."""
    m, side = merge_size, window_groups
    grid_thw = torch.tensor(grids, dtype=torch.long, device=device).view(-1, 3)
    t, gh, gw = grid_thw[:, 0], grid_thw[:, 1] // m, grid_thw[:, 2] // m
    groups = t * gh * gw
    total = sum(n * (h // m) * (w // m) for n, h, w in grids)
    item = torch.repeat_interleave(torch.arange(len(grids), device=device), groups, output_size=total)
    local = torch.arange(total, device=device) - (groups.cumsum(0) - groups)[item]
    per_step = (gh * gw)[item]
    step, in_step = local // per_step, local % per_step
    row, col = in_step // gw[item], in_step % gw[item]
    win_h, win_w = -(-gh // side), -(-gw // side)
    windows = t * win_h * win_w
    window_id = (windows.cumsum(0) - windows)[item] + (
        (step * win_h[item] + row // side) * win_w[item] + col // side
    )
    order = torch.sort(window_id, stable=True).indices
    sizes = []  # every window holds at least one group: its rows times its columns
    for n, h, w in grids:
        rows, cols = _window_spans(h // m, side), _window_spans(w // m, side)
        sizes += [r * c for r in rows for c in cols] * n
    return order, sizes, torch.stack((row, col))


def _window_spans(groups: int, side: int) -> list[int]:
    """Lengths of the consecutive windows of ``side`` groups along an axis of ``groups`` (the last one shorter)."""
    return [min(side, groups - start) for start in range(0, groups, side)]


def _pad_items(tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Items packed back to back ``(sum(counts), D)`` -> zero-padded ``(len(counts), max(counts), D)``."""
    item = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    slot = torch.arange(item.numel(), device=counts.device) - (counts.cumsum(0) - counts)[item]
    out = tokens.new_zeros(len(counts), int(counts.max()), tokens.shape[-1])
    return out.index_put((item, slot), tokens)


@dataclass
class _Buckets:
    """Consecutive segments of a packed sequence grouped by length (a handful of lengths: full windows,
    edge windows, frame sizes), so each group runs as one ``(S_b, L_b, D)`` batch with no padding and
    no mask. Tokens are gathered into group order once per call (``index_select``, whose backward is a
    cheap ``index_add``); when the segments already come in that order nothing is moved."""

    order: torch.Tensor | None  # (N,) packed position of each grouped token; None: already grouped
    inverse: torch.Tensor | None
    shapes: list[tuple[int, int]]  # (S_b, L_b) per group
    ropes: list[tuple[torch.Tensor, torch.Tensor]]  # (S_b, L_b, head_dim) cos/sin per group

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], cos: torch.Tensor, sin: torch.Tensor) -> _Buckets:
        """``sizes`` consecutive segment lengths (host ints); ``cos``/``sin (N, head_dim)`` of the packed positions."""
        starts: dict[int, list[int]] = {}  # segment starts by length
        for start, n in zip(itertools.accumulate(sizes, initial=0), sizes):
            starts.setdefault(n, []).append(start)
        steps = torch.arange(max(sizes), device=cos.device)
        indices = [torch.tensor(starts[n], device=cos.device)[:, None] + steps[:n] for n in sorted(starts)]
        shapes = [(len(starts[n]), n) for n in sorted(starts)]
        ropes = [(cos[index], sin[index]) for index in indices]
        if list(sizes) == sorted(sizes):  # grouping by length keeps the packed order
            return cls(None, None, shapes, ropes)
        order = torch.cat([index.flatten() for index in indices])
        return cls(order, torch.argsort(order), shapes, ropes)

    def apply(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn(x (S_b, L_b, D), (cos, sin))`` on every group; ``(N, D) -> (N, D)``."""
        grouped = x if self.order is None else x.index_select(0, self.order)
        chunks = grouped.split([s * n for s, n in self.shapes])
        out = torch.cat([fn(c.view(*shape, -1), rope).flatten(0, 1)
                         for c, shape, rope in zip(chunks, self.shapes, self.ropes)])
        return out if self.inverse is None else out.index_select(0, self.inverse)


class _StepWindows:
    """The windows of one temporal step of ``GH x GW`` merge groups, cut by static reshapes: the grid
    splits into at most four regions of equal windows (full windows, the right and bottom edge
    strips, the corner), each run as one ``(S * windows, tokens, D)`` batch with its rotary tables."""

    def __init__(self, gh: int, gw: int, side: int, positions: torch.Tensor, rotary: nn.Module) -> None:
        full_h, full_w = gh // side * side, gw // side * side
        self.regions = [(r0, r1, c0, c1, min(side, r1 - r0), min(side, c1 - c0))
                        for r0, r1 in ((0, full_h), (full_h, gh)) if r1 > r0
                        for c0, c1 in ((0, full_w), (full_w, gw)) if c1 > c0]
        self.ropes = [rotary(self._cut(positions[None], region).permute(2, 0, 1)) for region in self.regions]

    @staticmethod
    def _cut(x: torch.Tensor, region: tuple[int, ...]) -> torch.Tensor:
        """``(S, GH, GW, m*m, D)`` -> the region's windows ``(S * windows, wh * ww * m*m, D)``."""
        r0, r1, c0, c1, wh, ww = region
        part = x[:, r0:r1, c0:c1]
        part = part.reshape(x.shape[0], (r1 - r0) // wh, wh, (c1 - c0) // ww, ww, *x.shape[3:])
        return part.transpose(2, 3).reshape(-1, wh * ww * x.shape[3], x.shape[-1])

    def apply(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn(windows (S * n, L, D), (cos, sin))`` on every region; ``(S, GH, GW, m*m, D)`` -> same."""
        bands: dict[int, list[torch.Tensor]] = {}  # regions by first row: a band of the grid each
        for region, (cos, sin) in zip(self.regions, self.ropes):
            r0, r1, c0, c1, wh, ww = region
            rope = tuple(t.expand(x.shape[0], *t.shape).reshape(-1, *t.shape[1:]) for t in (cos, sin))
            out = fn(self._cut(x, region), rope)
            out = out.view(x.shape[0], (r1 - r0) // wh, (c1 - c0) // ww, wh, ww, *x.shape[3:])
            bands.setdefault(r0, []).append(out.transpose(2, 3).reshape(x.shape[0], r1 - r0, c1 - c0, *x.shape[3:]))
        return torch.cat([torch.cat(band, dim=2) for band in bands.values()], dim=1)


class WindowViT(nn.Module):
    """Qwen2.5-VL-style vision tower. See the module docstring for the two call forms.

    Weights: ``patch_embed.proj`` (Conv3d shape, no bias), ``blocks.{i}`` (``norm1``, ``attn.qkv``
    fused q/k/v with bias, ``attn.out``, ``norm2``, ``mlp.gate/up/down`` with bias), ``merger``
    (``norm``, ``mlp.0``, ``mlp.2``).
    """

    #: The patch merger: the ``projector`` part for per-tower recipes and LoRA (omnikit.fusion.towers).
    projector_modules: tuple[str, ...] = ("merger",)

    def __init__(self, config: WindowViTConfig) -> None:
        super().__init__()
        check_positive(config.merge_size, "merge_size")
        for i in config.full_attention_blocks:
            if not 0 <= i < config.depth:
                raise OmnikitValueError(
                    f"`full_attention_blocks` expected indices in [0, {config.depth}) but got "
                    f"{config.full_attention_blocks}"
                )
        self.config = config
        self.patch_embed = TubeletEmbed(config.dim, tuple(config.patch), config.in_chans)
        self.rotary = AxialRotaryEmbedding(config.dim // config.num_heads, axes=2, base=config.rope_base)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                config.dim, config.num_heads, mlp=SwiGLU(config.dim, config.mlp_hidden, bias=True), norm="rmsnorm",
                norm_eps=config.norm_eps, qk_norm=False, qkv_bias=True, out_bias=True, use_rope=False, causal=False,
                backend=config.backend,
            )
            for _ in range(config.depth)
        )
        self.merger = PatchMerger(config.dim, config.out_dim, config.merge_size, eps=config.norm_eps, norm="rmsnorm")
        self.output_dim = config.out_dim
        self.gradient_checkpointing = False

    def parallel_plan(self) -> ParallelPlan:
        """Block by block; the Thinkers call the tower through ``forward_patches``, hooked as ``forward`` is."""
        return ParallelPlan(fsdp_units=list(self.blocks), fsdp_methods=[(self, "forward_patches")])

    @property
    def frames_per_step(self) -> int:
        """Frames one temporal step reads (its tubelet's depth); attention stays inside a step, so a video
        streamed in windows of whole steps gives the tokens of one pass."""
        return self.config.patch[0]

    @property
    def patch_dim(self) -> int:
        """Width of one ``pixel_values`` row: ``C * pt * ph * pw``."""
        pt, ph, pw = self.config.patch
        return self.config.in_chans * pt * ph * pw

    @property
    def window_groups(self) -> int:
        """Window side in merge groups."""
        return max(self.config.window_size // (self.config.merge_size * self.config.patch[1]), 1)

    def num_tokens(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """Merged output tokens per item ``(n,)`` of patch grids ``(n, 3)``."""
        return grid_thw.long().prod(-1) // self.config.merge_size**2

    def forward_patches(self, pixel_values: torch.Tensor, grid_thw: PatchGrids) -> torch.Tensor:
        """``pixel_values (N, C*pt*ph*pw)``, ``grid_thw (n, 3)`` -> merged tokens ``(N / m^2, out_dim)``.

        ``grid_thw``: the processor's int tensor, or ``(t, h, w)`` ints per item (no host read: the form
        to give under ``torch.compile``, see :mod:`omnikit.vision.patch_grids`)."""
        check_tensor(pixel_values, "pixel_values", shape=("N", self.patch_dim), floating=True)
        check_finite(pixel_values, "pixel_values")
        grids = grid_list(grid_thw)
        m, m2 = self.config.merge_size, self.config.merge_size**2
        check_grids(grids, merge_size=m, rows=pixel_values.shape[0])
        order, window_sizes, group_hw = _window_layout(grids, m, self.window_groups, pixel_values.device)
        weight = self.patch_embed.proj.weight
        x = F.linear(pixel_values.to(weight.dtype), weight.view(weight.shape[0], -1))
        x = x.view(-1, m2, x.shape[-1])[order].flatten(0, 1)
        cos, sin = self.rotary(self._patch_positions(group_hw[:, order]))
        steps = [h * w for t, h, w in grids for _ in range(t)]
        layouts = {full: _Buckets.from_sizes(sizes, cos[0], sin[0])
                   for full, sizes in ((True, steps), (False, [n * m2 for n in window_sizes]))}
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            run = (lambda h, rope, b=block: checkpoint(b, h, rope=rope, use_reentrant=False)) if recompute else (
                lambda h, rope, b=block: b(h, rope=rope))
            x = layouts[i in self.config.full_attention_blocks].apply(run, x)
        merged = self.merger.merge_groups(x)
        return merged[torch.argsort(order)]

    def _patch_positions(self, group_hw: torch.Tensor) -> torch.Tensor:
        """``(2, G)`` merge-group rows/cols -> ``(2, G * m^2)`` patch rows/cols, row-major in each group."""
        m = self.config.merge_size
        offsets = torch.arange(m, device=group_hw.device)
        inner = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij")).flatten(1)  # (2, m*m)
        return (group_hw[:, :, None] * m + inner[:, None, :]).flatten(1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """``frames (B, T, C, H, W)``, ``lengths (B,)`` -> ``EncoderOutput((B, T', out_dim), lengths')``.

        An image is a clip of one frame (repeated to fill the temporal patch). Tokens of item ``b``
        are ``ceil(lengths[b] / pt) * H/(p*m) * W/(p*m)``, time-major then row-major.
        """
        lengths = checked_frames(frames, lengths, self.config.in_chans, like=self)
        if torch.compiler.is_compiling():
            return self._forward_steps(frames, lengths)
        pixel_values, grid_thw = patchify_frames(frames, lengths, tuple(self.config.patch), self.config.merge_size)
        tokens = self.forward_patches(pixel_values, grid_thw)
        counts = self.num_tokens(grid_thw)
        return EncoderOutput(_pad_items(tokens, counts), counts)

    def _forward_steps(self, frames: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """:meth:`forward` with fixed shapes (traced): every temporal step of every item, padded ones
        too, runs as one image ``(S = B * steps, GH, GW, m*m, D)`` (attention never crosses a step),
        its windows cut by static reshapes; padded steps are zeroed at the end. The output has the
        padded length's ``steps * GH * GW`` tokens (equal to eager whenever the longest item fills the
        padding)."""
        m = self.config.merge_size
        x = _step_patches(frames, lengths, tuple(self.config.patch), m)
        batch, steps, gh, gw = x.shape[:4]  # merge groups per side
        weight = self.patch_embed.proj.weight
        h = F.linear(x.to(weight.dtype), weight.view(weight.shape[0], -1)).flatten(0, 1)  # (S, GH, GW, m*m, D)
        rows = torch.arange(gh * m, device=x.device).view(gh, 1, m, 1).expand(gh, gw, m, m)
        cols = torch.arange(gw * m, device=x.device).view(1, gw, 1, m).expand(gh, gw, m, m)
        positions = torch.stack((rows, cols), dim=-1).reshape(gh, gw, m * m, 2)  # patch (row, col)
        windows = _StepWindows(gh, gw, self.window_groups, positions, self.rotary)
        full_rope = self.rotary(positions.reshape(-1, 2).t())
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            run = (lambda t, rope, b=block: checkpoint(b, t, rope=rope, use_reentrant=False)) if recompute else (
                lambda t, rope, b=block: b(t, rope=rope))
            if i in self.config.full_attention_blocks:
                h = run(h.flatten(1, 3), full_rope).view(h.shape)
            else:
                h = windows.apply(run, h)
        merged = self.merger.merge_groups(h.reshape(-1, h.shape[-1]))
        tokens = merged.view(batch, steps * gh * gw, merged.shape[-1])
        counts = -(-lengths // self.config.patch[0]) * (gh * gw)
        return EncoderOutput(tokens.masked_fill(~lengths_to_mask(counts, tokens.shape[1])[..., None], 0), counts)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Tokens per item for clips of ``lengths`` frames at the contract's frame size."""
        _, ph, _ = self.config.patch
        side = self._contract_side() // (ph * self.config.merge_size)
        return -(-torch.as_tensor(lengths) // self.config.patch[0]) * side * side

    def _contract_side(self) -> int:
        return self.config.patch[1] * self.config.merge_size * (self.window_groups + 1)

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        """Clips of ``lengths`` frames whose side spans one full window and part of a second."""
        g = torch.Generator().manual_seed(seed)
        side = self._contract_side()
        frames = torch.randn(len(lengths), max(lengths), self.config.in_chans, side, side, generator=g)
        lens = torch.tensor(list(lengths))
        return ContractInputs({"frames": frames, "lengths": lens}, lens, {"frames": 1}, "lengths")
