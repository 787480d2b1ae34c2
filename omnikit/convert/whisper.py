"""``transformers`` ``WhisperEncoder`` -> :class:`omnikit.audio.WhisperEncoder`.

Also holds :func:`encoder_layer_state`, the layer mapping shared by every Whisper-derived audio
tower (Qwen2.5-Omni, Qwen3-Omni): ``self_attn.{q,k,v}_proj`` become one fused ``attn.qkv``
(the missing key bias is zero, which leaves attention unchanged: it shifts every score of a query
by the same amount).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.audio.whisper import WhisperEncoder
from omnikit.convert import converter
from omnikit.registry import create_model
from omnikit.utils.checks import OmnikitValueError

__all__ = ["build_converted", "convert_whisper_encoder", "encoder_layer_state"]


def check_gelu(config: Any, name: str) -> None:
    """Raise unless the HF audio tower uses exact GELU (the only activation omnikit's block has)."""
    act = getattr(config, "activation_function", "gelu")
    if act != "gelu":
        raise OmnikitValueError(f"{name} with activation_function={act!r} is not supported; only 'gelu' converts")


def encoder_layer_state(layer: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """State dict entries of one :func:`~omnikit.audio.encoder_block` from a Whisper-style HF layer."""
    attn = layer.self_attn
    k_bias = torch.zeros_like(attn.q_proj.bias) if attn.k_proj.bias is None else attn.k_proj.bias
    pairs = {
        "norm1": layer.self_attn_layer_norm,
        "attn.out": attn.out_proj,
        "norm2": layer.final_layer_norm,
        "mlp.fc1": layer.fc1,
        "mlp.fc2": layer.fc2,
    }
    state = {f"{prefix}{ours}.{p}": getattr(theirs, p) for ours, theirs in pairs.items() for p in ("weight", "bias")}
    state[f"{prefix}attn.qkv.weight"] = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    state[f"{prefix}attn.qkv.bias"] = torch.cat([attn.q_proj.bias, k_bias, attn.v_proj.bias])
    return state


def build_converted(name: str, hf_module: nn.Module, state: dict[str, torch.Tensor], **overrides: Any) -> nn.Module:
    """``create_model(name, **overrides)`` on ``hf_module``'s device and dtype, loaded strictly with ``state``."""
    reference = next(hf_module.parameters())
    model = create_model(name, device=reference.device, **overrides)
    model.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)
    if reference.dtype != torch.float32:
        from omnikit.utils.precision import cast_model

        cast_model(model, reference.dtype)
    return model.train(hf_module.training)


@converter("WhisperEncoder")
def convert_whisper_encoder(hf_encoder: nn.Module) -> WhisperEncoder:
    """A :class:`WhisperEncoder` with ``hf_encoder``'s config and weights.

    On 3000-frame inputs without ``lengths`` it returns what ``hf_encoder`` returns
    (``last_hidden_state``); it also accepts shorter inputs and ``lengths`` (see the module docs).
    """
    config = hf_encoder.config
    check_gelu(config, "WhisperEncoder")
    state = {
        "conv1.weight": hf_encoder.conv1.weight, "conv1.bias": hf_encoder.conv1.bias,
        "conv2.weight": hf_encoder.conv2.weight, "conv2.bias": hf_encoder.conv2.bias,
        "positions": hf_encoder.embed_positions.weight,
        "norm.weight": hf_encoder.layer_norm.weight, "norm.bias": hf_encoder.layer_norm.bias,
    }
    for i, layer in enumerate(hf_encoder.layers):
        state.update(encoder_layer_state(layer, f"encoder.blocks.{i}."))
    return build_converted(
        "whisper_large_v3_encoder", hf_encoder, state,
        n_mels=config.num_mel_bins, dim=config.d_model, depth=config.encoder_layers,
        num_heads=config.encoder_attention_heads, mlp_hidden=config.encoder_ffn_dim,
        max_positions=config.max_source_positions,
    )
