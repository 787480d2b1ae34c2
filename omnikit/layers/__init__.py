"""Core layers every block family is built from."""

from omnikit.layers.attention import Attention
from omnikit.layers.attention_backends import BACKENDS, flash_attn_available, scaled_dot_product
from omnikit.layers.conv import CausalConv1d
from omnikit.layers.decoder import BlockStack, Decoder, DecoderBlock, DecoderConfig, default_mlp_hidden
from omnikit.layers.kv_cache import KVCache, StaticKVCache
from omnikit.layers.masks import (
    build_attention_mask,
    lengths_to_mask,
    positions_from_cu_seqlens,
    segment_ids_from_cu_seqlens,
)
from omnikit.layers.mlp import GeluMLP, SwiGLU, build_mlp
from omnikit.layers.norm import LayerNorm, RMSNorm, build_norm
from omnikit.layers.rotary import RotaryEmbedding, apply_rotary
from omnikit.layers.stack import TransformerStack
from omnikit.layers.transformer_config import TransformerConfig

__all__ = [
    "BACKENDS",
    "Attention",
    "BlockStack",
    "CausalConv1d",
    "Decoder",
    "DecoderBlock",
    "DecoderConfig",
    "GeluMLP",
    "KVCache",
    "LayerNorm",
    "RMSNorm",
    "RotaryEmbedding",
    "StaticKVCache",
    "SwiGLU",
    "TransformerConfig",
    "TransformerStack",
    "apply_rotary",
    "build_attention_mask",
    "build_mlp",
    "build_norm",
    "default_mlp_hidden",
    "flash_attn_available",
    "lengths_to_mask",
    "positions_from_cu_seqlens",
    "scaled_dot_product",
    "segment_ids_from_cu_seqlens",
]
