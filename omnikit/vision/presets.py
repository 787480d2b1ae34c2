"""Registered vision towers: :class:`~omnikit.vision.FrameEncoder` presets (timm backbones, random
weights), the native video ViT and the Qwen-Omni towers (tiny test variants and published shapes)."""

from __future__ import annotations

from typing import Any

from omnikit.registry import configure, register_model
from omnikit.vision.frame_encoder import FrameEncoder
from omnikit.vision.gemma4 import Gemma4VisionConfig, Gemma4VisionEncoder
from omnikit.vision.qwen3_vit import Qwen3ViT, Qwen3ViTConfig
from omnikit.vision.video_vit import VideoViT, VideoViTConfig
from omnikit.vision.window_vit import WindowViT, WindowViTConfig

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


@register_model(kind="frame_encoder", modalities=("video", "image"))
def qwen2_5_omni_vision_tiny(**overrides) -> WindowViT:
    """A tiny Qwen2.5-Omni vision tower: width 32, 3 blocks (block 1 full attention), patches (2, 4, 4),
    windows of 16 px (2x2 merged tokens), output width 48."""
    return WindowViT(configure(
        WindowViTConfig, "qwen2_5_omni_vision_tiny", overrides, dim=32, depth=3, num_heads=2, mlp_hidden=40,
        out_dim=48, patch=(2, 4, 4), window_size=16, full_attention_blocks=(1,),
    ))


@register_model(kind="frame_encoder", modalities=("video", "image"))
def qwen2_5_omni_vision(**overrides) -> WindowViT:
    """Qwen2.5-Omni-7B's vision tower: width 1280, 32 blocks, 16 heads, SwiGLU 3420, windows of 112 px with
    full attention at blocks 7/15/23/31, 2x2 merger to 3584."""
    return WindowViT(configure(WindowViTConfig, "qwen2_5_omni_vision", overrides))


@register_model(kind="frame_encoder", modalities=("video", "image"))
def qwen3_vit_tiny(**overrides: Any) -> Qwen3ViT:
    """A tiny Qwen3-Omni vision tower ((2, 4, 4) patches, 4x4 position table, 2x2 merger) for tests;
    no deepstack mergers by default since the contract trains only the primary output."""
    return Qwen3ViT(configure(Qwen3ViTConfig, "qwen3_vit_tiny", overrides, dim=32, depth=2, num_heads=2,
                              mlp_hidden=48, out_dim=40, patch=(2, 4, 4), num_position_embeddings=16))


@register_model(kind="frame_encoder", modalities=("video", "image"))
def qwen3_vit_omni_30b_a3b(**overrides: Any) -> Qwen3ViT:
    """Qwen3-Omni-30B-A3B vision tower: width 1152, 27 blocks, 16 heads, MLP 4304, (2, 16, 16) patches,
    48x48 position table, deepstack mergers after blocks 8, 16 and 24, output width 2048."""
    return Qwen3ViT(configure(Qwen3ViTConfig, "qwen3_vit_omni_30b_a3b", overrides, dim=1152, depth=27,
                              num_heads=16, mlp_hidden=4304, out_dim=2048, deepstack_indexes=(8, 16, 24)))


@register_model(kind="frame_encoder", modalities=("video",))
def video_vit_tiny(**overrides: Any) -> VideoViT:
    """A tiny native video ViT (tubelet (2, 4, 4), 3-D rotary, 2x2 merger) for tests."""
    return VideoViT(configure(VideoViTConfig, "video_vit_tiny", overrides, dim=32, depth=2, num_heads=2,
                              patch=(2, 4, 4), out_dim=48))


@register_model(kind="frame_encoder", modalities=("video",))
def video_vit_qwen2vl(**overrides: Any) -> VideoViT:
    """Qwen2-VL sized video ViT: width 1280, 32 layers, 16 heads, (2, 14, 14) patches, 2x2 merger."""
    return VideoViT(configure(VideoViTConfig, "video_vit_qwen2vl", overrides, dim=1280, depth=32, num_heads=16,
                              out_dim=3584))


@register_model(kind="frame_encoder", modalities=("image",))
def gemma4_vision_tiny(**overrides: Any) -> Gemma4VisionEncoder:
    """A 2-block Gemma 4 vision tower (2x2-pixel patches, 2x2 pooling, dim 32) with a 32-wide embedder."""
    return Gemma4VisionEncoder(configure(
        Gemma4VisionConfig, "gemma4_vision_tiny", overrides, dim=32, depth=2, num_heads=4, num_kv_heads=2,
        head_dim=8, mlp_hidden=48, patch_size=2, position_table=32, pool=2, text_dim=32))


@register_model(kind="frame_encoder", modalities=("image",))
def gemma4_vision(**overrides: Any) -> Gemma4VisionEncoder:
    """Gemma 4 E2B / E4B vision tower shapes: 16 blocks at width 768, 12 heads of 64, MLP 3072, 16-pixel
    patches, 3x3 pooling (pass ``text_dim`` for the embedder into a language model)."""
    return Gemma4VisionEncoder(configure(Gemma4VisionConfig, "gemma4_vision", overrides))


@register_model(kind="frame_encoder", modalities=("image",))
def gemma4_vision_large(**overrides: Any) -> Gemma4VisionEncoder:
    """Gemma 4 26B-A4B / 31B vision tower shapes: 27 blocks at width 1152, 16 heads of 72, MLP 4304,
    16-pixel patches, 3x3 pooling."""
    return Gemma4VisionEncoder(configure(Gemma4VisionConfig, "gemma4_vision_large", overrides, dim=1152, depth=27,
                                         num_heads=16, num_kv_heads=16, head_dim=72, mlp_hidden=4304))
