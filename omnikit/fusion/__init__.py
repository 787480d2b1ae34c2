"""Omni assembly: early fusion, cross-attention fusion, TMRoPE, Thinker-Talker, turn-taking."""

from omnikit.fusion.modality import MEDIA_MODALITIES, MODALITIES, MediaTokens
from omnikit.fusion.tmrope import (
    QWEN2_5_OMNI,
    QWEN3_OMNI,
    TMRoPEScheme,
    VisualGrid,
    item_positions,
    tmrope_position_ids,
)

__all__ = [
    "MEDIA_MODALITIES",
    "MODALITIES",
    "QWEN2_5_OMNI",
    "QWEN3_OMNI",
    "MediaTokens",
    "TMRoPEScheme",
    "VisualGrid",
    "item_positions",
    "tmrope_position_ids",
]
