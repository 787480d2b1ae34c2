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
  model (``token2wav.*``); its voices are in the snapshot's ``spk_dict.pt`` (:func:`omnikit.audio.load_speakers`);
- ``"omni"`` (full model only): :class:`~omnikit.fusion.Qwen2_5OmniSpeech`, the Thinker and Talker speaking
  together, with the ``"token2wav"`` part as its vocoder, and the speakers of the snapshot's ``spk_dict.pt``.

Not loaded: the audio tower's ``audio_bos_eos_token`` embedding, which transformers' forward never reads (skipped on
load, so ``save_hf`` does not write it and ``from_pretrained`` initialises it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omnikit.audio.windowed import WindowedAudioEncoder, WindowedAudioEncoderConfig
from omnikit.convert.architectures import Config, Mapped, Part, preset, register_architecture, register_transformers
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Field, Fixed, Refuse
from omnikit.convert.hub_qwen import DECODER, MROPE, decoder_key_map, lm_key_map
from omnikit.convert.hub_whisper import TRANSFORMER, whisper_layers_key_map
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip
from omnikit.convert.qwen2_5_omni_token2wav import TOKEN2WAV
from omnikit.convert.whole_model import check_same_layout, check_speaks, whole_part
from omnikit.fusion.modality import MediaTokens
from omnikit.fusion.omni_thinker import OmniThinker
from omnikit.fusion.qwen2_5_omni_speech import Qwen2_5OmniSpeech, Qwen2_5SpeechIds
from omnikit.fusion.thinker import Thinker
from omnikit.fusion.tmrope import TMRoPEScheme
from omnikit.layers.decoder import DecoderConfig
from omnikit.speech.omni_talker import OmniTalker, OmniTalkerConfig
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.window_vit import WindowViT, WindowViTConfig

__all__ = [
    "TEXT",
    "audio_config",
    "audio_key_map",
    "build_thinker",
    "export_thinker_config",
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


#: The Thinker's text model: Qwen2 layers (q/k/v bias, no qk-norm) with contiguous M-RoPE.
TEXT = DECODER + MROPE + ConfigMap((
    Fixed("mrope_interleaved", False), Fixed("qk_norm", False), Fixed("qkv_bias", True), Fixed("out_bias", False),
    Constant("model_type", "qwen2_5_omni_text"),
))


def text_config(thinker: Config) -> DecoderConfig:
    """The Thinker's text model config (:data:`TEXT`; ties the embeddings as the Thinker config says)."""
    return replace(TEXT(thinker["text_config"]), tie_embeddings=bool(thinker.get("tie_word_embeddings", False)))


#: The :class:`WindowViTConfig` of a ``vision_config`` dict.
vision_config = ConfigMap((
    Refuse("hidden_act", ("silu",), label="vision_config.hidden_act"), Field("dim", "hidden_size"),
    Field("depth", "depth"), Field("num_heads", "num_heads"), Field("mlp_hidden", "intermediate_size"),
    Field("out_dim", "out_hidden_size"),
    Convert("patch", ("temporal_patch_size", "patch_size"), lambda t, p, f: (t, p, p), lambda v, f: v[:2], (2, 14)),
    Field("in_chans", "in_channels", 3, fallbacks=("in_chans",)), Field("merge_size", "spatial_merge_size", 2),
    Field("window_size", "window_size", 112), Field("full_attention_blocks", "fullatt_block_indexes", (), tuple),
    Field("rope_base", "rope_parameters.rope_theta", 10000.0, float, ("rope_scaling.rope_theta",)),
    Constant("model_type", "qwen2_5_omni_vision_encoder"),
), target=WindowViTConfig)


#: The :class:`WindowedAudioEncoderConfig` of an ``audio_config`` dict.
audio_config = TRANSFORMER + ConfigMap((
    Field("output_dim", "output_dim"), Field("n_window", "n_window"),
    Constant("model_type", "qwen2_5_omni_audio_encoder"),
), target=WindowedAudioEncoderConfig)


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


def vision_key_map(config: WindowViTConfig) -> KeyMap:
    """WindowViT keys <- ``visual.*`` names (relative): q/k/v fused, SwiGLU with biases, RMSNorm merger."""
    dim, block = config.dim, "blocks.{i}."
    return KeyMap((
        Rename("patch_embed.proj.weight", "patch_embed.proj.weight"),
        Rename("merger.norm.weight", "merger.ln_q.weight"),
        Rename("merger.mlp.{j}.{p}", "merger.mlp.{j}.{p}"),
        Fuse(block + "attn.qkv.{p}", tuple(f"{block}attn.{x}.{{p}}" for x in "qkv"), (dim,) * 3),
        Rename(block + "attn.out.{p}", block + "attn.proj.{p}"),
        *(Rename(f"{block}mlp.{x}.{{p}}", f"{block}mlp.{x}_proj.{{p}}") for x in ("gate", "up", "down")),
        Rename(block + "{norm}.weight", block + "{norm}.weight"),
    ))


def audio_key_map(config: WindowedAudioEncoderConfig) -> KeyMap:
    """WindowedAudioEncoder keys <- ``audio_tower.*`` names (relative); k_proj has no bias (zeros)."""
    return KeyMap((
        *(Rename(f"{n}.{{p}}", f"{n}.{{p}}") for n in ("conv1", "conv2", "proj")), Rename("norm.{p}", "ln_post.{p}"),
        Skip("audio_bos_eos_token.weight"),
    )) + whisper_layers_key_map(config.dim)


def thinker_key_map(thinker: Config) -> KeyMap:
    """OmniThinker keys <- the Thinker checkpoint's names (``audio_tower.``, ``visual.``, ``model.``, ``lm_head``)."""
    return (
        lm_key_map(text_config(thinker)).under("text_model.")
        + audio_key_map(audio_config(thinker["audio_config"])).prefixed("audio_tower.").under("audio_encoder.")
        + vision_key_map(vision_config(thinker["vision_config"])).prefixed("visual.").under("vision_encoder.")
    )


#: The Talker's decoder: Qwen2 layers (head_dim from the config), M-RoPE sections when the config has them.
talker_decoder_config = DECODER + ConfigMap((
    Convert("mrope_sections", "rope_parameters.mrope_section", lambda v, f: v and tuple(v), lambda v, f: list(v), None,
            ("rope_scaling.mrope_section",)),
    Fixed("qk_norm", False), Fixed("qkv_bias", True), Fixed("out_bias", False), Fixed("tie_embeddings", False),
), target=DecoderConfig)


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


def whole_number(value: float | None) -> float | int | None:
    """transformers' config fields are ints where the value is whole."""
    return int(value) if value is not None and float(value).is_integer() else value


def export_thinker_config(model: nn.Module) -> Config | None:
    """The ``Qwen2_5OmniThinkerForConditionalGeneration`` ``config.json`` of an :class:`OmniThinker` with the
    Qwen2.5-Omni layout (None for any other model)."""
    if not isinstance(model, OmniThinker) or not isinstance(model.audio_encoder, WindowedAudioEncoder) \
            or not isinstance(model.vision_encoder, WindowViT):
        return None
    text, audio, vision = model.text_model.config, model.audio_encoder.config, model.vision_encoder.config
    text_dict = TEXT.write(text)
    if text_dict is None:
        return None
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
        "text_config": text_dict,
        "audio_config": audio_config.write(audio),
        "vision_config": vision_config.write(vision),
    }


def _parts(prefix: str, of: Any) -> dict[str, Part]:
    """Thinker parts under checkpoint ``prefix``; ``of(config)`` is the Thinker's config dict."""
    return {
        "thinker": Part(lambda c: build_thinker(of(c)), lambda c: thinker_key_map(of(c)), prefix, inputs=thinker_inputs,
                        export_config=export_thinker_config if not prefix else None),
        "audio_encoder": AUDIO.part(prefix + "audio_tower.", select=lambda c: of(c)["audio_config"],
                                    inputs=_audio_inputs),
        "vision_encoder": VISION.part(prefix + "visual.", select=lambda c: of(c)["vision_config"]),
        "text_model": Part(lambda c: _text_model(of(c)), lambda c: lm_key_map(text_config(of(c))), prefix,
                           owns=(prefix + "model.", prefix + "lm_head."), inputs=text_inputs),
    }


AUDIO = Mapped(audio_config, preset("qwen2_5_omni_audio"), audio_key_map)
#: The vision tower (``forward_patches`` gives transformers' pooler output).
VISION = Mapped(vision_config, preset("qwen2_5_omni_vision"), vision_key_map)
register_transformers("Qwen2_5OmniAudioEncoder", AUDIO)
register_transformers("Qwen2_5OmniVisionEncoder", VISION)


def _same_layout(thinker: Config, talker: Config) -> None:
    """The Talker's placeholders and TMRoPE timing must be the Thinker's (its positions are computed with them)."""
    keys = {"position_id_per_seconds": 25, "seconds_per_chunk": 2}
    for modality in ("audio", "image", "video"):
        ours = thinker_media_tokens(thinker).as_dict().get(modality)
        theirs = talker.get(f"{modality}_token_index", talker.get(f"{modality}_token_id", ours))
        if theirs != ours:
            raise OmnikitValueError(f"talker_config {modality} placeholder {theirs} must equal the Thinker's ({ours})")
    check_same_layout(thinker, talker, keys)


def _speaking(parts: dict[str, Part]) -> Part:
    """The ``"omni"`` part: Thinker, Talker and, when a ``"token2wav"`` part is registered, the vocoder, as one
    :class:`Qwen2_5OmniSpeech`; the snapshot's ``spk_dict.pt`` gives the speakers."""
    vocoder = parts.get("token2wav")

    def build(config: Config) -> Qwen2_5OmniSpeech:
        check_speaks(config)
        _same_layout(config["thinker_config"], config["talker_config"])
        return Qwen2_5OmniSpeech(parts["thinker"].build(config), parts["talker"].build(config),
                                 None if vocoder is None else vocoder.build(config),
                                 Qwen2_5SpeechIds.from_config(config["talker_config"]))

    def finish(model: nn.Module, directory: Path) -> None:
        if (directory / "spk_dict.pt").is_file():
            model.load_speakers(directory / "spk_dict.pt")

    members = {"thinker": parts["thinker"], "talker": parts["talker"]}
    return whole_part(build, {**members, **({"vocoder": vocoder} if vocoder else {})}, inputs=thinker_inputs,
                      finish=finish)


register_transformers("Qwen2_5OmniToken2WavModel", TOKEN2WAV)
register_architecture(THINKER, parts=_parts("", lambda c: c), default_part="thinker")
_FULL_PARTS = {
    **_parts("thinker.", lambda c: c["thinker_config"]),
    "talker": Part(lambda c: _talker(c["talker_config"]), lambda c: talker_key_map(c["talker_config"]), "talker."),
    "token2wav": TOKEN2WAV.part("token2wav.", select=lambda c: c["token2wav_config"], exported=False),
}
register_architecture(FULL, parts={**_FULL_PARTS, "omni": _speaking(_FULL_PARTS)}, default_part="thinker")
