"""Registered speech heads: tiny test variants (the published Talkers are registered with the published
Thinkers in :mod:`omnikit.fusion.presets`, since they share the Thinkers' TMRoPE schemes).

The Thinker-Talker assembly (``thinker_talker_tiny``) needs an omni model and is registered with
the fusion family (:mod:`omnikit.fusion.models`), which builds on the tiny Talker made here.
"""

from __future__ import annotations

from typing import Any

from omnikit.audio.codec import SEANetCodec
from omnikit.audio.mimi import MimiConfig
from omnikit.layers.decoder import DecoderConfig
from omnikit.registry import configure, create_model, register_model
from omnikit.speech.duplex import DuplexConfig, DuplexModel
from omnikit.speech.moshi import Moshi, MoshiConfig
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3OmniTalkerConfig
from omnikit.speech.talker import Talker, TalkerConfig
from omnikit.speech.turn_taking import TurnTakingHead

__all__ = [
    "duplex_tiny",
    "moshi",
    "moshi_tiny",
    "qwen3_omni_talker_tiny",
    "talker_tiny",
    "tiny_speech_codec",
    "tiny_talker",
    "turn_taking_tiny",
]


def tiny_talker(name: str, overrides: dict[str, Any]) -> Talker:
    """The tiny Talker (dim 48, 2 layers, 4 codebooks of 64, 64-d Thinker states) with ``overrides``."""
    return Talker(configure(
        TalkerConfig, name, overrides, dim=48, depth=2, num_heads=4, thinker_dim=64, num_codebooks=4,
        codebook_size=64, strategy="delay", predictor_dim=32, predictor_depth=1, predictor_heads=2,
    ))


@register_model(kind="talker", modalities=("text", "speech"))
def talker_tiny(**overrides: Any) -> Talker:
    """A 2-layer Talker (4 codebooks of 64); ``strategy="delay" | "depth" | "mtp"``."""
    return tiny_talker("talker_tiny", overrides)


def tiny_speech_codec(
    num_codebooks: int, codebook_size: int, *, sample_rate: int = 16000, ratios: tuple[int, ...] = (8, 5, 4, 2)
) -> SEANetCodec:
    """The tiny causal SEANet codec (``seanet_codec_tiny`` widths) with another code layout and hop:
    ``prod(ratios)`` samples per frame (default 320: 50 frames/s at 16 kHz)."""
    return create_model("seanet_codec_tiny", sample_rate=sample_rate, ratios=ratios,
                        num_quantizers=num_codebooks, codebook_size=codebook_size)


@register_model(kind="omni", modalities=("text", "speech"))
def duplex_tiny(**overrides: Any) -> DuplexModel:
    """A full-duplex model (Moshi layout): 2-layer temporal transformer (dim 64), 1-layer depth transformer
    (dim 32), text vocab 256 (pad 0), 4 codebooks of 64 per speaker, delays (0, 1, 1, 1), 12.5 steps/s."""
    return DuplexModel(configure(
        DuplexConfig, "duplex_tiny", overrides, dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128,
        text_vocab=256, text_pad_id=0, num_codebooks=4, codebook_size=64, delays=(0, 1, 1, 1), depth_dim=32,
        depth_layers=1, depth_heads=2, depth_mlp_hidden=64,
    ))


@register_model(kind="omni", modalities=("text", "speech"))
def moshi(**overrides: Any) -> Moshi:
    """Kyutai's Moshi as published (moshiko / moshika, transformers' ``MoshiForConditionalGeneration``): a
    32-layer temporal transformer (dim 4096), a 6-layer per-codebook depth decoder (dim 1024), text vocab
    32000, 8 codebooks of 2048 per speaker, the published Mimi as ``audio_encoder``."""
    return Moshi(configure(
        MoshiConfig, "moshi", overrides,
        temporal=DecoderConfig(dim=4096, depth=32, num_heads=32, mlp_hidden=11264, mlp="swiglu_fused",
                               norm_eps=1e-8, qk_norm=False, rope_base=10000.0, sliding_window=3000),
        predictor=DecoderConfig(dim=1024, depth=6, num_heads=16, mlp_hidden=2816, norm_eps=1e-8),
        text_vocab=32000, num_codebooks=8, codebook_size=2048, frame_rate=12.5, codec=MimiConfig(),
    ))


@register_model(kind="omni", modalities=("text", "speech"))
def moshi_tiny(**overrides: Any) -> Moshi:
    """A tiny Moshi (the published layout at test size): 2-layer temporal transformer (dim 32, fused gated
    MLP, no qk-norm), 1-layer per-codebook depth decoder (dim 16), text vocab 40, 3 codebooks of 16 per
    speaker and ``mimi_tiny`` (50 frames/s) as ``audio_encoder``."""
    return Moshi(configure(
        MoshiConfig, "moshi_tiny", overrides,
        temporal=DecoderConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=32, mlp="swiglu_fused",
                               norm_eps=1e-8, qk_norm=False, rope_base=10000.0, sliding_window=64),
        predictor=DecoderConfig(dim=16, depth=1, num_heads=2, mlp_hidden=24, norm_eps=1e-8),
        text_vocab=40, num_codebooks=3, codebook_size=16, frame_rate=50.0,
        codec=create_model("mimi_tiny", device="meta").config,
    ))


@register_model(kind="head", modalities=("audio",))
def turn_taking_tiny(*, dim: int = 24, hidden: int = 32, kernel_size: int = 5) -> TurnTakingHead:
    """A causal turn-taking head over 24-d audio states (the tiny audio encoder's width)."""
    return TurnTakingHead(dim, hidden=hidden, kernel_size=kernel_size)


@register_model(kind="talker", modalities=("text", "speech"))
def qwen3_omni_talker_tiny(**overrides: Any) -> Qwen3OmniTalker:
    """A tiny Qwen3-Omni MoE Talker (2 MoE layers of 4 experts, 4 codebooks, 2-layer code predictor)."""
    return Qwen3OmniTalker(configure(
        Qwen3OmniTalkerConfig, "qwen3_omni_talker_tiny", overrides,
        dim=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8, thinker_dim=24, vocab_size=40, num_experts=4,
        top_k=2, expert_hidden=16, shared_hidden=24, projection_hidden=20, mrope_sections=(2, 1, 1), num_codebooks=4,
        codec_bos_id=37, predictor_depth=2, predictor_heads=4, predictor_kv_heads=2, predictor_head_dim=8,
        predictor_mlp_hidden=40, predictor_vocab_size=32,
    ))
