"""Hierarchical summarisation of long videos: frames -> clip tokens -> segment tokens.

Frame tokens are cut into clips of ``clip_frames`` frames, each clip is compressed to at most
``clip_tokens`` tokens, consecutive ``segment_clips`` clip summaries form a segment that is
compressed again to ``segment_tokens``. Compression is ToMe merging (no parameters) or a
learned :class:`~omnikit.video.PerceiverResampler` per level. Both levels come back, in
temporal order: clip ``c`` covers frames ``[c * clip_frames, (c + 1) * clip_frames)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.tome import merge_tokens
from omnikit.layers.transformer_config import TransformerConfig, transformer_flat
from omnikit.outputs import EncoderOutput, traceable_output
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import check_choice, check_positive
from omnikit.utils.config import NestedConfig, flat_keywords, nested_field
from omnikit.video.packing import pack_groups
from omnikit.video.temporal.common import check_frame_tokens, frame_tokens_contract
from omnikit.video.temporal.resampler import PerceiverResampler

__all__ = ["HierarchicalSummarizer", "HierarchyConfig", "HierarchyOutput"]


@flat_keywords
@dataclass
class HierarchyConfig(NestedConfig):
    """Hyper-parameters of :class:`HierarchicalSummarizer`: the token width ``dim`` and, with
    ``compressor="resampler"``, the resamplers' stack (``transformer``; flat keywords ``dim``,
    ``depth``, ``num_heads``)."""

    transformer: TransformerConfig = nested_field(TransformerConfig, depth=1, num_heads=8, mlp_ratio=4.0,
                                                  norm_eps=1e-5)
    clip_frames: int = 8
    clip_tokens: int = 32
    segment_clips: int = 4
    segment_tokens: int = 64
    compressor: str = "tome"  # or "resampler"

    flat_fields: ClassVar[dict[str, tuple[str, str]]] = transformer_flat("dim", "depth", "num_heads")


@traceable_output
@dataclass
class HierarchyOutput:
    """Both levels of a :class:`HierarchicalSummarizer`; ``hidden_states``/``lengths`` are the segments'."""

    segments: EncoderOutput
    clips: EncoderOutput

    @property
    def hidden_states(self) -> torch.Tensor:
        return self.segments.hidden_states

    @property
    def lengths(self) -> torch.Tensor:
        return self.segments.lengths


class HierarchicalSummarizer(nn.Module):
    """Frame tokens ``(B, T, N, D)`` + ``lengths`` (frames) -> :class:`HierarchyOutput`.

    Each level's width is its longest item's token count; traced (``torch.compile``, ``torch.export``)
    it is the padded length's (every clip and segment full, see :func:`pack_groups`).
    """

    def __init__(self, config: HierarchyConfig) -> None:
        super().__init__()
        for name in ("clip_frames", "clip_tokens", "segment_clips", "segment_tokens"):
            check_positive(getattr(config, name), name)
        check_choice(config.compressor, "compressor", ("tome", "resampler"))
        self.config = config
        self.clip_level = self.segment_level = None
        if config.compressor == "resampler":
            stack = config.transformer
            self.clip_level, self.segment_level = (
                PerceiverResampler(stack.dim, tokens, stack.depth, stack.num_heads, mlp_ratio=stack.mlp_ratio,
                                   norm_eps=stack.norm_eps)
                for tokens in (config.clip_tokens, config.segment_tokens))
        self.output_dim = config.dim

    def _compress(self, level: nn.Module | None, x: torch.Tensor, counts: torch.Tensor, target: int):
        """Compress each row ``x (R, L, D)`` with ``counts`` valid tokens (empty rows stay empty)."""
        filled = counts > 0
        if torch.compiler.is_compiling():  # traced: every row compressed (fixed shapes), empty rows zeroed after
            tokens, lens_out = self._compress_rows(level, x, counts.clamp(min=1), target)
            return tokens.masked_fill(~filled[:, None, None], 0), lens_out.masked_fill(~filled, 0)
        out = x.new_zeros(x.shape[0], target, x.shape[-1])
        out_counts = torch.zeros_like(counts)
        if bool(filled.any()):
            out[filled], out_counts[filled] = self._compress_rows(level, x[filled], counts[filled], target)
        return out, out_counts

    @staticmethod
    def _compress_rows(level: nn.Module | None, rows: torch.Tensor, lens: torch.Tensor, target: int):
        """Rows ``(R, L, D)`` with ``lens`` (all >= 1) valid tokens -> ``(R, target, D)`` and their counts."""
        if level is None:
            merged = merge_tokens(rows, target, lengths=lens)
            tokens, lens_out = merged.tokens, merged.lengths
        else:
            result = level(rows, lens)
            tokens, lens_out = result.hidden_states, result.lengths
        return F.pad(tokens, (0, 0, 0, target - tokens.shape[1])), lens_out

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> HierarchyOutput:
        cfg = self.config
        tokens, lengths = check_frame_tokens(tokens, lengths, cfg.dim, like=self)
        batch, length, num_tokens, dim = tokens.shape
        clips = -(-length // cfg.clip_frames)
        padded = F.pad(tokens, (0, 0, 0, 0, 0, clips * cfg.clip_frames - length))
        rows = padded.view(batch * clips, cfg.clip_frames * num_tokens, dim)
        starts = torch.arange(clips, device=tokens.device) * cfg.clip_frames
        frames_in_clip = (lengths[:, None] - starts[None, :]).clamp(0, cfg.clip_frames)  # (B, C)
        clip_out, clip_counts = self._compress(self.clip_level, rows, frames_in_clip.reshape(-1) * num_tokens,
                                               cfg.clip_tokens)
        clip_out, clip_counts = clip_out.view(batch, clips, cfg.clip_tokens, dim), clip_counts.view(batch, clips)
        clip_tokens, clip_lengths = pack_groups(clip_out, clip_counts)

        segments = -(-clips // cfg.segment_clips)
        spare = segments * cfg.segment_clips - clips
        grouped = F.pad(clip_out, (0, 0, 0, 0, 0, spare))
        grouped = grouped.view(batch * segments, cfg.segment_clips, cfg.clip_tokens, dim)
        grouped_counts = F.pad(clip_counts, (0, spare)).view(batch * segments, cfg.segment_clips)
        seg_rows, seg_counts = pack_groups(grouped, grouped_counts)
        seg_rows = F.pad(seg_rows, (0, 0, 0, cfg.segment_clips * cfg.clip_tokens - seg_rows.shape[1]))
        seg_out, seg_out_counts = self._compress(self.segment_level, seg_rows, seg_counts, cfg.segment_tokens)
        segment_tokens, segment_lengths = pack_groups(
            seg_out.view(batch, segments, cfg.segment_tokens, dim), seg_out_counts.view(batch, segments)
        )
        return HierarchyOutput(EncoderOutput(segment_tokens, segment_lengths), EncoderOutput(clip_tokens, clip_lengths))

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return frame_tokens_contract(lengths, 4, self.config.dim, seed)
