"""Temporal modules over frame tokens (registered, each with a ``*_tiny`` variant, in :mod:`omnikit.video.presets`)."""

from omnikit.video.temporal.cross_attention import CrossAttention
from omnikit.video.temporal.factorized import FactorizedConfig, FactorizedEncoder
from omnikit.video.temporal.pooling import TemporalPooling, TemporalPoolingConfig
from omnikit.video.temporal.qformer import QFormer, QFormerConfig
from omnikit.video.temporal.resampler import PerceiverResampler, ResamplerConfig
from omnikit.video.temporal.spacetime import DividedSpaceTimeBlock, SpaceTimeConfig, SpaceTimeEncoder
from omnikit.video.temporal.transformer import TemporalTransformer, TemporalTransformerConfig

__all__ = [
    "CrossAttention",
    "DividedSpaceTimeBlock",
    "FactorizedConfig",
    "FactorizedEncoder",
    "PerceiverResampler",
    "QFormer",
    "QFormerConfig",
    "ResamplerConfig",
    "SpaceTimeConfig",
    "SpaceTimeEncoder",
    "TemporalPooling",
    "TemporalPoolingConfig",
    "TemporalTransformer",
    "TemporalTransformerConfig",
]
