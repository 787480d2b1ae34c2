"""Mimi from the Hub: transformers' ``MimiModel`` checkpoints as :class:`omnikit.audio.mimi.MimiTokenizer`.

Part ``"codec"`` (the default). Codes and decoded audio equal transformers' ``encode`` /
``decode``; q/k/v projections are fused, the semantic and acoustic quantizers are named
``semantic`` / ``acoustic``, and the SEANet stacks keep their layer indices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from omnikit.audio.mimi import MimiConfig, MimiTokenizer
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.hub_qwen import attention_key_map
from omnikit.convert.keymap import KeyMap, Rename, Skip
from omnikit.utils.checks import OmnikitValueError

__all__ = ["mimi_config", "mimi_hf_config", "mimi_key_map"]


def mimi_config(config: Config) -> MimiConfig:
    """The :class:`MimiConfig` of a transformers ``MimiModel`` ``config.json``."""
    unsupported = {
        "use_causal_conv": (config.get("use_causal_conv", True), True),
        "hidden_act": (config.get("hidden_act", "gelu"), "gelu"),
        "attention_bias": (config.get("attention_bias", False), False),
        "trim_right_ratio": (config.get("trim_right_ratio", 1.0), 1.0),
        "rope_type": ((config.get("rope_parameters") or {}).get("rope_type", "default"), "default"),
    }
    for name, (value, expected) in unsupported.items():
        if value != expected:
            raise OmnikitValueError(f"Mimi {name}={value!r} is not supported; expected {expected!r}")
    frame_rate = config.get("frame_rate", config.get("_frame_rate"))
    if frame_rate is None:  # transformers writes it only when given: the downsampling conv halves the SEANet rate
        frame_rate = config["sampling_rate"] / (math.prod(config.get("upsampling_ratios") or (8, 6, 5, 4)) * 2)
    heads = config["num_attention_heads"]
    return MimiConfig(
        sample_rate=config["sampling_rate"], channels=config.get("audio_channels", 1), dim=config["hidden_size"],
        n_filters=config["num_filters"], n_residual=config.get("num_residual_layers", 1),
        ratios=tuple(config["upsampling_ratios"]), kernel_size=config.get("kernel_size", 7),
        last_kernel_size=config.get("last_kernel_size", 3), residual_kernel_size=config.get("residual_kernel_size", 3),
        dilation_base=config.get("dilation_growth_rate", 2), compress=config.get("compress", 2),
        conv_shortcut=config.get("use_conv_shortcut", False), pad_mode=config.get("pad_mode", "constant"),
        frame_rate=float(frame_rate), codebook_size=config["codebook_size"],
        codebook_dim=config.get("vector_quantization_hidden_dimension") or config["hidden_size"],
        num_quantizers=config["num_quantizers"], num_semantic=config.get("num_semantic_quantizers", 1),
        upsample_groups=config.get("upsample_groups", config["hidden_size"]), depth=config["num_hidden_layers"],
        num_heads=heads, num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads, mlp_hidden=config["intermediate_size"],
        rope_base=float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0))),
        norm_eps=config.get("norm_eps", 1e-5), sliding_window=config.get("sliding_window") or 250,
    )


def mimi_key_map(config: Config) -> KeyMap:
    """Rules of :class:`MimiTokenizer` <- transformers' ``MimiModel`` (flat published names)."""
    cfg = mimi_config(config)
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer = "{t}.layers.{i}."
    return KeyMap((
        *(Rename(f"{{s}}.{{n}}.{inner}conv.{{p}}", f"{{s}}.layers.{{n}}.{inner}conv.{{p}}")
          for inner in ("", "block.{j}.", "shortcut.")),
        Rename("{s}.{n}.convtr.{p}", "{s}.layers.{n}.conv.{p}"),
        Rename("upsample.convtr.weight", "upsample.conv.weight"),
        Rename("{c}.conv.weight", "{c}.conv.weight"),
    )) + attention_key_map((q, kv, kv), layer, layer) + KeyMap((
        Rename(layer + "fc1.weight", layer + "mlp.fc1.weight"),
        Rename(layer + "fc2.weight", layer + "mlp.fc2.weight"),
        Rename(layer + "attn_scale", layer + "self_attn_layer_scale.scale"),
        Rename(layer + "mlp_scale", layer + "mlp_layer_scale.scale"),
        Rename("{s}.{proj}.weight", "quantizer.{s}_residual_vector_quantizer.{proj}.weight"),
        Rename("{s}.layers.{i}.{p}", "quantizer.{s}_residual_vector_quantizer.layers.{i}.codebook.{p}"),
        Skip("{t}.rotary_emb.inv_freq"),
    ))


def codec_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_values (B, C, S)`` (the feature extractor's output) -> ``wav``."""
    if "input_values" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_values' but got keys {sorted(inputs)}")
    return {"wav": torch.as_tensor(inputs["input_values"])}


register_architecture(
    "MimiModel", parts={"codec": Part(lambda c: MimiTokenizer(mimi_config(c)), mimi_key_map, inputs=codec_inputs)},
    default_part="codec",
)


def mimi_hf_config(cfg: MimiConfig) -> Config:
    """The transformers ``MimiModel`` ``config.json`` fields of a :class:`MimiConfig` (:func:`mimi_config` reversed)."""
    return {
        "model_type": "mimi", "sampling_rate": cfg.sample_rate, "audio_channels": cfg.channels, "hidden_size": cfg.dim,
        "num_filters": cfg.n_filters, "num_residual_layers": cfg.n_residual, "upsampling_ratios": list(cfg.ratios),
        "kernel_size": cfg.kernel_size, "last_kernel_size": cfg.last_kernel_size,
        "residual_kernel_size": cfg.residual_kernel_size, "dilation_growth_rate": cfg.dilation_base,
        "compress": cfg.compress, "use_conv_shortcut": cfg.conv_shortcut, "pad_mode": cfg.pad_mode,
        "frame_rate": cfg.frame_rate, "codebook_size": cfg.codebook_size, "codebook_dim": cfg.codebook_dim,
        "vector_quantization_hidden_dimension": cfg.codebook_dim, "num_quantizers": cfg.num_quantizers,
        "num_semantic_quantizers": cfg.num_semantic, "upsample_groups": cfg.upsample_groups,
        "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim, "intermediate_size": cfg.mlp_hidden, "norm_eps": cfg.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base}, "sliding_window": cfg.sliding_window,
        "use_causal_conv": True, "hidden_act": "gelu", "attention_bias": False, "trim_right_ratio": 1.0,
    }
