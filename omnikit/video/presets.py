"""Registered temporal modules and long-video compressors: tiny test variants and published shapes.

Published presets build on ``device="meta"`` for counting. The classes live beside each other in
:mod:`omnikit.video.temporal` and :mod:`omnikit.video.hierarchy`; every registration is here.
"""

from __future__ import annotations

from typing import Any

from omnikit.registry import configure, register_model
from omnikit.video.hierarchy import HierarchicalSummarizer, HierarchyConfig
from omnikit.video.temporal.factorized import FactorizedConfig, FactorizedEncoder
from omnikit.video.temporal.pooling import TemporalPooling, TemporalPoolingConfig
from omnikit.video.temporal.qformer import QFormer, QFormerConfig
from omnikit.video.temporal.resampler import PerceiverResampler, ResamplerConfig
from omnikit.video.temporal.spacetime import SpaceTimeConfig, SpaceTimeEncoder
from omnikit.video.temporal.transformer import TemporalTransformer, TemporalTransformerConfig

__all__ = [
    "hierarchical_resampler_tiny",
    "perceiver_resampler_flamingo",
    "perceiver_resampler_tiny",
    "qformer_blip2",
    "qformer_tiny",
    "spacetime_joint_tiny",
    "temporal_pool_tiny",
    "temporal_transformer_tiny",
    "timesformer_base",
    "timesformer_tiny",
    "vivit_factorized_base",
    "vivit_factorized_tiny",
]


@register_model(kind="temporal", modalities=("video",))
def temporal_pool_tiny(**overrides: Any) -> TemporalPooling:
    """Mean-pool every 2 frames, then project width 32 -> 48."""
    return TemporalPooling(configure(TemporalPoolingConfig, "temporal_pool_tiny", overrides, dim=32, out_dim=48))


@register_model(kind="temporal", modalities=("video",))
def temporal_transformer_tiny(**overrides: Any) -> TemporalTransformer:
    """Tiny temporal transformer: width 32, 2 blocks."""
    return TemporalTransformer(configure(TemporalTransformerConfig, "temporal_transformer_tiny", overrides,
                                         dim=32, depth=2, num_heads=2))


@register_model(kind="temporal", modalities=("video",))
def timesformer_tiny(**overrides: Any) -> SpaceTimeEncoder:
    """Tiny divided space-time encoder (TimeSformer attention), width 32, 2 blocks."""
    return SpaceTimeEncoder(configure(SpaceTimeConfig, "timesformer_tiny", overrides, dim=32, depth=2, num_heads=2))


@register_model(kind="temporal", modalities=("video",))
def spacetime_joint_tiny(**overrides: Any) -> SpaceTimeEncoder:
    """Tiny joint space-time encoder (every token attends to every token), width 32, 2 blocks."""
    return SpaceTimeEncoder(configure(SpaceTimeConfig, "spacetime_joint_tiny", overrides, dim=32, depth=2,
                                      num_heads=2, attention="joint"))


@register_model(kind="temporal", modalities=("video",))
def timesformer_base(**overrides: Any) -> SpaceTimeEncoder:
    """TimeSformer-Base sized divided space-time encoder over ViT-B tokens: width 768, 12 blocks, 12 heads."""
    return SpaceTimeEncoder(configure(SpaceTimeConfig, "timesformer_base", overrides, dim=768, depth=12,
                                      num_heads=12))


@register_model(kind="temporal", modalities=("video",))
def vivit_factorized_tiny(**overrides: Any) -> FactorizedEncoder:
    """Tiny ViViT factorized encoder: width 32, 1 spatial + 1 temporal block."""
    return FactorizedEncoder(configure(FactorizedConfig, "vivit_factorized_tiny", overrides, dim=32,
                                       spatial_depth=1, temporal_depth=1, num_heads=2))


@register_model(kind="temporal", modalities=("video",))
def vivit_factorized_base(**overrides: Any) -> FactorizedEncoder:
    """ViViT-B factorized encoder sizes: width 768, 12 spatial + 4 temporal blocks, 12 heads."""
    return FactorizedEncoder(configure(FactorizedConfig, "vivit_factorized_base", overrides, dim=768,
                                       spatial_depth=12, temporal_depth=4, num_heads=12))


@register_model(kind="temporal", modalities=("video", "image"))
def qformer_tiny(**overrides: Any) -> QFormer:
    """Tiny Q-Former: 8 queries of width 32 over 24-wide tokens, 2 blocks."""
    return QFormer(configure(QFormerConfig, "qformer_tiny", overrides, dim=32, num_queries=8, depth=2,
                             num_heads=2, context_dim=24))


@register_model(kind="temporal", modalities=("video", "image"))
def qformer_blip2(**overrides: Any) -> QFormer:
    """BLIP-2 sized Q-Former: 32 queries, width 768, 12 blocks, 12 heads, over 1408-wide EVA ViT-g tokens."""
    return QFormer(configure(QFormerConfig, "qformer_blip2", overrides, dim=768, num_queries=32, depth=12,
                             num_heads=12, context_dim=1408))


def _resampler(config: ResamplerConfig) -> PerceiverResampler:
    return PerceiverResampler(
        config.dim, config.num_latents, config.depth, config.num_heads, context_dim=config.context_dim,
        mlp_ratio=config.mlp_ratio, norm_eps=config.norm_eps, backend=config.backend, time_steps=config.time_steps,
    )


@register_model(kind="temporal", modalities=("video", "image", "audio"))
def perceiver_resampler_tiny(**overrides: Any) -> PerceiverResampler:
    """Tiny Perceiver resampler: 8 latents of width 32 over 24-wide tokens, 2 blocks."""
    return _resampler(configure(ResamplerConfig, "perceiver_resampler_tiny", overrides, dim=32, num_latents=8,
                            depth=2, num_heads=2, context_dim=24))


@register_model(kind="temporal", modalities=("video", "image", "audio"))
def perceiver_resampler_flamingo(**overrides: Any) -> PerceiverResampler:
    """Flamingo's resampler sizes: 64 latents, width 1024 (NFNet-F6 features 1536), 6 blocks, 16 heads."""
    return _resampler(configure(ResamplerConfig, "perceiver_resampler_flamingo", overrides, dim=1024,
                            num_latents=64, depth=6, num_heads=16, context_dim=1536))


@register_model(kind="temporal", modalities=("video",))
def hierarchical_resampler_tiny(**overrides: Any) -> HierarchicalSummarizer:
    """Tiny learned hierarchy: 4-frame clips -> 6 tokens, 2 clips per segment -> 4 tokens (width 32)."""
    return HierarchicalSummarizer(configure(
        HierarchyConfig, "hierarchical_resampler_tiny", overrides, dim=32, clip_frames=4, clip_tokens=6,
        segment_clips=2, segment_tokens=4, compressor="resampler", num_heads=2,
    ))
