"""Whisper from the Hub: ``WhisperForConditionalGeneration`` / ``WhisperModel``, part ``"audio_encoder"``.

The encoder loads as :class:`omnikit.audio.WhisperEncoder` through :func:`~omnikit.convert.whisper.whisper_key_map`
(the decoder has no omnikit counterpart, so ``part`` is required). ``hf_inputs`` turns the feature
extractor's ``input_features (B, n_mels, 3000)`` into ``features``; the encoder then returns
transformers' ``last_hidden_state`` as ``.hidden_states``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from omnikit.audio.whisper import WhisperEncoder, WhisperEncoderConfig
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.whisper import whisper_key_map
from omnikit.utils.checks import OmnikitValueError

__all__ = ["whisper_encoder_config"]


def whisper_encoder_config(config: Config) -> WhisperEncoderConfig:
    """The :class:`WhisperEncoderConfig` of a Whisper ``config.json``."""
    act = config.get("activation_function", "gelu")
    if act != "gelu":
        raise OmnikitValueError(f"Whisper activation_function={act!r} is not supported; only 'gelu' loads")
    return WhisperEncoderConfig(
        n_mels=config["num_mel_bins"], dim=config["d_model"], depth=config["encoder_layers"],
        num_heads=config["encoder_attention_heads"], mlp_hidden=config["encoder_ffn_dim"],
        max_positions=config["max_source_positions"],
    )


def audio_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_features (B, n_mels, T)`` -> ``features`` on the model's device and dtype."""
    if "input_features" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_features' but got keys {sorted(inputs)}")
    reference = next(model.parameters())
    return {"features": inputs["input_features"].to(reference.device, reference.dtype)}


def _encoder_part(prefix: str) -> Part:
    return Part(lambda c: WhisperEncoder(whisper_encoder_config(c)), lambda c: whisper_key_map(c["d_model"]),
                prefix=prefix, inputs=audio_inputs)


register_architecture("WhisperForConditionalGeneration", parts={"audio_encoder": _encoder_part("model.encoder.")})
register_architecture("WhisperModel", parts={"audio_encoder": _encoder_part("encoder.")})
