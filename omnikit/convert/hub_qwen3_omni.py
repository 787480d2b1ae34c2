"""Qwen3-Omni from the Hub: ``Qwen3OmniMoeForConditionalGeneration`` checkpoints, part by part.

Parts (checkpoint prefixes):

- ``"thinker"`` (default): :class:`~omnikit.fusion.Qwen3OmniThinker`, the processor's inputs -> logits
  (AuT + vision tower + MoE language model, ``thinker.*``);
- ``"text_model"``: the MoE Thinker language model, :class:`~omnikit.fusion.DeepstackThinker`
  (``thinker.model.*``, ``thinker.lm_head``): Qwen3-MoE layers, interleaved M-RoPE, deepstack
  visual features added after its first layers;
- ``"audio_encoder"``: :class:`~omnikit.audio.AuTEncoder` (``thinker.audio_tower.*``);
- ``"vision_encoder"``: :class:`~omnikit.vision.Qwen3ViT` with its deepstack mergers (``thinker.visual.*``);
- ``"talker"``: :class:`~omnikit.fusion.Qwen3OmniTalker` with its code predictor (``talker.*``);
- ``"code2wav"``: :class:`~omnikit.audio.Code2Wav` (``code2wav.*``);
- ``"omni"``: all of them as one :class:`~omnikit.fusion.Qwen3OmniSpeech` that speaks (``generate`` / ``stream``).

``Qwen3OmniMoeThinkerForConditionalGeneration`` (a Thinker saved alone: its names have no ``thinker.``)
has the Thinker's parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from omnikit.audio.aut import AuTEncoder, AuTEncoderConfig
from omnikit.convert.architectures import Config, Mapped, Part, preset, register_architecture, register_transformers
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Field, Fixed, Refuse
from omnikit.convert.hub_qwen import DECODER, MROPE, interleaved, lm_key_map, moe_config, sparse_layers
from omnikit.convert.hub_qwen2_5_omni import thinker_inputs, whole_number
from omnikit.convert.hub_whisper import whisper_layers_key_map
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.convert.qwen3_omni_code2wav import code2wav_config, code2wav_key_map
from omnikit.convert.qwen3_omni_talker import talker_config, talker_key_map
from omnikit.convert.qwen3_omni_vision import VISION_KEYS, vision_config
from omnikit.convert.whole_model import check_same_layout, check_speaks, whole_part
from omnikit.fusion.deepstack_thinker import DeepstackThinker
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.qwen3_omni_speech import Qwen3OmniSpeech, Qwen3SpeechIds
from omnikit.fusion.qwen3_omni_thinker import Qwen3OmniThinker
from omnikit.fusion.tmrope import QWEN3_OMNI
from omnikit.layers.decoder import DecoderConfig
from omnikit.layers.mlp import SwiGLU
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = [
    "FULL",
    "PUBLISHED_MARKERS",
    "TEXT",
    "audio_inputs",
    "aut_config",
    "aut_key_map",
    "build_text_model",
    "build_thinker",
    "export_thinker_config",
    "media_tokens",
    "text_config",
    "text_key_map",
    "thinker_key_map",
    "vision_inputs",
]

FULL, THINKER = "Qwen3OmniMoeForConditionalGeneration", "Qwen3OmniMoeThinkerForConditionalGeneration"


#: The :class:`AuTEncoderConfig` of a Qwen3-Omni ``audio_config`` dict (transformers' defaults for absent keys).
aut_config = ConfigMap((
    Refuse("activation_function", ("gelu",)), Field("n_mels", "num_mel_bins", 128),
    Field("conv_channels", "downsample_hidden_size", 480), Field("dim", "d_model", 1280),
    Field("depth", "encoder_layers", 32), Field("num_heads", "encoder_attention_heads", 20),
    Field("mlp_hidden", "encoder_ffn_dim", 5120), Field("output_dim", "output_dim", 3584),
    Field("n_window", "n_window", 50),
    Convert("attn_window_chunks", "n_window_infer", lambda v, f: v // (2 * f["n_window"]),
            lambda v, f: v * 2 * f["n_window"], default=800),
    Constant("model_type", "qwen3_omni_moe_audio_encoder"),
), target=AuTEncoderConfig)


def aut_key_map(audio: AuTEncoderConfig) -> KeyMap:
    """AuTEncoder keys <- ``audio_tower.*`` names (relative). Unlike Whisper's, the key projection has
    a bias (it cancels in the softmax but is kept, so a save writes the checkpoint back)."""
    stem = ("conv2d1", "conv2d2", "conv2d3", "conv_out", "proj1", "proj2")
    attn = "layers.{i}.self_attn."
    return KeyMap((
        *(Rename(f"{n}.{{p}}", f"{n}.{{p}}") for n in stem), Rename("norm.{p}", "ln_post.{p}"),
        Fuse("encoder.blocks.{i}.attn.qkv.bias", tuple(f"{attn}{x}_proj.bias" for x in "qkv"), (audio.dim,) * 3),
    )) + whisper_layers_key_map(audio.dim)


#: The Thinker's text model: Qwen3 layers (qk-norm, no biases) with interleaved M-RoPE (MoE: :data:`MOE`).
TEXT = DECODER + MROPE + ConfigMap((
    Convert("mrope_interleaved", "rope_parameters.interleaved", interleaved, lambda v, f: v, False,
            ("rope_parameters.mrope_interleaved",)),
    Fixed("mrope_interleaved", True), Fixed("qk_norm", True), Fixed("qkv_bias", False), Fixed("out_bias", False),
    Constant("model_type", "qwen3_omni_moe_text"),
))


def text_config(thinker: Mapping[str, Any]) -> DecoderConfig:
    """The Thinker text model's config (:data:`TEXT`; ties the embeddings as the Thinker config says)."""
    return replace(TEXT(thinker["text_config"]), tie_embeddings=bool(thinker.get("tie_word_embeddings", False)))


def media_tokens(thinker: Mapping[str, Any]) -> MediaTokens:
    """Placeholder ids of a Thinker config dict."""
    return MediaTokens(image=thinker.get("image_token_id", 151655), video=thinker.get("video_token_id", 151656),
                       audio=thinker.get("audio_token_id", 151646))


def build_text_model(thinker: Mapping[str, Any]) -> DeepstackThinker:
    """The MoE Thinker language model (:class:`DeepstackThinker`) of a Thinker config dict."""
    text, sparse = thinker["text_config"], set(sparse_layers(thinker["text_config"]))
    moe = moe_config(text)
    return DeepstackThinker(text_config(thinker), lambda i: MoE(moe) if i in sparse else "swiglu",
                            media_tokens=media_tokens(thinker))


def text_key_map(thinker: Mapping[str, Any]) -> KeyMap:
    """DeepstackThinker keys <- ``model.*`` / ``lm_head`` names (relative to ``thinker.``); experts stacked."""
    return lm_key_map(text_config(thinker), thinker["text_config"]["moe_intermediate_size"])


#: Published Qwen3-Omni media start/end marker ids (kept by the Thinker for its config).
PUBLISHED_MARKERS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653,
                     "audio_start_token_id": 151669, "audio_end_token_id": 151670}


def build_thinker(thinker: Mapping[str, Any]) -> Qwen3OmniThinker:
    """The :class:`Qwen3OmniThinker` (AuT + vision tower + MoE language model) of a Thinker config dict."""
    text = build_text_model(thinker)
    scheme = replace(QWEN3_OMNI, ids_per_second=float(thinker.get("position_id_per_seconds", 25)),
                     sections=text.config.mrope_sections)
    return Qwen3OmniThinker(
        text, audio_encoder=AuTEncoder(aut_config(thinker["audio_config"])),
        vision_encoder=Qwen3ViT(vision_config(thinker["vision_config"])), scheme=scheme,
        marker_tokens={k: thinker.get(k, v) for k, v in PUBLISHED_MARKERS.items()},
    )


def thinker_key_map(thinker: Mapping[str, Any]) -> KeyMap:
    """Qwen3OmniThinker keys <- names relative to ``thinker.`` (``model.*``, ``lm_head``, ``audio_tower.*``,
    ``visual.*``)."""
    return (
        text_key_map(thinker).under("text_model.")
        + aut_key_map(aut_config(thinker["audio_config"])).prefixed("audio_tower.").under("audio_encoder.")
        + VISION_KEYS.prefixed("visual.").under("vision_encoder.")
    )


def _tensor(value: Any, model: nn.Module, floating: bool) -> torch.Tensor:
    param = next(model.parameters())
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return tensor.to(device=param.device, dtype=param.dtype if floating else None)


def audio_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_features (N, n_mels, L)`` and ``feature_attention_mask (N, L)`` -> ``features``, ``lengths``."""
    if inputs.get("input_features") is None:
        raise OmnikitValueError(f"`inputs` expected 'input_features' but got keys {sorted(inputs)}")
    mask = inputs.get("feature_attention_mask")
    return {"features": _tensor(inputs["input_features"], model, True),
            "lengths": None if mask is None else _tensor(mask, model, False).sum(-1)}


def vision_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``pixel_values`` + ``image_grid_thw`` (or the video pair) -> :meth:`Qwen3ViT.forward_patches` arguments."""
    for pixels, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        if inputs.get(pixels) is not None:
            return {"pixel_values": _tensor(inputs[pixels], model, True),
                    "grid_thw": _tensor(inputs[grid], model, False)}
    raise OmnikitValueError(f"`inputs` expected 'pixel_values' or 'pixel_values_videos' but got keys {sorted(inputs)}")


def _moe_layers(text: DeepstackThinker) -> tuple[MoEConfig, list[int], int] | None:
    """``(MoE config, dense layer indices, dense MLP width)`` of a Qwen3-MoE layer stack (None if it is not one)."""
    mlps = [block.mlp for block in text.decoder.blocks]
    moes = [m for m in mlps if isinstance(m, MoE)]
    dense = [i for i, m in enumerate(mlps) if not isinstance(m, MoE)]
    if not moes or any(m.config != moes[0].config for m in moes):
        return None
    if any(not isinstance(mlps[i], SwiGLU) or mlps[i].gate.bias is not None for i in dense):
        return None
    moe = moes[0].config
    published = MoEConfig(moe.dim, moe.num_experts, moe.top_k, moe.expert_hidden,
                          normalize_weights=moe.normalize_weights, expert_gemm=moe.expert_gemm)
    widths = {mlps[i].gate.out_features for i in dense} or {moe.expert_hidden}
    return (moe, dense, widths.pop()) if moe == published and len(widths) == 1 else None


def export_thinker_config(model: nn.Module) -> Config | None:
    """The ``Qwen3OmniMoeForConditionalGeneration`` ``config.json`` (Thinker only, ``enable_audio_output``
    false) of a :class:`Qwen3OmniThinker` with the published layout: AuT, deepstack vision tower, Qwen3-MoE
    text model with interleaved M-RoPE (None for any other model)."""
    if not isinstance(model, Qwen3OmniThinker) or not isinstance(model.audio_encoder, AuTEncoder) \
            or model.vision_encoder is None:
        return None
    text, audio, vision = model.text_model.config, model.audio_encoder.config, model.vision_encoder.config
    layers = _moe_layers(model.text_model)
    scheme = replace(QWEN3_OMNI, ids_per_second=model.scheme.ids_per_second, sections=text.mrope_sections)
    # transformers' audio tower counts 13 tokens per 100-frame chunk: it models n_window=50 only
    if layers is None or model.scheme != scheme or vision.patch[1] != vision.patch[2] \
            or audio.n_window != 50 or audio.norm_eps != 1e-5 or vision.norm_eps != 1e-6:
        return None
    moe, dense, dense_width = layers
    text_dict = TEXT.write(replace(text, mlp_hidden=dense_width))
    if text_dict is None:
        return None
    tokens = model.text_model.media_tokens
    text_dict.update(
        moe_intermediate_size=moe.expert_hidden, num_experts=moe.num_experts, num_experts_per_tok=moe.top_k,
        norm_topk_prob=moe.normalize_weights, decoder_sparse_step=1, mlp_only_layers=dense, attention_bias=False,
    )
    thinker = {
        "model_type": "qwen3_omni_moe_thinker", "audio_token_id": tokens.audio, "image_token_id": tokens.image,
        "video_token_id": tokens.video, "position_id_per_seconds": whole_number(model.scheme.ids_per_second),
        "tie_word_embeddings": text.tie_embeddings, **PUBLISHED_MARKERS, **model.marker_tokens,
        "text_config": text_dict,
        "audio_config": aut_config.write(audio),
        "vision_config": vision_config.write(vision),
    }
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {"architectures": [FULL], "model_type": "qwen3_omni_moe", "dtype": dtype, "enable_audio_output": False,
            "thinker_config": thinker}


def _thinker(config: Config) -> Config:
    return config["thinker_config"]


AUDIO = Mapped(aut_config, preset("qwen3_omni_aut"), aut_key_map)
VISION = Mapped(vision_config, preset("qwen3_vit_omni_30b_a3b"), lambda c: VISION_KEYS)
TALKER = Mapped(talker_config, preset("qwen3_omni_30b_a3b_talker"), talker_key_map)
CODE2WAV = Mapped(code2wav_config, preset("code2wav_qwen3_omni"), code2wav_key_map)


def _thinker_parts(prefix: str, of: Any) -> dict[str, Part]:
    """The Thinker's parts under checkpoint ``prefix``; ``of(config)`` is the Thinker's config dict."""
    return {
        "thinker": Part(lambda c: build_thinker(of(c)), lambda c: thinker_key_map(of(c)), prefix,
                        inputs=thinker_inputs, export_config=export_thinker_config if prefix else None),
        "text_model": Part(lambda c: build_text_model(of(c)), lambda c: text_key_map(of(c)), prefix,
                           owns=(prefix + "model.", prefix + "lm_head."), inputs=text_inputs),
        "audio_encoder": AUDIO.part(prefix + "audio_tower.", select=lambda c: of(c)["audio_config"],
                                    inputs=audio_inputs),
        "vision_encoder": VISION.part(prefix + "visual.", select=lambda c: of(c)["vision_config"],
                                      inputs=vision_inputs),
    }


#: The Talker's prompt-layout keys, with transformers' defaults: they must equal the Thinker's.
TALKER_LAYOUT = {"audio_token_id": 151646, "image_token_id": 151655, "video_token_id": 151656,
                 "position_id_per_seconds": 25}


def _speaking(parts: dict[str, Part]) -> Part:
    """The ``"omni"`` part: Thinker, Talker and Code2Wav as one :class:`Qwen3OmniSpeech`."""

    def build(config: Config) -> Qwen3OmniSpeech:
        check_speaks(config)
        check_same_layout(config["thinker_config"], config["talker_config"], TALKER_LAYOUT)
        return Qwen3OmniSpeech(parts["thinker"].build(config), parts["talker"].build(config),
                               parts["code2wav"].build(config), Qwen3SpeechIds.from_config(config))

    members = {"thinker": parts["thinker"], "talker": parts["talker"], "vocoder": parts["code2wav"]}
    return whole_part(build, members, inputs=thinker_inputs)


_PARTS = {
    **_thinker_parts("thinker.", _thinker),
    "talker": TALKER.part("talker.", select=lambda c: c["talker_config"]),
    "code2wav": CODE2WAV.part("code2wav.", select=lambda c: c["code2wav_config"]),
}
register_architecture(FULL, default_part="thinker", parts={**_PARTS, "omni": _speaking(_PARTS)})
#: What transformers writes when a Qwen3-Omni Thinker is saved alone (its config is the Thinker's).
register_architecture(THINKER, default_part="thinker", parts=_thinker_parts("", lambda c: c))
register_transformers("Qwen3OmniMoeAudioEncoder", AUDIO)
register_transformers("Qwen3OmniMoeVisionEncoder", VISION)
register_transformers("Qwen3OmniMoeTalkerForConditionalGeneration", TALKER)
register_transformers("Qwen3OmniMoeCode2Wav", CODE2WAV)
