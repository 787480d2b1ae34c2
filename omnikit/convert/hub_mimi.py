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
from omnikit.convert.architectures import Mapped, register_architecture
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Derived, Field, Refuse
from omnikit.convert.hub_qwen import attention_key_map
from omnikit.convert.keymap import KeyMap, Rename, Skip
from omnikit.utils.checks import OmnikitValueError

__all__ = ["CODEC", "MIMI", "mimi_key_map"]


#: The :class:`MimiConfig` of a transformers ``MimiModel`` ``config.json``.
MIMI = ConfigMap((
    Constant("model_type", "mimi"),
    Refuse("use_causal_conv", (True,)), Refuse("hidden_act", ("gelu",)), Refuse("attention_bias", (False,)),
    Refuse("trim_right_ratio", (1.0,)), Refuse("rope_parameters.rope_type", ("default",)),
    Field("sample_rate", "sampling_rate"), Field("channels", "audio_channels", 1), Field("dim", "hidden_size"),
    Field("n_filters", "num_filters"), Field("n_residual", "num_residual_layers", 1),
    Field("ratios", "upsampling_ratios", cast=tuple), Field("kernel_size", "kernel_size", 7),
    Field("last_kernel_size", "last_kernel_size", 3), Field("residual_kernel_size", "residual_kernel_size", 3),
    Field("dilation_base", "dilation_growth_rate", 2), Field("compress", "compress", 2),
    Field("conv_shortcut", "use_conv_shortcut", False), Field("pad_mode", "pad_mode", "constant"),
    # transformers writes frame_rate only when it was given: the downsampling conv halves the SEANet rate
    Convert("frame_rate", "frame_rate", lambda rate, f: float(rate) if rate is not None else
            f["sample_rate"] / (math.prod(f["ratios"]) * 2), lambda rate, f: rate, None, ("_frame_rate",)),
    Field("codebook_size", "codebook_size"),
    Derived("codebook_dim", "vector_quantization_hidden_dimension", lambda f: f["dim"]),
    # transformers also reads its own `codebook_dim` (default 256): written equal, never read
    Convert("codebook_dim", "codebook_dim", lambda _, f: f["codebook_dim"], lambda dim, f: dim, None),
    Field("num_quantizers", "num_quantizers"), Field("num_semantic", "num_semantic_quantizers", 1),
    Derived("upsample_groups", "upsample_groups", lambda f: f["dim"]), Field("depth", "num_hidden_layers"),
    Field("num_heads", "num_attention_heads"), Derived("num_kv_heads", "num_key_value_heads", lambda f: f["num_heads"]),
    Derived("head_dim", "head_dim", lambda f: f["dim"] // f["num_heads"]), Field("mlp_hidden", "intermediate_size"),
    Field("rope_base", "rope_parameters.rope_theta", 10000.0, float, ("rope_theta",)),
    Field("norm_eps", "norm_eps", 1e-5), Field("sliding_window", "sliding_window", 250),
), target=MimiConfig)


def mimi_key_map(cfg: MimiConfig) -> KeyMap:
    """Rules of :class:`MimiTokenizer` <- transformers' ``MimiModel`` (flat published names)."""
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


#: Mimi as a module of maps (Moshi's ``"audio_encoder"`` part too).
CODEC = Mapped(MIMI, MimiTokenizer, mimi_key_map)
register_architecture("MimiModel", default_part="codec", parts={"codec": CODEC.part(inputs=codec_inputs)})
