"""``transformers`` ``Qwen3OmniMoeCode2Wav`` -> :class:`omnikit.audio.code2wav.Code2Wav`.

The ConvNet keeps transformers' key names; the pre-transformer's q/k/v projections are fused
(:data:`CODE2WAV_FUSED`) and its layers renamed (:data:`CODE2WAV_KEYS`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.audio.code2wav import Code2Wav
from omnikit.convert import converter
from omnikit.convert.keys import fuse_state, rename_state
from omnikit.convert.whisper import build_converted
from omnikit.utils.checks import OmnikitValueError

__all__ = ["CODE2WAV_FUSED", "CODE2WAV_KEYS", "code2wav_config", "code2wav_state", "convert_qwen3_omni_code2wav"]

_LAYER = r"pre_transformer\.layers\.(\d+)\."

#: ``(pattern with {part}, parts, fused key)``: q/k/v rows stacked in that order.
CODE2WAV_FUSED = (
    (_LAYER + r"self_attn\.{part}_proj\.(weight|bias)", ("q", "k", "v"), r"blocks.\1.attn.qkv.\2"),
)

#: transformers key pattern -> omnikit key, applied after the fusion.
CODE2WAV_KEYS: tuple[tuple[str, str], ...] = (
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (_LAYER + r"self_attn\.o_proj\.(weight|bias)", r"blocks.\1.attn.out.\2"),
    (_LAYER + r"mlp\.(gate|up|down)_proj\.weight", r"blocks.\1.mlp.\2.weight"),
    (_LAYER + r"input_layernorm\.weight", r"blocks.\1.norm1.weight"),
    (_LAYER + r"post_attention_layernorm\.weight", r"blocks.\1.norm2.weight"),
    (_LAYER + r"self_attn_layer_scale\.scale", r"blocks.\1.attn_scale"),
    (_LAYER + r"mlp_layer_scale\.scale", r"blocks.\1.mlp_scale"),
    (r"pre_transformer\.norm\.weight", r"norm.weight"),
    (r"((?:code_embedding|upsample|decoder)\..*)", r"\1"),
)


def code2wav_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An omnikit :class:`Code2Wav` state dict from a transformers one (keys relative to ``code2wav.``)."""
    for pattern, parts, target in CODE2WAV_FUSED:
        state = fuse_state(state, pattern, parts, target)
    return rename_state(state, CODE2WAV_KEYS)


def code2wav_config(config: Any) -> dict[str, Any]:
    """:class:`~omnikit.audio.code2wav.Code2WavConfig` fields from a ``Qwen3OmniMoeCode2WavConfig``."""
    if config.hidden_act != "silu":
        raise OmnikitValueError(f"code2wav hidden_act {config.hidden_act!r} is not supported; expected 'silu'")
    if any(t != "sliding_attention" for t in config.layer_types):
        raise OmnikitValueError(f"code2wav layer_types {config.layer_types} are not supported; expected sliding")
    rope = config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise OmnikitValueError(f"code2wav rope_type {rope.get('rope_type')!r} is not supported; expected 'default'")
    return dict(
        num_codebooks=config.num_quantizers, codebook_size=config.codebook_size, dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads, num_kv_heads=config.num_key_value_heads,
        mlp_hidden=config.intermediate_size, sliding_window=config.sliding_window, norm_eps=config.rms_norm_eps,
        rope_base=float(rope.get("rope_theta", 10000.0)), layer_scale=config.layer_scale_initial_scale,
        attention_bias=config.attention_bias, upsampling_ratios=tuple(config.upsampling_ratios),
        decoder_dim=config.decoder_dim, upsample_rates=tuple(config.upsample_rates),
    )


@converter("Qwen3OmniMoeCode2Wav")
def convert_qwen3_omni_code2wav(hf_module: nn.Module) -> Code2Wav:
    """A :class:`Code2Wav` whose ``decode(codes)`` equals ``hf_module(codes)``."""
    state = code2wav_state(dict(hf_module.state_dict()))
    return build_converted("code2wav_qwen3_omni", hf_module, state, **code2wav_config(hf_module.config))
