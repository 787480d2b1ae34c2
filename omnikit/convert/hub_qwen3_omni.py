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
- ``"code2wav"``: :class:`~omnikit.audio.Code2Wav` (``code2wav.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from omnikit.audio.aut import AuTEncoder, AuTEncoderConfig
from omnikit.audio.code2wav import Code2Wav
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.hub_qwen import decoder_config, lm_key_map, moe_config, sparse_layers
from omnikit.convert.hub_qwen2_5_omni import thinker_inputs
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.convert.qwen3_omni_code2wav import code2wav_config, code2wav_key_map
from omnikit.convert.qwen3_omni_talker import talker_config, talker_key_map
from omnikit.convert.qwen3_omni_vision import VISION_KEYS, vision_config
from omnikit.convert.whisper import whisper_layers_key_map
from omnikit.fusion.deepstack_thinker import DeepstackThinker
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.qwen3_omni_thinker import Qwen3OmniThinker
from omnikit.fusion.tmrope import QWEN3_OMNI
from omnikit.layers.decoder import DecoderConfig
from omnikit.moe.layer import MoE
from omnikit.speech.qwen3_omni_talker import Qwen3OmniTalker
from omnikit.utils.checks import OmnikitValueError, check_choice
from omnikit.vision.qwen3_vit import Qwen3ViT

__all__ = [
    "FULL", "PUBLISHED_MARKERS", "audio_inputs", "aut_config", "aut_key_map", "build_text_model", "build_thinker",
    "media_tokens", "text_config", "text_key_map", "thinker_key_map", "vision_inputs",
]

FULL = "Qwen3OmniMoeForConditionalGeneration"


def aut_config(audio: Mapping[str, Any]) -> AuTEncoderConfig:
    """The :class:`AuTEncoderConfig` of a Qwen3-Omni ``audio_config`` dict (transformers' defaults for absent keys)."""
    check_choice(audio.get("activation_function", "gelu"), "audio_config.activation_function", ("gelu",))
    n_window = audio.get("n_window", 50)
    return AuTEncoderConfig(
        n_mels=audio.get("num_mel_bins", 128), conv_channels=audio.get("downsample_hidden_size", 480),
        dim=audio.get("d_model", 1280), depth=audio.get("encoder_layers", 32),
        num_heads=audio.get("encoder_attention_heads", 20), mlp_hidden=audio.get("encoder_ffn_dim", 5120),
        output_dim=audio.get("output_dim", 3584), n_window=n_window,
        attn_window_chunks=audio.get("n_window_infer", 800) // (2 * n_window),
    )


def aut_key_map(audio: Mapping[str, Any]) -> KeyMap:
    """AuTEncoder keys <- ``audio_tower.*`` names (relative). Unlike Whisper's, the key projection has
    a bias (it cancels in the softmax but is kept, so a save writes the checkpoint back)."""
    dim = audio.get("d_model", 1280)
    stem = ("conv2d1", "conv2d2", "conv2d3", "conv_out", "proj1", "proj2")
    attn = "layers.{i}.self_attn."
    return KeyMap((
        *(Rename(f"{n}.{{p}}", f"{n}.{{p}}") for n in stem), Rename("norm.{p}", "ln_post.{p}"),
        Fuse("encoder.blocks.{i}.attn.qkv.bias", tuple(f"{attn}{x}_proj.bias" for x in "qkv"), (dim,) * 3),
    )) + whisper_layers_key_map(dim)


def text_config(thinker: Mapping[str, Any]) -> DecoderConfig:
    """The Thinker text model's :class:`DecoderConfig`: Qwen3 layers (qk-norm, no biases), interleaved M-RoPE."""
    text = thinker["text_config"]
    rope = text.get("rope_parameters") or {}
    sections = rope.get("mrope_section")
    if sections is None or len(sections) != 3:
        raise OmnikitValueError(f"text_config rope parameters expected a 3-entry mrope_section but got {rope}")
    if not rope.get("interleaved", rope.get("mrope_interleaved", False)):
        raise OmnikitValueError(f"text_config rope parameters expected interleaved M-RoPE but got {rope}")
    config = decoder_config(text, qk_norm=True, qkv_bias=False, out_bias=False)
    return replace(config, mrope_sections=tuple(sections), mrope_interleaved=True,
                   tie_embeddings=bool(thinker.get("tie_word_embeddings", False)))


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
        + aut_key_map(thinker["audio_config"]).prefixed("audio_tower.").under("audio_encoder.")
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


def _thinker(config: Config) -> Config:
    return config["thinker_config"]


register_architecture(FULL, default_part="thinker", parts={
    "thinker": Part(lambda c: build_thinker(_thinker(c)), lambda c: thinker_key_map(_thinker(c)), "thinker.",
                    inputs=thinker_inputs),
    "text_model": Part(lambda c: build_text_model(_thinker(c)), lambda c: text_key_map(_thinker(c)), "thinker.",
                       owns=("thinker.model.", "thinker.lm_head."), inputs=text_inputs),
    "audio_encoder": Part(lambda c: AuTEncoder(aut_config(_thinker(c)["audio_config"])),
                          lambda c: aut_key_map(_thinker(c)["audio_config"]), "thinker.audio_tower.",
                          inputs=audio_inputs),
    "vision_encoder": Part(lambda c: Qwen3ViT(vision_config(_thinker(c)["vision_config"])), lambda c: VISION_KEYS,
                           "thinker.visual.", inputs=vision_inputs),
    "talker": Part(lambda c: Qwen3OmniTalker(talker_config(c["talker_config"])),
                   lambda c: talker_key_map(talker_config(c["talker_config"])), "talker."),
    "code2wav": Part(lambda c: Code2Wav(code2wav_config(c["code2wav_config"])),
                     lambda c: code2wav_key_map(code2wav_config(c["code2wav_config"])), "code2wav."),
})
