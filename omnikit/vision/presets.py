"""Registered :class:`~omnikit.vision.FrameEncoder` presets (timm backbones, random weights)."""

from __future__ import annotations

from typing import Any

from omnikit.registry import register_model
from omnikit.vision.frame_encoder import FrameEncoder

__all__: list[str] = []

_TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@register_model(kind="frame_encoder", modalities=("video", "image"))
def frame_encoder_tiny(**overrides: Any) -> FrameEncoder:
    """A 2-layer, 32-wide timm ViT on 32x32 frames: all 17 tokens (CLS + 4x4 patches) per frame."""
    return FrameEncoder("vit_tiny_patch16_224", **{**_TINY_VIT, **overrides})


@register_model(kind="frame_encoder", modalities=("video", "image"))
def frame_encoder_merged_tiny(**overrides: Any) -> FrameEncoder:
    """The tiny ViT with a 2x2 patch merger projecting to width 48 (4 tokens per frame)."""
    return FrameEncoder("vit_tiny_patch16_224", **{**_TINY_VIT, "merge_size": 2, "out_dim": 48, **overrides})


@register_model(kind="frame_encoder", modalities=("video", "image"))
def frame_encoder_tome_tiny(**overrides: Any) -> FrameEncoder:
    """The tiny ViT merging 3 patch tokens in each of its 2 blocks (ToMe): 11 tokens per frame."""
    return FrameEncoder("vit_tiny_patch16_224", **{**_TINY_VIT, "tome_r": 3, **overrides})


@register_model(kind="frame_encoder", modalities=("video", "image"))
def frame_encoder_vit_base(**overrides: Any) -> FrameEncoder:
    """timm ``vit_base_patch16_224`` per frame (197 tokens of width 768)."""
    return FrameEncoder("vit_base_patch16_224", **overrides)
