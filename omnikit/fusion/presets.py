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
from omnikit.fusion.qwen3_5_omni import QWEN3_5_OMNI, HybridOmniThinker, Qwen3_5OmniSpeech
from omnikit.fusion.qwen3_5_vl import Qwen3_5VL
from omnikit.fusion.qwen3_omni_speech import Qwen3SpeechIds
from omnikit.fusion.qwen3_omni_thinker import Qwen3OmniThinker
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import QWEN2_5_OMNI, QWEN3_OMNI
from omnikit.layers.decoder import DecoderConfig
from omnikit.models.presets import (
    QWEN3_5_9B,
    QWEN3_5_35B_A3B,
    QWEN3_5_35B_A3B_EXPERTS,
    QWEN3_NEXT_TINY,
    qwen3_next_parts,
)
from omnikit.moe import MoE, MoEConfig
from omnikit.registry import configure, create_model, register_model
from omnikit.speech.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker, Qwen3OmniTalkerConfig
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = ["QWEN_MEDIA_TOKENS", "TINY_OMNI_MARKERS", "TINY_OMNI_TOKENS", "gemma4_omni_tiny", "qwen2_5_omni_7b_talker",
           "qwen2_5_omni_7b_thinker", "qwen2_5_omni_talker_tiny", "qwen2_5_omni_thinker_tiny", "qwen3_5_9b_vl",
           "qwen3_5_35b_a3b_vl", "qwen3_5_omni_35b_a3b", "qwen3_5_omni_tiny", "qwen3_5_vl_tiny",
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


def _qwen3_5_vl(name: str, overrides: dict[str, Any], experts: tuple[int, int, int] | None, vision: Qwen3ViT,
                tokens: MediaTokens, markers: dict[str, int], **values: Any) -> Qwen3_5VL:
    """A Qwen3.5 vision-language model: the hybrid text model of ``values``
    (:func:`~omnikit.models.presets.qwen3_next_parts`) with interleaved M-RoPE, read through ``tokens`` by the
    ``vision`` tower; overrides apply to the text model."""
    text = Thinker(*qwen3_next_parts(name, overrides, experts, mrope_interleaved=True, **values), media_tokens=tokens)
    return Qwen3_5VL(text, vision_encoder=vision, marker_tokens=markers)


#: Qwen3.5's placeholder and marker ids (transformers' config defaults).
QWEN3_5_TOKENS = MediaTokens(image=248056, video=248057)
_QWEN3_5_MARKERS = {"vision_start_token_id": 248053, "vision_end_token_id": 248054}


def _qwen3_5_vision(out_dim: int) -> Qwen3ViT:
    """The Qwen3.5 vision tower at transformers' ``Qwen3_5VisionConfig`` defaults (an assumption, see the
    presets), without deepstack mergers."""
    return create_model("qwen3_vit_omni_30b_a3b", deepstack_indexes=(), out_dim=out_dim)


@register_model(kind="omni", modalities=("text", "image", "video"))
def qwen3_5_9b_vl(**overrides: Any) -> Qwen3_5VL:
    """Qwen3.5-9B-style vision-language model (build on ``device="meta"``): the ``qwen3_5_9b`` text model with
    interleaved M-RoPE 11/11/10 on its 64 rotary dims, and a vision tower at transformers'
    ``Qwen3_5VisionConfig`` defaults (1152 x 27, 16 heads, MLP 4304, (2, 16, 16) patches, 48x48 positions)
    merging to 4096. The tower values are assumptions: no published ``config.json`` was readable here."""
    return _qwen3_5_vl(
        "qwen3_5_9b_vl", overrides, None, _qwen3_5_vision(4096), QWEN3_5_TOKENS, _QWEN3_5_MARKERS,
        mrope_sections=(11, 11, 10), **QWEN3_5_9B,
    )


@register_model(kind="omni", modalities=("text", "image", "video"))
def qwen3_5_35b_a3b_vl(**overrides: Any) -> Qwen3_5VL:
    """Qwen3.5-35B-A3B-style vision-language model (build on ``device="meta"``): the ``qwen3_5_35b_a3b`` MoE
    text model with interleaved M-RoPE 11/11/10, and the vision tower of :func:`qwen3_5_9b_vl` merging to 2048
    (the same assumptions)."""
    return _qwen3_5_vl(
        "qwen3_5_35b_a3b_vl", overrides, QWEN3_5_35B_A3B_EXPERTS, _qwen3_5_vision(2048), QWEN3_5_TOKENS,
        _QWEN3_5_MARKERS, mrope_sections=(11, 11, 10), **QWEN3_5_35B_A3B,
    )


@register_model(kind="omni", modalities=("text", "image", "video"))
def qwen3_5_vl_tiny(**overrides: Any) -> Qwen3_5VL:
    """A tiny Qwen3.5 vision-language model: the ``qwen3_5_tiny`` layout (4 hybrid layers of width 32, dense
    SwiGLU) with 12 rotary dims under interleaved M-RoPE 3/2/1, vocabulary 64 (placeholders 60/61, markers
    62/63), read by the tiny vision tower (no deepstack). Overrides apply to the text model."""
    values = {**QWEN3_NEXT_TINY, "rotary_dim": 12}
    return _qwen3_5_vl(
        "qwen3_5_vl_tiny", overrides, None, create_model("qwen3_vit_tiny", out_dim=32),
        MediaTokens(image=60, video=61), {"vision_start_token_id": 62, "vision_end_token_id": 63},
        mlp_hidden=48, mrope_sections=(3, 2, 1), **values,
    )


@register_model(kind="talker", modalities=("text", "speech"))
def qwen3_omni_30b_a3b_talker(**overrides: Any) -> Qwen3OmniTalker:
    """Qwen3-Omni-30B-A3B Talker as published: 20 MoE layers of width 1024 (128 experts of 384, top-6, gated
    shared expert of 768), codec vocabulary 3072, and a 5-layer code predictor for codebooks 1..15 of 2048."""
    return Qwen3OmniTalker(configure(
        Qwen3OmniTalkerConfig, "qwen3_omni_30b_a3b_talker", overrides,
        dim=1024, depth=20, num_heads=16, num_kv_heads=2, head_dim=128, thinker_dim=2048,
    ))


#: Qwen3-Omni-30B-A3B's placeholder and marker ids (Qwen3.5-Omni's are not public here: an assumption).
_QWEN3_OMNI_MEDIA = MediaTokens(image=151655, video=151656, audio=151675)
_QWEN3_OMNI_MARKERS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653,
                       "audio_start_token_id": 151669, "audio_end_token_id": 151670}


@register_model(kind="omni", modalities=("text", "image", "video", "audio", "speech"))
def qwen3_5_omni_35b_a3b(**overrides: Any) -> Qwen3_5OmniSpeech:
    """A Qwen3.5-Omni-style speaking model at published-ish size (build on ``device="meta"``), assembled from
    published parts; Qwen3.5-Omni's own config is not public here.

    Published values: the Thinker's language model is Qwen3.5-35B-A3B's (``qwen3_5_35b_a3b``: 40 layers at
    2048, Gated DeltaNet with gated full attention every 4th layer, 256 experts of 512, top-8, gated shared
    expert, vocab 248320); the audio tower is Qwen3-Omni-30B-A3B's AuT (1280 x 32 -> 2048); the vision tower
    is Qwen3-Omni-30B-A3B's (1152 x 27, 16 px patches, -> 2048) without deepstack mergers, as Qwen3.5's
    tower; the Talker (20 MoE layers at 1024, 16-codebook code predictor) and Code2Wav are Qwen3-Omni-30B-A3B's.
    Assumptions: rope theta 1e7; TMRoPE :data:`~omnikit.fusion.QWEN3_5_OMNI` (Qwen3-Omni's timing on Qwen3.5's
    interleaved sections 11/11/10 of the 64 rotary dims); Qwen3-Omni's placeholder, marker and speech ids
    (the speaker id ``ethan = 2302`` unverified here); ``accept_hidden_layer = 20`` (Qwen3-Omni's 24 of 48
    layers, scaled to 40); untied embeddings.
    Overrides apply to the text model."""
    config, mlp = qwen3_next_parts(
        "qwen3_5_omni_35b_a3b", overrides, QWEN3_5_35B_A3B_EXPERTS,
        **{**QWEN3_5_35B_A3B, "mrope_sections": QWEN3_5_OMNI.sections, "mrope_interleaved": True},
    )
    thinker = HybridOmniThinker(
        Thinker(config, mlp, media_tokens=_QWEN3_OMNI_MEDIA), audio_encoder=create_model("qwen3_omni_aut"),
        vision_encoder=create_model("qwen3_vit_omni_30b_a3b", deepstack_indexes=()), scheme=QWEN3_5_OMNI,
        marker_tokens=_QWEN3_OMNI_MARKERS,
    )
    return Qwen3_5OmniSpeech(thinker, create_model("qwen3_omni_30b_a3b_talker"), create_model("code2wav_qwen3_omni"),
                             Qwen3SpeechIds(accept_hidden_layer=20, speakers={"ethan": 2302}))


#: The tiny Qwen3.5-Omni-style model's speech ids: chat and TTS markers at the top of its 128-id text vocabulary
#: (below the placeholders), codec control ids after its 16 codes and 1024 - 16 unused ids (the Talker never
#: samples the last 1024 ids of its vocabulary but the eos id, as published).
TINY_SPEECH_IDS = Qwen3SpeechIds(
    im_start=110, im_end=111, user=112, assistant=113, tts_bos=114, tts_eos=115, tts_pad=116, codec_nothink=1030,
    codec_think_bos=1031, codec_think_eos=1032, codec_pad=1033, codec_bos=1034, codec_eos=1035, accept_hidden_layer=4,
    speakers={"ethan": 1036},
)


@register_model(kind="omni", modalities=("text", "image", "video", "audio", "speech"))
def qwen3_5_omni_tiny(**overrides: Any) -> Qwen3_5OmniSpeech:
    """A tiny Qwen3.5-Omni-style speaking model: a 4-layer hybrid MoE Thinker of width 32 (3 Gated DeltaNet
    blocks, then gated full attention with TMRoPE 2/1/1 on 8 of its 16 head dims; 4 experts of 16, top-2, gated
    shared expert; tied embeddings, vocab 128), the tiny AuT and vision tower (-> 32), a 2-layer MoE Talker with
    a 3-codebook code predictor, and ``code2wav_tiny`` (3 codebooks of 16). The Talker reads the final hidden
    states (``accept_hidden_layer = 4``). Overrides apply to the text model."""
    config, mlp = qwen3_next_parts(
        "qwen3_5_omni_tiny", overrides, (4, 2, 16),
        **{**QWEN3_NEXT_TINY, "rotary_dim": 8, "vocab_size": 128, "mrope_sections": (2, 1, 1),
           "mrope_interleaved": True, "tie_embeddings": True},
    )
    thinker = HybridOmniThinker(
        Thinker(config, mlp, media_tokens=TINY_OMNI_TOKENS),
        audio_encoder=create_model("qwen3_omni_aut_tiny", output_dim=config.dim, n_window=50),
        vision_encoder=create_model("qwen3_vit_tiny", out_dim=config.dim),
        scheme=replace(QWEN3_5_OMNI, sections=(2, 1, 1)), marker_tokens=TINY_OMNI_MARKERS,
    )
    talker = Qwen3OmniTalker(Qwen3OmniTalkerConfig(
        dim=32, depth=2, num_heads=4, num_kv_heads=2, head_dim=8, thinker_dim=config.dim, vocab_size=16 + 1024,
        num_experts=4, top_k=2, expert_hidden=16, shared_hidden=24, projection_hidden=20, mrope_sections=(2, 1, 1),
        num_codebooks=3, codec_bos_id=TINY_SPEECH_IDS.codec_bos, predictor_depth=1, predictor_heads=4,
        predictor_kv_heads=2, predictor_head_dim=8, predictor_mlp_hidden=40, predictor_vocab_size=16,
    ))
    return Qwen3_5OmniSpeech(thinker, talker, create_model("code2wav_tiny"), TINY_SPEECH_IDS)


@register_model(kind="omni", modalities=("text", "image", "audio"))
def gemma4_omni_tiny(**overrides: Any) -> Gemma4Omni:
    """A tiny Gemma 4 of the published structure: the ``gemma4_tiny`` language model (every text feature:
    per-layer embeddings, KV sharing, K = V, MoE beside the MLP, softcap), the tiny vision and audio towers
    (both -> 32), bidirectional attention over an image on sliding layers. Overrides apply to the text model."""
    tokens = TINY_OMNI_TOKENS
    return Gemma4Omni(create_model("gemma4_tiny", **overrides), create_model("gemma4_vision_tiny"),
                      create_model("gemma4_audio_tiny"), image_token_id=tokens.image, audio_token_id=tokens.audio,
                      video_token_id=tokens.video, bidirectional_vision=True)
