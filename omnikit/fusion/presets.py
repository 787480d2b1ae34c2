"""Published omni presets: Qwen2.5-Omni-7B and Qwen3-Omni-30B-A3B Thinkers and Talkers.

They build on ``device="meta"`` for counting (``omnikit.count_parameters``); see
``docs/thinker_talker.md`` for the counts next to the reference ones. Qwen2.5-Omni's
DiT + BigVGAN token2wav is not implemented; Qwen3-Omni's Code2Wav is ``code2wav_qwen3_omni``.
The Qwen2.5-Omni presets are the published structures (:class:`OmniThinker` with the
Qwen2.5-VL window-attention vision tower, :class:`OmniTalker`), the ones ``load_hf`` fills; so are
the Qwen3-Omni ones (:class:`Qwen3OmniThinker` with the deepstack vision tower and the MoE
language model, :class:`Qwen3OmniTalker` with its code predictor).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from omnikit.fusion.deepstack_thinker import DeepstackThinker
from omnikit.fusion.gemma4_omni import Gemma4Omni
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.qwen3_omni_thinker import Qwen3OmniThinker
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import QWEN2_5_OMNI, QWEN3_OMNI
from omnikit.layers.decoder import DecoderConfig
from omnikit.moe import MoE, MoEConfig
from omnikit.registry import configure, create_model, register_model
from omnikit.speech.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3OmniTalkerConfig

__all__ = ["QWEN_MEDIA_TOKENS", "TINY_OMNI_MARKERS", "TINY_OMNI_TOKENS", "gemma4_omni_tiny", "qwen2_5_omni_7b_talker",
           "qwen2_5_omni_7b_thinker", "qwen2_5_omni_talker_tiny", "qwen2_5_omni_thinker_tiny",
           "qwen3_omni_30b_a3b_talker", "qwen3_omni_30b_a3b_thinker", "qwen3_omni_thinker_tiny"]

#: Qwen2.5-Omni placeholder ids (image, video, audio); Qwen3-Omni's audio id is 151675.
QWEN_MEDIA_TOKENS = MediaTokens(image=151655, video=151656, audio=151646)
#: Placeholder and marker ids of the tiny omni Thinkers (the top of their 128-id vocabulary).
TINY_OMNI_TOKENS = MediaTokens(image=121, video=122, audio=120)
TINY_OMNI_MARKERS = {"vision_start_token_id": 123, "vision_end_token_id": 124, "audio_start_token_id": 125,
                     "audio_end_token_id": 126}


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


@register_model(kind="omni", modalities=("text", "image", "video", "audio"))
def qwen2_5_omni_thinker_tiny(**overrides: Any) -> OmniThinker:
    """A tiny Qwen2.5-Omni Thinker of the published structure: 2 Qwen2 layers of width 32 (4/2 heads of 8,
    M-RoPE 1/1/2), vocabulary 128, the tiny windowed audio tower and window-attention vision tower (both -> 32).
    Overrides apply to the text model."""
    text = Thinker(configure(
        DecoderConfig, "qwen2_5_omni_thinker_tiny", overrides,
        dim=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_hidden=64, vocab_size=128, qkv_bias=True,
        qk_norm=False, rope_base=10_000.0, mrope_sections=(1, 1, 2),
    ), media_tokens=TINY_OMNI_TOKENS)
    return OmniThinker(text, audio_encoder=create_model("qwen2_5_omni_audio_tiny", output_dim=32),
                       vision_encoder=create_model("qwen2_5_omni_vision_tiny", out_dim=32),
                       scheme=replace(QWEN2_5_OMNI, sections=(1, 1, 2)), marker_tokens=TINY_OMNI_MARKERS)


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
def qwen3_omni_30b_a3b_thinker(**overrides: Any) -> Qwen3OmniThinker:
    """Qwen3-Omni-30B-A3B Thinker as published: 48 MoE layers of width 2048 (128 experts of 768, top-8),
    interleaved M-RoPE 24/20/20, vocabulary 152064, AuT (1280 x 32 -> 2048) and the vision tower (1152 x 27 -> 2048)
    whose deepstack features enter the first three layers. Overrides apply to the text model."""
    config = configure(
        DecoderConfig, "qwen3_omni_30b_a3b_thinker", overrides,
        dim=2048, depth=48, num_heads=32, num_kv_heads=4, head_dim=128, vocab_size=152064, qk_norm=True,
        rope_base=1_000_000.0, mrope_sections=QWEN3_OMNI.sections, mrope_interleaved=True,
    )
    moe = MoEConfig(dim=config.dim, num_experts=128, top_k=8, expert_hidden=768)
    text = DeepstackThinker(config, lambda _: MoE(moe), media_tokens=MediaTokens(image=151655, video=151656,
                                                                                  audio=151675))
    markers = {"vision_start_token_id": 151652, "vision_end_token_id": 151653, "audio_start_token_id": 151669,
               "audio_end_token_id": 151670}
    return Qwen3OmniThinker(text, audio_encoder=create_model("qwen3_omni_aut", output_dim=2048),
                            vision_encoder=create_model("qwen3_vit_omni_30b_a3b"), scheme=QWEN3_OMNI,
                            marker_tokens=markers)


@register_model(kind="omni", modalities=("text", "image", "video", "audio"))
def qwen3_omni_thinker_tiny(**overrides: Any) -> Qwen3OmniThinker:
    """A tiny Qwen3-Omni Thinker of the published structure: 3 MoE layers of width 32 (4 experts of 16, top-2,
    4/2 heads of 8, qk-norm, interleaved M-RoPE 2/1/1), vocabulary 128, the tiny AuT (with the published 100-frame
    chunks) and the tiny vision tower with deepstack mergers after blocks 0 and 1 (both -> 32). Overrides apply to
    the text model."""
    config = configure(
        DecoderConfig, "qwen3_omni_thinker_tiny", overrides,
        dim=32, depth=3, num_heads=4, num_kv_heads=2, head_dim=8, vocab_size=128, qk_norm=True, rope_base=10_000.0,
        mrope_sections=(2, 1, 1), mrope_interleaved=True,
    )
    moe = MoEConfig(dim=config.dim, num_experts=4, top_k=2, expert_hidden=16)
    text = DeepstackThinker(config, lambda _: MoE(moe), media_tokens=TINY_OMNI_TOKENS)
    audio = create_model("qwen3_omni_aut_tiny", output_dim=config.dim, n_window=50)  # 100-frame chunks, as published
    return Qwen3OmniThinker(text, audio_encoder=audio,
                            vision_encoder=create_model("qwen3_vit_tiny", out_dim=config.dim, deepstack_indexes=(0, 1)),
                            scheme=replace(QWEN3_OMNI, sections=(2, 1, 1)), marker_tokens=TINY_OMNI_MARKERS)


@register_model(kind="talker", modalities=("text", "speech"))
def qwen3_omni_30b_a3b_talker(**overrides: Any) -> Qwen3OmniTalker:
    """Qwen3-Omni-30B-A3B Talker as published: 20 MoE layers of width 1024 (128 experts of 384, top-6, gated
    shared expert of 768), codec vocabulary 3072, and a 5-layer code predictor for codebooks 1..15 of 2048."""
    return Qwen3OmniTalker(configure(
        Qwen3OmniTalkerConfig, "qwen3_omni_30b_a3b_talker", overrides,
        dim=1024, depth=20, num_heads=16, num_kv_heads=2, head_dim=128, thinker_dim=2048,
    ))


@register_model(kind="omni", modalities=("text", "image", "audio"))
def gemma4_omni_tiny(**overrides: Any) -> Gemma4Omni:
    """A tiny Gemma 4 of the published structure: the ``gemma4_tiny`` language model (every text feature:
    per-layer embeddings, KV sharing, K = V, MoE beside the MLP, softcap), the tiny vision and audio towers
    (both -> 32), bidirectional attention over an image on sliding layers. Overrides apply to the text model."""
    tokens = TINY_OMNI_TOKENS
    return Gemma4Omni(create_model("gemma4_tiny", **overrides), create_model("gemma4_vision_tiny"),
                      create_model("gemma4_audio_tiny"), image_token_id=tokens.image, audio_token_id=tokens.audio,
                      video_token_id=tokens.video, bidirectional_vision=True)
