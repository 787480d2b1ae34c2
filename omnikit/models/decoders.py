"""Registered decoder presets: a tiny test model and published Qwen3 / Qwen3-MoE shapes."""

from __future__ import annotations

from typing import Any

from omnikit.layers.decoder import DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.registry import configure, register_model

__all__ = ["decoder_tiny", "qwen3_0_6b", "qwen3_1_7b", "qwen3_30b_a3b"]


@register_model(kind="decoder", modalities=("text",))
def decoder_tiny(**overrides: Any) -> CausalLM:
    """A 2-layer GQA decoder LM (dim 64, vocab 256) for tests and examples."""
    return CausalLM(configure(
        DecoderConfig, "decoder_tiny", overrides,
        dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, vocab_size=256, rope_base=10000.0,
    ))


@register_model(kind="decoder", modalities=("text",))
def qwen3_0_6b(**overrides: Any) -> CausalLM:
    """Qwen3-0.6B shapes: 28 layers, dim 1024, 16 q / 8 kv heads of 128, FFN 3072, tied embeddings."""
    return CausalLM(configure(
        DecoderConfig, "qwen3_0_6b", overrides,
        dim=1024, depth=28, num_heads=16, num_kv_heads=8, head_dim=128, mlp_hidden=3072, vocab_size=151936,
        tie_embeddings=True, rope_base=1_000_000.0,
    ))


@register_model(kind="decoder", modalities=("text",))
def qwen3_1_7b(**overrides: Any) -> CausalLM:
    """Qwen3-1.7B shapes: 28 layers, dim 2048, 16 q / 8 kv heads of 128, FFN 6144, tied embeddings."""
    return CausalLM(configure(
        DecoderConfig, "qwen3_1_7b", overrides,
        dim=2048, depth=28, num_heads=16, num_kv_heads=8, head_dim=128, mlp_hidden=6144, vocab_size=151936,
        tie_embeddings=True, rope_base=1_000_000.0,
    ))


@register_model(kind="decoder", modalities=("text",))
def qwen3_30b_a3b(**overrides: Any) -> CausalLM:
    """Qwen3-30B-A3B shapes (build on ``device="meta"``): 48 layers at dim 2048, 32 q / 4 kv heads of
    128, every MLP a MoE of 128 experts of FFN 768, top-8 renormalised softmax; untied embeddings."""
    config = configure(
        DecoderConfig, "qwen3_30b_a3b", overrides,
        dim=2048, depth=48, num_heads=32, num_kv_heads=4, head_dim=128, vocab_size=151936, rope_base=1_000_000.0,
    )
    moe = MoEConfig(dim=config.dim, num_experts=128, top_k=8, expert_hidden=768)
    return CausalLM(config, mlp_factory=lambda i: MoE(moe))
