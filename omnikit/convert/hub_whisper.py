"""Whisper from the Hub: ``WhisperForConditionalGeneration`` / ``WhisperModel``, part ``"audio_encoder"``.

The encoder loads as :class:`omnikit.audio.WhisperEncoder` (the decoder has no omnikit counterpart,
so ``part`` is required); ``from_transformers(WhisperEncoder)`` reads the same maps. ``hf_inputs``
turns the feature extractor's ``input_features (B, n_mels, 3000)`` into ``features``; the encoder
then returns transformers' ``last_hidden_state`` as ``.hidden_states``. :func:`whisper_layers_key_map`
is the layer part every Whisper-derived audio tower shares (Qwen2.5-Omni, Qwen3-Omni):
``self_attn.{q,k,v}_proj`` become one fused ``attn.qkv`` (the missing key bias is zero, which leaves
attention unchanged: it shifts every score of a query by the same amount).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from omnikit.convert.architectures import Mapped, preset, register_architecture, register_transformers
from omnikit.convert.configmap import ConfigMap, Field, Refuse
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.utils.checks import OmnikitValueError

__all__ = ["TRANSFORMER", "WHISPER", "audio_inputs", "whisper_key_map", "whisper_layers_key_map"]

#: The transformer fields of every Whisper-derived audio tower's config.
TRANSFORMER = ConfigMap((
    Refuse("activation_function", ("gelu",)), Field("n_mels", "num_mel_bins"), Field("dim", "d_model"),
    Field("depth", "encoder_layers"), Field("num_heads", "encoder_attention_heads"),
    Field("mlp_hidden", "encoder_ffn_dim"),
))
#: Whisper's encoder: the transformer and its learned-size sinusoidal positions.
WHISPER = TRANSFORMER + ConfigMap((Field("max_positions", "max_source_positions"),))


def whisper_layers_key_map(dim: int) -> KeyMap:
    """Rules of the :func:`~omnikit.audio.encoder_block` stack ``encoder.blocks.{i}`` <- ``layers.{i}``."""
    ours, theirs = "encoder.blocks.{i}.", "layers.{i}."
    attn = theirs + "self_attn."
    renames = {"norm1": "self_attn_layer_norm", "attn.out": "self_attn.out_proj", "norm2": "final_layer_norm",
               "mlp.fc1": "fc1", "mlp.fc2": "fc2"}
    return KeyMap((
        *(Rename(f"{ours}{o}.{{p}}", f"{theirs}{t}.{{p}}") for o, t in renames.items()),
        Fuse(ours + "attn.qkv.weight", (attn + "q_proj.weight", attn + "k_proj.weight", attn + "v_proj.weight"),
             (dim, dim, dim)),
        Fuse(ours + "attn.qkv.bias", (attn + "q_proj.bias", None, attn + "v_proj.bias"), (dim, dim, dim)),
    ))


def whisper_key_map(dim: int) -> KeyMap:
    """Rules of :class:`WhisperEncoder` <- transformers' ``WhisperEncoder`` (names relative to it)."""
    return KeyMap((
        Rename("conv1.{p}", "conv1.{p}"), Rename("conv2.{p}", "conv2.{p}"),
        Rename("positions", "embed_positions.weight"), Rename("norm.{p}", "layer_norm.{p}"),
    )) + whisper_layers_key_map(dim)


def audio_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_features (B, n_mels, T)`` -> ``features`` on the model's device and dtype."""
    if "input_features" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_features' but got keys {sorted(inputs)}")
    reference = next(model.parameters())
    return {"features": inputs["input_features"].to(reference.device, reference.dtype)}


ENCODER = Mapped(WHISPER, preset("whisper_large_v3_encoder"), lambda f: whisper_key_map(f["dim"]))
register_architecture("WhisperForConditionalGeneration",
                      parts={"audio_encoder": ENCODER.part("model.encoder.", inputs=audio_inputs)})
register_architecture("WhisperModel", parts={"audio_encoder": ENCODER.part("encoder.", inputs=audio_inputs)})
register_transformers("WhisperEncoder", ENCODER)
