"""Registered omni assemblies: tiny test variants of every fusion style, and the tiny Thinker-Talker.

Published-size presets (Qwen2.5-Omni-7B, Qwen3-Omni-30B-A3B) live in :mod:`omnikit.fusion.presets`;
the speech heads' tiny variants (``talker_tiny``, ``duplex_tiny``, ``turn_taking_tiny``) in
:mod:`omnikit.speech.presets` (re-exported here).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from omnikit.fusion.adapters import AudioAdapter, MLPProjector, ResampledAdapter, TubeletEncoder, VideoAdapter
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni import EarlyFusionOmni
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import QWEN2_5_OMNI
from omnikit.fusion.xattn import CrossAttentionOmni
from omnikit.layers.decoder import DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.registry import configure, create_model, register_model
from omnikit.speech.presets import duplex_tiny, talker_tiny, tiny_speech_codec, tiny_talker, turn_taking_tiny
from omnikit.speech.thinker_talker import ThinkerTalker

__all__ = [
    "QWEN2_5_OMNI_TINY",
    "TINY_MARKERS",
    "TINY_TOKENS",
    "duplex_tiny",
    "mlp_projector_tiny",
    "omni_early_small",
    "omni_early_tiny",
    "omni_xattn_tiny",
    "perceiver_adapter_tiny",
    "qformer_adapter_tiny",
    "talker_tiny",
    "thinker_talker_tiny",
    "thinker_tiny",
    "tiny_omni_prompt",
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
    *, bidirectional_media: bool = False, fps: float = 2.0, media_positions: bool = True, audio_in_video: bool = False,
    **overrides: Any
) -> EarlyFusionOmni:
    """Early fusion: tubelet video encoder + Qwen2.5-Omni-style audio encoder -> tiny Thinker (TMRoPE).

    ``media_positions``: video tokens carry a (t, h, w) and audio tokens a t sin-cos embedding (time in
    TMRoPE ids) in their values, not only in the rotary positions. ``audio_in_video``: audio item ``i`` is
    video ``i``'s soundtrack, interleaved with it on one TMRoPE time axis (see :class:`EarlyFusionOmni`)."""
    thinker = _tiny_thinker("omni_early_tiny", overrides, bidirectional_media)
    return _tiny_early(thinker, fps, media_positions, audio_in_video)


@register_model(kind="omni", modalities=("text", "video", "audio"))
def omni_early_small(**kwargs: Any) -> EarlyFusionOmni:
    """:func:`omni_early_tiny` with a 4-layer Thinker (2 in the tiny): on the relation task ``place`` of
    ``examples/relation_tasks.py`` it reached 0.95 after 175 steps with seeds 0 and 1, where the tiny took 475
    steps and did not reach it in 600 (docs/fusion.md). Same arguments as :func:`omni_early_tiny`."""
    return omni_early_tiny(**{"depth": 4, **kwargs})


def _tiny_adapters(dim: int, fps: float, media_positions: bool) -> tuple[VideoAdapter, AudioAdapter]:
    # "he": the conv stem's output is not swamped by the encoder's positions at initialisation (a short sound is
    # learnable from scratch; docs/fusion.md)
    audio = AudioAdapter(create_model("qwen2_5_omni_audio_tiny", stem_init="he"), dim, time_embedding=media_positions)
    video = VideoAdapter(TubeletEncoder(32, patch=4, tubelet=2), dim, fps=fps, position_embedding=media_positions)
    return video, audio


def _tiny_early(
    thinker: Thinker, fps: float = 2.0, media_positions: bool = False, audio_in_video: bool = False
) -> EarlyFusionOmni:
    video, audio = _tiny_adapters(thinker.config.dim, fps, media_positions)
    return EarlyFusionOmni(thinker, video=video, audio=audio, scheme=QWEN2_5_OMNI_TINY, audio_in_video=audio_in_video)



@register_model(kind="omni", modalities=("text", "video", "audio"))
def omni_xattn_tiny(
    *, every: int = 2, num_latents: int | None = None, media_dim: int = 32, only_latest: bool = False,
    fps: float = 2.0, media_positions: bool = True, **overrides: Any
) -> CrossAttentionOmni:
    """Cross-attention fusion: tubelet video + audio encoders -> gated xattn in a tiny LM.

    The text attends to every encoder token (Llama-3.2-Vision style); ``num_latents=4`` puts a Perceiver
    resampler of 4 latents per item in between (Flamingo style; it learned the relation tasks of
    ``examples/relation_tasks.py`` far slower, see docs/fusion.md). ``media_positions``: as in
    :func:`omni_early_tiny` (cross-attention reads a set: without them it cannot tell where or when a token was)."""
    config = configure(DecoderConfig, "omni_xattn_tiny", overrides, **{**_TINY_THINKER, "mrope_sections": None})
    video, audio = _tiny_adapters(media_dim, fps, media_positions)
    return CrossAttentionOmni(
        CausalLM(config), media_tokens=TINY_TOKENS, video=video, audio=audio, media_dim=media_dim, every=every,
        num_latents=num_latents, only_latest=only_latest,
    )


@register_model(kind="omni", modalities=("text", "video", "audio", "speech"))
def thinker_talker_tiny(*, frames_per_token: int = 2, strategy: str = "delay", **overrides: Any) -> ThinkerTalker:
    """Early-fusion tiny Thinker (tied embeddings) + tiny Talker + the audio family's causal SEANet codec
    (16 kHz, 50 frames/s, 4 codebooks of 64), which decodes the speech chunk by chunk."""
    thinker = _tiny_thinker("thinker_talker_tiny", {"tie_embeddings": True, **overrides})
    talker = tiny_talker("thinker_talker_tiny", {"strategy": strategy, "thinker_dim": thinker.config.dim})
    codec = tiny_speech_codec(talker.config.num_codebooks, talker.config.codebook_size)
    return ThinkerTalker(_tiny_early(thinker), talker, codec, frames_per_token=frames_per_token)


@register_model(kind="adapter", modalities=("video", "image", "audio"))
def mlp_projector_tiny(*, in_dim: int = 24, out_dim: int = 32) -> MLPProjector:
    """LLaVA's MLP projector from 24-wide encoder tokens to a 32-wide language model."""
    return MLPProjector(in_dim, out_dim)


@register_model(kind="adapter", modalities=("video", "image"))
def qformer_adapter_tiny(*, dim: int = 64, **overrides: Any) -> ResampledAdapter:
    """Video-LLaMA's adapter: the tiny Q-Former (8 queries over 24-wide tokens) projected to width ``dim``."""
    return ResampledAdapter(create_model("qformer_tiny", **overrides), dim)


@register_model(kind="adapter", modalities=("video", "image", "audio"))
def perceiver_adapter_tiny(*, dim: int = 64, **overrides: Any) -> ResampledAdapter:
    """A Perceiver resampler (8 latents over 24-wide tokens) projected to width ``dim``."""
    return ResampledAdapter(create_model("perceiver_resampler_tiny", **overrides), dim)


def tiny_omni_prompt(g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A prompt for the tiny omni models: a 4-frame 16x16 clip (2 x 4 x 4 video tokens), 0.64 s of 16-mel
    audio (16 tokens) and a 6-token question -> ``input_ids (1, T)`` and the media keyword arguments."""
    frames = torch.rand(1, 4, 3, 16, 16, generator=g)
    mels = torch.randn(1, 16, 64, generator=g)
    m = TINY_MARKERS
    question = torch.randint(8, 256, (6,), generator=g).tolist()
    ids = ([m["vision_start"]] + [TINY_TOKENS.video] * 32 + [m["vision_end"]]
           + [m["audio_start"]] + [TINY_TOKENS.audio] * 16 + [m["audio_end"]] + question)
    return torch.tensor([ids]), {"frames": frames, "audio_features": mels, "audio_lengths": torch.tensor([64])}
