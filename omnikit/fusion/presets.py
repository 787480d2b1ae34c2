"""Published-size omni presets: Qwen2.5-Omni-7B and Qwen3-Omni-30B-A3B Thinker and Talker shapes.

They build on ``device="meta"`` for counting (``omnikit.count_parameters``); see
``docs/thinker_talker.md`` for the counts next to the reference ones. The speech decoders
(Qwen2.5-Omni's DiT + BigVGAN token2wav, Qwen3-Omni's Code2Wav) are not part of these presets.
The Qwen2.5-Omni presets are the published structures (:class:`OmniThinker` with the
Qwen2.5-VL window-attention vision tower, :class:`OmniTalker`), the ones ``load_hf`` fills.
The Qwen3-Omni vision tower is the vision family's :class:`VideoViT` (without the deepstack mergers).
"""

from __future__ import annotations

import math
from typing import Any

from omnikit.fusion.adapters import AudioAdapter, VideoAdapter
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni import EarlyFusionOmni
from omnikit.fusion.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.talker import Talker, TalkerConfig
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import QWEN2_5_OMNI, QWEN3_OMNI
from omnikit.layers.decoder import DecoderConfig
from omnikit.moe import MoE, MoEConfig
from omnikit.registry import configure, create_model, register_model
from omnikit.vision.video_vit import VideoViT, VideoViTConfig

__all__ = ["QWEN_MEDIA_TOKENS", "qwen2_5_omni_7b_talker", "qwen2_5_omni_7b_thinker", "qwen2_5_omni_talker_tiny",
           "qwen3_omni_30b_a3b_talker", "qwen3_omni_30b_a3b_thinker"]

#: Qwen2.5-Omni / Qwen3-Omni placeholder ids (image, video, audio).
QWEN_MEDIA_TOKENS = MediaTokens(image=151655, video=151656, audio=151646)


def _vit_adapter(vit: VideoViT, dim: int) -> VideoAdapter:
    cfg = vit.config
    pt, ph, pw = cfg.patch
    m = cfg.merge_size or 1
    grid = lambda shape: (math.ceil(shape[1] / pt), shape[3] // (ph * m), shape[4] // (pw * m))
    return VideoAdapter(vit, dim, project=False, grid=grid, frames_per_step=pt)


@register_model(kind="omni", modalities=("text", "image", "video", "audio"))
def qwen2_5_omni_7b_thinker(**overrides: Any) -> OmniThinker:
    """Qwen2.5-Omni-7B Thinker as published: Qwen2.5-7B text model (q/k/v bias, M-RoPE 16/24/24), the
    windowed audio tower (1280 x 32 -> 3584) and the Qwen2.5-VL vision tower (1280 x 32, windows of 112 px,
    full attention at blocks 7/15/23/31, SwiGLU 3420, 2x2 merger -> 3584). Overrides apply to the text model."""
    text = Thinker(configure(
        DecoderConfig, "qwen2_5_omni_7b_thinker", overrides,
        dim=3584, depth=28, num_heads=28, num_kv_heads=4, head_dim=128, mlp_hidden=18944, vocab_size=152064,
        qkv_bias=True, qk_norm=False, rope_base=1_000_000.0, mrope_sections=QWEN2_5_OMNI.sections,
    ), media_tokens=QWEN_MEDIA_TOKENS)
    return OmniThinker(text, audio_encoder=create_model("qwen2_5_omni_audio"),
                       vision_encoder=create_model("qwen2_5_omni_vision"), scheme=QWEN2_5_OMNI)


def _qwen2_5_omni_talker(name: str, overrides: dict[str, Any], thinker_dim: int, **shape: Any) -> OmniTalker:
    decoder = configure(DecoderConfig, name, overrides, qkv_bias=True, qk_norm=False, **shape)
    return OmniTalker(OmniTalkerConfig(decoder, thinker_dim))


@register_model(kind="talker", modalities=("text", "speech"))
def qwen2_5_omni_7b_talker(**overrides: Any) -> OmniTalker:
    """Qwen2.5-Omni-7B Talker as published: 24 Qwen2 layers of width 896 (12/4 heads of 128, FFN 4864,
    M-RoPE 16/24/24) over 3584-wide Thinker-space inputs, 8448 codec ids."""
    return _qwen2_5_omni_talker(
        "qwen2_5_omni_7b_talker", overrides, 3584, dim=896, depth=24, num_heads=12, num_kv_heads=4, head_dim=128,
        mlp_hidden=4864, vocab_size=8448, rope_base=1_000_000.0, mrope_sections=QWEN2_5_OMNI.sections,
    )


@register_model(kind="talker", modalities=("text", "speech"))
def qwen2_5_omni_talker_tiny(**overrides: Any) -> OmniTalker:
    """A tiny Qwen2.5-Omni-style Talker: 2 layers of width 32 (4/2 heads of 8, M-RoPE 1/1/2) over 48-wide
    inputs, 40 codec ids."""
    return _qwen2_5_omni_talker(
        "qwen2_5_omni_talker_tiny", overrides, 48, dim=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8,
        mlp_hidden=64, vocab_size=40, rope_base=10_000.0, mrope_sections=(1, 1, 2),
    )


@register_model(kind="omni", modalities=("text", "image", "video", "audio"))
def qwen3_omni_30b_a3b_thinker(**overrides: Any) -> EarlyFusionOmni:
    """Qwen3-Omni-30B-A3B Thinker: 48 MoE layers (128 experts, top-8), interleaved M-RoPE 24/20/20, AuT, ViT."""
    config = configure(
        DecoderConfig, "qwen3_omni_30b_a3b_thinker", overrides,
        dim=2048, depth=48, num_heads=32, num_kv_heads=4, head_dim=128, vocab_size=151936, qk_norm=True,
        rope_base=1_000_000.0, mrope_sections=QWEN3_OMNI.sections, mrope_interleaved=True,
    )
    moe = MoEConfig(dim=config.dim, num_experts=128, top_k=8, expert_hidden=768)
    thinker = Thinker(config, lambda _: MoE(moe), media_tokens=QWEN_MEDIA_TOKENS)
    audio = AudioAdapter(create_model("qwen3_omni_aut", output_dim=2048), 2048, project=False)
    vit = VideoViT(VideoViTConfig(dim=1152, depth=27, num_heads=16, patch=(2, 16, 16), mlp_ratio=4304 / 1152,
                                  out_dim=2048))
    return EarlyFusionOmni(thinker, video=_vit_adapter(vit, 2048), audio=audio, scheme=QWEN3_OMNI)


@register_model(kind="talker", modalities=("text", "speech"))
def qwen3_omni_30b_a3b_talker(**overrides: Any) -> Talker:
    """Qwen3-Omni-30B-A3B Talker: 20 MoE layers (128 experts of 384, top-6, gated shared expert of 768),
    codebook 0 from the Talker and 15 more from a 5-layer code predictor (MTP), 16 codebooks of 2048."""
    return Talker(configure(
        TalkerConfig, "qwen3_omni_30b_a3b_talker", overrides,
        dim=1024, depth=20, num_heads=16, num_kv_heads=2, thinker_dim=2048, num_codebooks=16,
        codebook_size=2048, strategy="mtp", num_experts=128, top_k=6, expert_hidden=384, shared_hidden=768,
        predictor_dim=1024, predictor_depth=5, predictor_heads=16, predictor_kv_heads=8, predictor_head_dim=128,
        predictor_mlp_hidden=3072, rope_base=1_000_000.0,
    ))

