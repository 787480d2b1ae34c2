"""``transformers`` ``Qwen3OmniMoeCode2Wav`` -> :class:`omnikit.audio.code2wav.Code2Wav`.

Key map: :func:`code2wav_key_map`; config: :func:`code2wav_config`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from omnikit.audio.code2wav import Code2Wav, Code2WavConfig
from omnikit.convert import converter
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.convert.whisper import build_converted
from omnikit.utils.checks import OmnikitValueError

__all__ = ["code2wav_config", "code2wav_key_map", "convert_qwen3_omni_code2wav"]

def _same_names(prefix: str, max_depth: int = 6) -> tuple[Rename, ...]:
    """Identity rules for every key ``prefix.a[.b[...]]`` of up to ``max_depth`` components."""
    return tuple(Rename(prefix + name, prefix + name)
                 for name in (".".join(f"{{x{j}}}" for j in range(n)) for n in range(1, max_depth + 1)))


def code2wav_key_map(config: Code2WavConfig) -> KeyMap:
    """omnikit key <- transformers key (relative to ``code2wav.``): the pre-transformer's q/k/v fused
    and its layers renamed, the ConvNet's names unchanged."""
    layer = "pre_transformer.layers.{i}."
    head_dim = config.dim // config.num_heads
    sizes = (config.num_heads * head_dim, config.num_kv_heads * head_dim, config.num_kv_heads * head_dim)
    return KeyMap((
        Fuse("blocks.{i}.attn.qkv.{p}", tuple(f"{layer}self_attn.{x}_proj.{{p}}" for x in "qkv"), sizes),
        Rename("blocks.{i}.attn.out.{p}", layer + "self_attn.o_proj.{p}"),
        Rename("blocks.{i}.mlp.{m}.weight", layer + "mlp.{m}_proj.weight"),
        Rename("blocks.{i}.norm1.weight", layer + "input_layernorm.weight"),
        Rename("blocks.{i}.norm2.weight", layer + "post_attention_layernorm.weight"),
        Rename("blocks.{i}.attn_scale", layer + "self_attn_layer_scale.scale"),
        Rename("blocks.{i}.mlp_scale", layer + "mlp_layer_scale.scale"),
        Rename("norm.weight", "pre_transformer.norm.weight"),
        Rename("code_embedding.weight", "code_embedding.weight"),
        *_same_names("upsample."),
        *_same_names("decoder."),
    ))


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
    fields = code2wav_config(hf_module.config)
    return build_converted("code2wav_qwen3_omni", hf_module, code2wav_key_map(Code2WavConfig(**fields)), **fields)
