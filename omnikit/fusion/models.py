"""Registered omni assemblies: tiny test variants of every fusion style.

Published-size presets (Qwen2.5-Omni-7B, Qwen3-Omni-30B-A3B) live in :mod:`omnikit.fusion.presets`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omnikit.audio.codec import SEANetCodec
from omnikit.fusion.adapters import AudioAdapter, TubeletEncoder, VideoAdapter
from omnikit.fusion.duplex import DuplexConfig, DuplexModel
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni import EarlyFusionOmni
from omnikit.fusion.talker import Talker, TalkerConfig
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.thinker_talker import ThinkerTalker
from omnikit.fusion.tmrope import QWEN2_5_OMNI
from omnikit.fusion.turn_taking import TurnTakingHead
from omnikit.fusion.xattn import CrossAttentionOmni
from omnikit.layers.decoder import DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.registry import configure, create_model, register_model

__all__ = [
    "QWEN2_5_OMNI_TINY",
    "TINY_MARKERS",
    "TINY_TOKENS",
    "duplex_tiny",
    "omni_early_tiny",
    "omni_xattn_tiny",
    "talker_tiny",
    "thinker_talker_tiny",
    "thinker_tiny",
    "tiny_speech_codec",
    "turn_taking_tiny",
]

#: Placeholder ids of the tiny models (vocab 256); 4..7 are vision/audio start/end markers.
TINY_TOKENS = MediaTokens(image=1, video=2, audio=3)
TINY_MARKERS = {"vision_start": 4, "vision_end": 5, "audio_start": 6, "audio_end": 7}

#: The Qwen2.5-Omni scheme with the tiny models' rotary sections.
QWEN2_5_OMNI_TINY = dataclasses.replace(QWEN2_5_OMNI, sections=(2, 3, 3))

_TINY_THINKER = dict(
    dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, vocab_size=256, rope_base=10000.0,
    mrope_sections=(2, 3, 3),
)


def _tiny_thinker(name: str, overrides: dict[str, Any], bidirectional_media: bool = False) -> Thinker:
    return Thinker(configure(DecoderConfig, name, overrides, **_TINY_THINKER), media_tokens=TINY_TOKENS,
                   bidirectional_media=bidirectional_media)


@register_model(kind="decoder", modalities=("text",))
def thinker_tiny(**overrides: Any) -> Thinker:
    """A 2-layer M-RoPE Thinker (dim 64, vocab 256, placeholders 1-3) for tests."""
    return _tiny_thinker("thinker_tiny", overrides)


@register_model(kind="omni", modalities=("text", "video", "audio"))
def omni_early_tiny(
    *, bidirectional_media: bool = False, fps: float = 2.0, media_positions: bool = True, **overrides: Any
) -> EarlyFusionOmni:
    """Early fusion: tubelet video encoder + Qwen2.5-Omni-style audio encoder -> tiny Thinker (TMRoPE).

    ``media_positions``: video tokens carry a (t, h, w) and audio tokens a t sin-cos embedding (time in
    TMRoPE ids) in their values, not only in the rotary positions."""
    return _tiny_early(_tiny_thinker("omni_early_tiny", overrides, bidirectional_media), fps, media_positions)


def _tiny_adapters(dim: int, fps: float, media_positions: bool) -> tuple[VideoAdapter, AudioAdapter]:
    audio = AudioAdapter(create_model("qwen2_5_omni_audio_tiny"), dim, time_embedding=media_positions)
    video = VideoAdapter(TubeletEncoder(32, patch=4, tubelet=2), dim, fps=fps, position_embedding=media_positions)
    return video, audio


def _tiny_early(thinker: Thinker, fps: float = 2.0, media_positions: bool = False) -> EarlyFusionOmni:
    video, audio = _tiny_adapters(thinker.config.dim, fps, media_positions)
    return EarlyFusionOmni(thinker, video=video, audio=audio, scheme=QWEN2_5_OMNI_TINY)



@register_model(kind="omni", modalities=("text", "video", "audio"))
def omni_xattn_tiny(
    *, every: int = 2, num_latents: int = 4, media_dim: int = 32, only_latest: bool = False, fps: float = 2.0,
    media_positions: bool = True, **overrides: Any
) -> CrossAttentionOmni:
    """Cross-attention fusion: tubelet video + audio encoders -> resampler -> gated xattn in a tiny LM.

    ``media_positions``: as in :func:`omni_early_tiny` (the resampler is blind to token order without it)."""
    config = configure(DecoderConfig, "omni_xattn_tiny", overrides, **{**_TINY_THINKER, "mrope_sections": None})
    video, audio = _tiny_adapters(media_dim, fps, media_positions)
    return CrossAttentionOmni(
        CausalLM(config), media_tokens=TINY_TOKENS, video=video, audio=audio, media_dim=media_dim, every=every,
        num_latents=num_latents, only_latest=only_latest,
    )


def _tiny_talker(name: str, overrides: dict[str, Any]) -> Talker:
    return Talker(configure(
        TalkerConfig, name, overrides, dim=48, depth=2, num_heads=4, thinker_dim=64, num_codebooks=4,
        codebook_size=64, strategy="delay", predictor_dim=32, predictor_depth=1, predictor_heads=2,
    ))


@register_model(kind="talker", modalities=("text", "speech"))
def talker_tiny(**overrides: Any) -> Talker:
    """A 2-layer Talker (4 codebooks of 64); ``strategy="delay" | "depth" | "mtp"``."""
    return _tiny_talker("talker_tiny", overrides)


@register_model(kind="omni", modalities=("text", "video", "audio", "speech"))
def thinker_talker_tiny(*, frames_per_token: int = 2, strategy: str = "delay", **overrides: Any) -> ThinkerTalker:
    """Early-fusion tiny Thinker (tied embeddings) + tiny Talker + the audio family's causal SEANet codec
    (16 kHz, 50 frames/s, 4 codebooks of 64), which decodes the speech chunk by chunk."""
    thinker = _tiny_thinker("thinker_talker_tiny", {"tie_embeddings": True, **overrides})
    talker = _tiny_talker("thinker_talker_tiny", {"strategy": strategy, "thinker_dim": thinker.config.dim})
    codec = tiny_speech_codec(talker.config.num_codebooks, talker.config.codebook_size)
    return ThinkerTalker(_tiny_early(thinker), talker, codec, frames_per_token=frames_per_token)


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


@register_model(kind="adapter", modalities=("audio",))
def turn_taking_tiny(*, dim: int = 24, hidden: int = 32, kernel_size: int = 5) -> TurnTakingHead:
    """A causal turn-taking head over 24-d audio states (the tiny audio encoder's width)."""
    return TurnTakingHead(dim, hidden=hidden, kernel_size=kernel_size)
