"""Published-size omni presets: Qwen2.5-Omni-7B and Qwen3-Omni-30B-A3B Thinker and Talker shapes.

They build on ``device="meta"`` for counting (``omnikit.count_parameters``); see
``docs/thinker_talker.md`` for the counts next to the reference ones. The speech decoders
(Qwen2.5-Omni's DiT + BigVGAN token2wav, Qwen3-Omni's Code2Wav) are not part of these presets.
Vision towers are the vision family's :class:`VideoViT` (Qwen2.5-Omni: the Qwen2-VL-sized
preset; full attention instead of windows, GELU instead of SwiGLU MLP of nearly equal size);
Qwen3-Omni's is its published tower (:class:`~omnikit.vision.Qwen3ViT`, deepstack mergers included).
"""

from __future__ import annotations

import math
from typing import Any

from omnikit.fusion.adapters import AudioAdapter, VideoAdapter
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni import EarlyFusionOmni
from omnikit.fusion.qwen3_omni_talker import Qwen3OmniTalker, Qwen3OmniTalkerConfig
from omnikit.fusion.talker import Talker, TalkerConfig
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import QWEN2_5_OMNI, QWEN3_OMNI
from omnikit.layers.decoder import DecoderConfig
from omnikit.moe import MoE, MoEConfig
from omnikit.registry import configure, create_model, register_model
from omnikit.vision.video_vit import VideoViT

__all__ = ["QWEN_MEDIA_TOKENS", "qwen2_5_omni_7b_talker", "qwen2_5_omni_7b_thinker", "qwen3_omni_30b_a3b_talker",
           "qwen3_omni_30b_a3b_thinker"]

#: Qwen2.5-Omni / Qwen3-Omni placeholder ids (image, video, audio).
QWEN_MEDIA_TOKENS = MediaTokens(image=151655, video=151656, audio=151646)


def _vit_adapter(vit: VideoViT, dim: int) -> VideoAdapter:
    cfg = vit.config
    pt, ph, pw = cfg.patch
    m = cfg.merge_size or 1
    grid = lambda shape: (math.ceil(shape[1] / pt), shape[3] // (ph * m), shape[4] // (pw * m))
    return VideoAdapter(vit, dim, project=False, grid=grid, frames_per_step=pt)


@register_model(kind="omni", modalities=("text", "image", "video", "audio"))
def qwen2_5_omni_7b_thinker(**overrides: Any) -> EarlyFusionOmni:
    """Qwen2.5-Omni-7B Thinker: Qwen2.5-7B decoder (M-RoPE 16/24/24) + audio tower + ViT with 2x2 merger."""
    thinker = Thinker(configure(
        DecoderConfig, "qwen2_5_omni_7b_thinker", overrides,
        dim=3584, depth=28, num_heads=28, num_kv_heads=4, head_dim=128, mlp_hidden=18944, vocab_size=152064,
        qkv_bias=True, qk_norm=False, rope_base=1_000_000.0, mrope_sections=QWEN2_5_OMNI.sections,
    ), media_tokens=QWEN_MEDIA_TOKENS)
    audio = AudioAdapter(create_model("qwen2_5_omni_audio"), 3584, project=False)
    video = _vit_adapter(create_model("video_vit_qwen2vl"), 3584)
    return EarlyFusionOmni(thinker, video=video, audio=audio, scheme=QWEN2_5_OMNI)


@register_model(kind="talker", modalities=("text", "speech"))
def qwen2_5_omni_7b_talker(**overrides: Any) -> Talker:
    """Qwen2.5-Omni-7B Talker: 24 layers of width 896, one codebook of 8448 ids, conditioned on 3584-d states."""
    return Talker(configure(
        TalkerConfig, "qwen2_5_omni_7b_talker", overrides,
        dim=896, depth=24, num_heads=12, num_kv_heads=4, head_dim=128, mlp_hidden=4864, thinker_dim=3584,
        num_codebooks=1, codebook_size=8446, strategy="delay", embed_in_thinker_space=True, rope_base=1_000_000.0,
    ))


@register_model(kind="omni", modalities=("text", "image", "video", "audio"))
def qwen3_omni_30b_a3b_thinker(**overrides: Any) -> EarlyFusionOmni:
    """Qwen3-Omni-30B-A3B Thinker: 48 MoE layers (128 experts, top-8), interleaved M-RoPE 24/20/20, AuT and the
    Qwen3-Omni vision tower with its deepstack mergers (their features are not injected by this assembly)."""
    config = configure(
        DecoderConfig, "qwen3_omni_30b_a3b_thinker", overrides,
        dim=2048, depth=48, num_heads=32, num_kv_heads=4, head_dim=128, vocab_size=152064, qk_norm=True,
        rope_base=1_000_000.0, mrope_sections=QWEN3_OMNI.sections, mrope_interleaved=True,
    )
    moe = MoEConfig(dim=config.dim, num_experts=128, top_k=8, expert_hidden=768)
    thinker = Thinker(config, lambda _: MoE(moe), media_tokens=QWEN_MEDIA_TOKENS)
    audio = AudioAdapter(create_model("qwen3_omni_aut", output_dim=2048), 2048, project=False)
    vit = create_model("qwen3_vit_omni_30b_a3b")
    return EarlyFusionOmni(thinker, video=_vit_adapter(vit, 2048), audio=audio, scheme=QWEN3_OMNI)


@register_model(kind="talker", modalities=("text", "speech"))
def qwen3_omni_30b_a3b_talker(**overrides: Any) -> Qwen3OmniTalker:
    """Qwen3-Omni-30B-A3B Talker as published: 20 MoE layers of width 1024 (128 experts of 384, top-6, gated
    shared expert of 768), codec vocabulary 3072, and a 5-layer code predictor for codebooks 1..15 of 2048."""
    return Qwen3OmniTalker(configure(
        Qwen3OmniTalkerConfig, "qwen3_omni_30b_a3b_talker", overrides,
        dim=1024, depth=20, num_heads=16, num_kv_heads=2, head_dim=128, thinker_dim=2048,
    ))
