"""The Qwen3-Omni Code2Wav's maps: ``Qwen3OmniMoeCode2Wav`` -> :class:`omnikit.audio.code2wav.Code2Wav`.

Key map: :func:`code2wav_key_map`; config: :func:`code2wav_config` (registered in
:mod:`omnikit.convert.hub_qwen3_omni`).
"""

from __future__ import annotations

from omnikit.audio.code2wav import Code2WavConfig
from omnikit.convert.configmap import ConfigMap, Derived, Field, Refuse
from omnikit.convert.keymap import Fuse, KeyMap, Rename

__all__ = ["code2wav_config", "code2wav_key_map"]

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


#: The :class:`~omnikit.audio.Code2WavConfig` of a ``code2wav_config`` dict (transformers' defaults for absent keys).
code2wav_config = ConfigMap((
    Refuse("hidden_act", ("silu",), label="code2wav_config.hidden_act"),
    Refuse("rope_parameters.rope_type", ("default",), label="code2wav_config.rope_parameters.rope_type"),
    Field("num_codebooks", "num_quantizers", 16), Field("codebook_size", "codebook_size", 2048),
    Field("dim", "hidden_size", 1024), Field("depth", "num_hidden_layers", 8),
    Field("num_heads", "num_attention_heads", 16),
    Derived("num_kv_heads", "num_key_value_heads", lambda f: f["num_heads"]),
    Field("mlp_hidden", "intermediate_size", 3072),
    Field("sliding_window", "sliding_window", 72), Field("norm_eps", "rms_norm_eps", 1e-5),
    Field("rope_base", "rope_parameters.rope_theta", 10000.0, float),
    Field("layer_scale", "layer_scale_initial_scale", 0.01), Field("attention_bias", "attention_bias", False, bool),
    Field("upsampling_ratios", "upsampling_ratios", (2, 2), tuple), Field("decoder_dim", "decoder_dim", 1536),
    Field("upsample_rates", "upsample_rates", (8, 5, 4, 3), tuple),
), target=Code2WavConfig)
