"""``transformers`` Qwen-Omni audio towers -> omnikit encoders with the batch API.

- ``Qwen2_5OmniAudioEncoder`` -> :class:`omnikit.audio.WindowedAudioEncoder`;
- ``Qwen3OmniMoeAudioEncoder`` -> :class:`omnikit.audio.AuTEncoder` (same layer layout).

The HF towers take packed features ``(n_mels, sum(T_b))`` with ``feature_lens``; the converted
modules take a padded batch ``(B, n_mels, T)`` with ``lengths`` and return ``(B, T', D)`` whose
item ``b`` (first ``lengths'[b]`` rows) equals the HF output rows of that item. The unused
``audio_bos_eos_token`` embedding of the Qwen2.5 tower is not carried over.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from omnikit.audio.aut import AuTEncoder
from omnikit.audio.windowed import WindowedAudioEncoder
from omnikit.convert import converter
from omnikit.convert.keymap import KeyMap, Rename
from omnikit.convert.whisper import build_converted, check_gelu, whisper_layers_key_map

__all__ = ["convert_qwen2_5_omni_audio", "convert_qwen3_omni_audio"]


def _tower_map(names: dict[str, str], dim: int) -> KeyMap:
    """Rules of a Whisper-derived tower: renamed stem/head modules plus the Whisper layer stack."""
    return KeyMap(tuple(Rename(f"{ours}.{{p}}", f"{theirs}.{{p}}") for ours, theirs in names.items())) + (
        whisper_layers_key_map(dim)
    )


def _transformer_overrides(config: Any) -> dict[str, int]:
    return dict(
        n_mels=config.num_mel_bins, dim=config.d_model, depth=config.encoder_layers,
        num_heads=config.encoder_attention_heads, mlp_hidden=config.encoder_ffn_dim, output_dim=config.output_dim,
        n_window=config.n_window,
    )


@converter("Qwen2_5OmniAudioEncoder")
def convert_qwen2_5_omni_audio(hf_encoder: nn.Module) -> WindowedAudioEncoder:
    """A :class:`WindowedAudioEncoder` with ``hf_encoder``'s config and weights."""
    config = hf_encoder.config
    check_gelu(config, "Qwen2_5OmniAudioEncoder")
    key_map = _tower_map({"conv1": "conv1", "conv2": "conv2", "norm": "ln_post", "proj": "proj"}, config.d_model)
    return build_converted("qwen2_5_omni_audio", hf_encoder, key_map, **_transformer_overrides(config))


@converter("Qwen3OmniMoeAudioEncoder")
def convert_qwen3_omni_audio(hf_encoder: nn.Module) -> AuTEncoder:
    """An :class:`AuTEncoder` with ``hf_encoder``'s config and weights."""
    config = hf_encoder.config
    check_gelu(config, "Qwen3OmniMoeAudioEncoder")
    key_map = _tower_map({
        "conv2d1": "conv2d1", "conv2d2": "conv2d2", "conv2d3": "conv2d3", "conv_out": "conv_out",
        "norm": "ln_post", "proj1": "proj1", "proj2": "proj2",
    }, config.d_model)
    ratio = config.n_window_infer // (2 * config.n_window)
    return build_converted(
        "qwen3_omni_aut", hf_encoder, key_map, **_transformer_overrides(config),
        conv_channels=config.downsample_hidden_size, attn_window_chunks=ratio,
    )
