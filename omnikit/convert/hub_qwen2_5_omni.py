"""Qwen2.5-Omni from the Hub: the Thinker checkpoint and the full Thinker-Talker checkpoint.

Architectures ``Qwen2_5OmniThinkerForConditionalGeneration`` and ``Qwen2_5OmniForConditionalGeneration``.

Parts (checkpoint prefixes for the full model; the standalone Thinker checkpoint has no ``thinker.``):

- ``"thinker"`` (default): :class:`~omnikit.fusion.OmniThinker` = audio tower
  (:class:`~omnikit.audio.WindowedAudioEncoder`, ``thinker.audio_tower.*``) + vision tower
  (:class:`~omnikit.vision.WindowViT`, ``thinker.visual.*``) + the M-RoPE Qwen2 text model
  (:class:`~omnikit.fusion.Thinker`, ``thinker.model.*`` and ``thinker.lm_head``);
- ``"audio_encoder"``, ``"vision_encoder"``, ``"text_model"``: each of those alone;
- ``"talker"`` (full model only): :class:`~omnikit.fusion.OmniTalker` (``talker.*``);
- ``"token2wav"`` (full model only): :class:`~omnikit.audio.Token2Wav`, the DiT + BigVGAN code-to-waveform
  model (``token2wav.*``); its voices are in the snapshot's ``spk_dict.pt`` (:func:`omnikit.audio.load_speakers`).

Not loaded: the audio tower's ``audio_bos_eos_token`` embedding, which transformers' forward never reads (skipped on
load, so ``save_hf`` does not write it and ``from_pretrained`` initialises it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import nn

from omnikit.audio.token2wav import Token2Wav
from omnikit.audio.windowed import WindowedAudioEncoder, WindowedAudioEncoderConfig
from omnikit.convert import converter
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.hub_qwen import decoder_config, decoder_key_map, lm_key_map
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip
from omnikit.convert.qwen2_5_omni_token2wav import token2wav_config, token2wav_key_map
from omnikit.convert.whisper import build_converted, whisper_layers_key_map
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import TMRoPEScheme
from omnikit.layers.decoder import DecoderConfig
from omnikit.speech.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.window_vit import WindowViT, WindowViTConfig

__all__ = [
    "audio_config",
    "audio_key_map",
    "build_thinker",
    "convert_qwen2_5_omni_vision",
    "export_thinker_config",
    "mrope_decoder_dict",
    "talker_decoder_config",
    "talker_key_map",
    "text_config",
    "thinker_key_map",
    "thinker_media_tokens",
    "vision_config",
    "vision_key_map",
    "whole_number",
]

THINKER, FULL = "Qwen2_5OmniThinkerForConditionalGeneration", "Qwen2_5OmniForConditionalGeneration"
#: Qwen2.5-Omni's media start/end marker ids (written to exported configs when a model has none).
PUBLISHED_MARKERS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653,
                     "audio_start_token_id": 151647, "audio_end_token_id": 151648}
_PROCESSOR_KEYS = ("input_features", "feature_attention_mask", "pixel_values", "image_grid_thw",
                   "pixel_values_videos", "video_grid_thw", "video_second_per_grid")


def _rope(config: Config) -> Mapping[str, Any]:
    return config.get("rope_parameters") or config.get("rope_scaling") or {}


def text_config(thinker: Config) -> DecoderConfig:
    """The Thinker's text model: Qwen2 layers (q/k/v bias, no qk-norm) with M-RoPE sections."""
    text = thinker["text_config"]
    sections = _rope(text).get("mrope_section")
    if sections is None or len(sections) != 3:
        raise OmnikitValueError(f"text_config rope parameters expected a 3-entry mrope_section but got {_rope(text)}")
    config = decoder_config(text, qk_norm=False, qkv_bias=True, out_bias=False)
    return replace(config, mrope_sections=tuple(sections),
                   tie_embeddings=bool(thinker.get("tie_word_embeddings", False)))


def vision_config(vision: Config) -> WindowViTConfig:
    """The :class:`WindowViTConfig` of a ``vision_config`` dict."""
    if vision.get("hidden_act", "silu") != "silu":
        raise OmnikitValueError(f"vision hidden_act {vision.get('hidden_act')!r} is not supported; expected 'silu'")
    patch, temporal = vision.get("patch_size", 14), vision.get("temporal_patch_size", 2)
    return WindowViTConfig(
        dim=vision["hidden_size"], depth=vision["depth"], num_heads=vision["num_heads"],
        mlp_hidden=vision["intermediate_size"], out_dim=vision["out_hidden_size"], patch=(temporal, patch, patch),
        in_chans=vision.get("in_channels", vision.get("in_chans", 3)), merge_size=vision.get("spatial_merge_size", 2),
        window_size=vision.get("window_size", 112),
        full_attention_blocks=tuple(vision.get("fullatt_block_indexes", ())),
        rope_base=float(_rope(vision).get("rope_theta", 10000.0)),
    )


def audio_config(audio: Config) -> WindowedAudioEncoderConfig:
    """The :class:`WindowedAudioEncoderConfig` of an ``audio_config`` dict."""
    if audio.get("activation_function", "gelu") != "gelu":
        raise OmnikitValueError(f"audio activation_function {audio.get('activation_function')!r} is not supported")
    return WindowedAudioEncoderConfig(
        n_mels=audio["num_mel_bins"], dim=audio["d_model"], depth=audio["encoder_layers"],
        num_heads=audio["encoder_attention_heads"], mlp_hidden=audio["encoder_ffn_dim"],
        output_dim=audio["output_dim"], n_window=audio["n_window"],
    )


def thinker_media_tokens(thinker: Config) -> MediaTokens:
    """Placeholder ids (``*_token_id`` or the older ``*_token_index`` names)."""
    ids = {m: thinker.get(f"{m}_token_id", thinker.get(f"{m}_token_index")) for m in ("image", "video", "audio")}
    return MediaTokens(**ids)


def _scheme(thinker: Config, sections: tuple[int, int, int]) -> TMRoPEScheme:
    return TMRoPEScheme(ids_per_second=float(thinker.get("position_id_per_seconds", 25)),
                        seconds_per_chunk=float(thinker.get("seconds_per_chunk", 2)), sections=sections)


def _text_model(thinker: Config) -> Thinker:
    return Thinker(text_config(thinker), media_tokens=thinker_media_tokens(thinker))


def build_thinker(thinker: Config) -> OmniThinker:
    """The :class:`OmniThinker` of a Thinker ``config.json`` dict (random weights)."""
    text = _text_model(thinker)
    return OmniThinker(
        text, audio_encoder=WindowedAudioEncoder(audio_config(thinker["audio_config"])),
        vision_encoder=WindowViT(vision_config(thinker["vision_config"])),
        scheme=_scheme(thinker, text.config.mrope_sections),
        marker_tokens={k: thinker.get(k, v) for k, v in PUBLISHED_MARKERS.items()},
    )


def vision_key_map(config: Config) -> KeyMap:
    """WindowViT keys <- ``visual.*`` names (relative): q/k/v fused, SwiGLU with biases, RMSNorm merger."""
    dim, block = config["hidden_size"], "blocks.{i}."
    return KeyMap((
        Rename("patch_embed.proj.weight", "patch_embed.proj.weight"),
        Rename("merger.norm.weight", "merger.ln_q.weight"),
        Rename("merger.mlp.{j}.{p}", "merger.mlp.{j}.{p}"),
        Fuse(block + "attn.qkv.{p}", tuple(f"{block}attn.{x}.{{p}}" for x in "qkv"), (dim,) * 3),
        Rename(block + "attn.out.{p}", block + "attn.proj.{p}"),
        *(Rename(f"{block}mlp.{x}.{{p}}", f"{block}mlp.{x}_proj.{{p}}") for x in ("gate", "up", "down")),
        Rename(block + "{norm}.weight", block + "{norm}.weight"),
    ))


def audio_key_map(config: Config) -> KeyMap:
    """WindowedAudioEncoder keys <- ``audio_tower.*`` names (relative); k_proj has no bias (zeros)."""
    return KeyMap((
        *(Rename(f"{n}.{{p}}", f"{n}.{{p}}") for n in ("conv1", "conv2", "proj")), Rename("norm.{p}", "ln_post.{p}"),
        Skip("audio_bos_eos_token.weight"),
    )) + whisper_layers_key_map(config["d_model"])


def thinker_key_map(thinker: Config) -> KeyMap:
    """OmniThinker keys <- the Thinker checkpoint's names (``audio_tower.``, ``visual.``, ``model.``, ``lm_head``)."""
    return (
        lm_key_map(text_config(thinker)).under("text_model.")
        + audio_key_map(thinker["audio_config"]).prefixed("audio_tower.").under("audio_encoder.")
        + vision_key_map(thinker["vision_config"]).prefixed("visual.").under("vision_encoder.")
    )


def talker_decoder_config(talker: Config) -> DecoderConfig:
    """The Talker's decoder: Qwen2 layers (head_dim from the config) with M-RoPE sections."""
    sections = _rope(talker).get("mrope_section")
    config = decoder_config(talker, qk_norm=False, qkv_bias=True, out_bias=False)
    return replace(config, mrope_sections=None if sections is None else tuple(sections), tie_embeddings=False)


def _talker(talker: Config) -> OmniTalker:
    return OmniTalker(OmniTalkerConfig(talker_decoder_config(talker), talker["embedding_size"]))


def talker_key_map(talker: Config) -> KeyMap:
    """OmniTalker keys <- ``talker.*`` names (relative)."""
    return KeyMap((
        Rename("embed.weight", "model.embed_tokens.weight"), Rename("decoder.norm.weight", "model.norm.weight"),
        Rename("thinker_proj.weight", "thinker_to_talker_proj.weight"),
        Rename("thinker_proj.bias", "thinker_to_talker_proj.bias"),
        Rename("codec_head.weight", "codec_head.weight"), Skip("model.rotary_emb.inv_freq"),
    )) + decoder_key_map(talker_decoder_config(talker))


def _tensor(value: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)


def thinker_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Processor outputs -> :meth:`OmniThinker.forward` keywords (same names, tensors on the model's device)."""
    kwargs = text_inputs(model, inputs)
    mask = kwargs.pop("key_padding_mask", None)
    if mask is not None:
        kwargs["attention_mask"] = mask
    param = next(model.parameters())
    for key in _PROCESSOR_KEYS:
        if inputs.get(key) is not None:
            floating = key in ("input_features", "pixel_values", "pixel_values_videos")
            kwargs[key] = _tensor(inputs[key], param.device, param.dtype if floating else None)
    kwargs["use_audio_in_video"] = bool(inputs.get("use_audio_in_video", False))
    return kwargs


def _audio_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    param = next(model.parameters())
    features = _tensor(inputs["input_features"], param.device, param.dtype)
    mask = inputs.get("feature_attention_mask")
    lengths = None if mask is None else _tensor(mask, param.device).sum(-1)
    return {"features": features, "lengths": lengths}


def mrope_decoder_dict(config: DecoderConfig) -> Config:
    """transformers' ``text_config`` fields of an M-RoPE Qwen decoder (the fields Qwen2 and Qwen3 share)."""
    return {
        "hidden_size": config.dim, "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads or config.num_heads, "intermediate_size": config.mlp_hidden,
        "rms_norm_eps": config.norm_eps, "vocab_size": config.vocab_size, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base,
                            "mrope_section": list(config.mrope_sections)},
    }


def whole_number(value: float | None) -> float | int | None:
    """transformers' config fields are ints where the value is whole."""
    return int(value) if value is not None and float(value).is_integer() else value


def _is_qwen2_decoder(config: DecoderConfig) -> bool:
    return (config.mlp == "swiglu" and config.norm == "rmsnorm" and config.qkv_bias and not config.qk_norm
            and not config.out_bias and config.mrope_sections is not None and not config.mrope_interleaved
            and config.sliding_window is None and config.attention_chunk is None and bool(config.mlp_hidden))


def export_thinker_config(model: nn.Module) -> Config | None:
    """The ``Qwen2_5OmniThinkerForConditionalGeneration`` ``config.json`` of an :class:`OmniThinker` with the
    Qwen2.5-Omni layout (None for any other model)."""
    if not isinstance(model, OmniThinker) or not isinstance(model.audio_encoder, WindowedAudioEncoder) \
            or not isinstance(model.vision_encoder, WindowViT) or not _is_qwen2_decoder(model.text_model.config):
        return None
    text, audio, vision = model.text_model.config, model.audio_encoder.config, model.vision_encoder.config
    tokens = model.text_model.media_tokens
    head_dim = text.head_dim or text.dim // text.num_heads
    if head_dim != text.dim // text.num_heads or vision.patch[1] != vision.patch[2]:
        return None
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {
        "architectures": [THINKER], "model_type": "qwen2_5_omni_thinker", "dtype": dtype,
        "audio_token_index": tokens.audio, "image_token_index": tokens.image, "video_token_index": tokens.video,
        "position_id_per_seconds": whole_number(model.scheme.ids_per_second),
        "seconds_per_chunk": whole_number(model.scheme.seconds_per_chunk),
        "tie_word_embeddings": text.tie_embeddings, **PUBLISHED_MARKERS, **model.marker_tokens,
        "text_config": {"model_type": "qwen2_5_omni_text", "tie_word_embeddings": text.tie_embeddings,
                        **mrope_decoder_dict(text)},
        "audio_config": {
            "model_type": "qwen2_5_omni_audio_encoder", "num_mel_bins": audio.n_mels, "d_model": audio.dim,
            "encoder_layers": audio.depth, "encoder_attention_heads": audio.num_heads,
            "encoder_ffn_dim": audio.mlp_hidden, "output_dim": audio.output_dim, "n_window": audio.n_window,
        },
        "vision_config": {
            "model_type": "qwen2_5_omni_vision_encoder", "depth": vision.depth, "hidden_size": vision.dim,
            "intermediate_size": vision.mlp_hidden, "num_heads": vision.num_heads, "out_hidden_size": vision.out_dim,
            "patch_size": vision.patch[1], "temporal_patch_size": vision.patch[0], "in_channels": vision.in_chans,
            "spatial_merge_size": vision.merge_size, "window_size": vision.window_size,
            "fullatt_block_indexes": list(vision.full_attention_blocks),
        },
    }


def _parts(prefix: str, of: Any) -> dict[str, Part]:
    """Thinker parts under checkpoint ``prefix``; ``of(config)`` is the Thinker's config dict."""
    return {
        "thinker": Part(lambda c: build_thinker(of(c)), lambda c: thinker_key_map(of(c)), prefix, inputs=thinker_inputs,
                        export_config=export_thinker_config if not prefix else None),
        "audio_encoder": Part(lambda c: WindowedAudioEncoder(audio_config(of(c)["audio_config"])),
                              lambda c: audio_key_map(of(c)["audio_config"]), prefix + "audio_tower.",
                              inputs=_audio_inputs),
        "vision_encoder": Part(lambda c: WindowViT(vision_config(of(c)["vision_config"])),
                               lambda c: vision_key_map(of(c)["vision_config"]), prefix + "visual."),
        "text_model": Part(lambda c: _text_model(of(c)), lambda c: lm_key_map(text_config(of(c))), prefix,
                           owns=(prefix + "model.", prefix + "lm_head."), inputs=text_inputs),
    }


@converter("Qwen2_5OmniVisionEncoder")
def convert_qwen2_5_omni_vision(hf_encoder: nn.Module) -> WindowViT:
    """A :class:`WindowViT` with ``hf_encoder``'s config and weights (``forward_patches`` gives its pooler output)."""
    config = hf_encoder.config.to_dict()
    key_map = vision_key_map(config)
    return build_converted("qwen2_5_omni_vision", hf_encoder, key_map, **asdict(vision_config(config)))


register_architecture(THINKER, parts=_parts("", lambda c: c), default_part="thinker")
register_architecture(
    FULL,
    parts={**_parts("thinker.", lambda c: c["thinker_config"]),
           "talker": Part(lambda c: _talker(c["talker_config"]), lambda c: talker_key_map(c["talker_config"]),
                          "talker."),
           "token2wav": Part(lambda c: Token2Wav(token2wav_config(c["token2wav_config"])),
                             lambda c: token2wav_key_map(token2wav_config(c["token2wav_config"])), "token2wav.")},
    default_part="thinker",
)
