"""``transformers`` ``Qwen3DecoderLayer`` -> :class:`omnikit.layers.DecoderBlock`."""

from __future__ import annotations

import torch
from torch import nn

from omnikit.convert import converter
from omnikit.layers.decoder import DecoderBlock
from omnikit.utils.checks import OmnikitValueError

__all__ = ["convert_qwen3_decoder_layer"]


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise OmnikitValueError(f"Qwen3 rope_type {rope_type!r} is not supported; only 'default' rotary converts")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


@torch.no_grad()
def copy_qwen3_attention_mlp(block: DecoderBlock, hf_layer: nn.Module) -> None:
    """Copy a Qwen3-style layer's norms, fused q/k/v, output, qk-norm and SwiGLU weights into ``block``."""
    attn = hf_layer.self_attn
    block.norm1.weight.copy_(hf_layer.input_layernorm.weight)
    block.norm2.weight.copy_(hf_layer.post_attention_layernorm.weight)
    block.attn.qkv.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
    if block.attn.qkv.bias is not None:
        block.attn.qkv.bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
    block.attn.out.weight.copy_(attn.o_proj.weight)
    if block.attn.out.bias is not None:
        block.attn.out.bias.copy_(attn.o_proj.bias)
    block.attn.q_norm.weight.copy_(attn.q_norm.weight)
    block.attn.k_norm.weight.copy_(attn.k_norm.weight)
    mlp = hf_layer.mlp
    block.mlp.gate.weight.copy_(mlp.gate_proj.weight)
    block.mlp.up.weight.copy_(mlp.up_proj.weight)
    block.mlp.down.weight.copy_(mlp.down_proj.weight)


@converter("Qwen3DecoderLayer")
def convert_qwen3_decoder_layer(hf_layer: nn.Module) -> DecoderBlock:
    """A :class:`DecoderBlock` equal to ``hf_layer`` (same config, same weights, same device/dtype).

    The block computes its own rotary table from positions ``0..T-1`` when called as ``block(x)``,
    matching the layer run with ``Qwen3RotaryEmbedding`` position embeddings and a causal mask.
    """
    config = hf_layer.self_attn.config
    weight = hf_layer.input_layernorm.weight
    with torch.device(weight.device):
        block = DecoderBlock(
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            hf_layer.self_attn.head_dim,
            mlp_hidden=config.intermediate_size,
            mlp="swiglu",
            norm="rmsnorm",
            norm_eps=config.rms_norm_eps,
            qk_norm=True,
            qkv_bias=config.attention_bias,
            out_bias=config.attention_bias,
            rope_base=_rope_theta(config),
            sliding_window=hf_layer.self_attn.sliding_window,
        )
    if config.hidden_act != "silu":
        raise OmnikitValueError(f"Qwen3 hidden_act {config.hidden_act!r} is not supported; expected 'silu'")
    copy_qwen3_attention_mlp(block, hf_layer)
    return block.to(dtype=weight.dtype)
