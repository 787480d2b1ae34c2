"""``transformers`` ``WhisperEncoder`` -> :class:`omnikit.audio.WhisperEncoder`, as a key map.

:func:`whisper_key_map` is the one mapping of the Whisper encoder's tensors, used both by
``from_transformers`` (on the module's state dict) and by ``load_hf`` (on a checkpoint, see
:mod:`omnikit.convert.hub_whisper`). :func:`whisper_layers_key_map` is the layer part shared by
every Whisper-derived audio tower (Qwen2.5-Omni, Qwen3-Omni): ``self_attn.{q,k,v}_proj`` become
one fused ``attn.qkv`` (the missing key bias is zero, which leaves attention unchanged: it shifts
every score of a query by the same amount).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.audio.whisper import WhisperEncoder
from omnikit.convert import converter
from omnikit.convert.keymap import Fuse, KeyMap, Rename
from omnikit.registry import create_model
from omnikit.utils.checks import OmnikitValueError

__all__ = ["build_converted", "convert_whisper_encoder", "whisper_key_map", "whisper_layers_key_map"]


def check_gelu(config: Any, name: str) -> None:
    """Raise unless the HF audio tower uses exact GELU (the only activation omnikit's block has)."""
    act = getattr(config, "activation_function", "gelu")
    if act != "gelu":
        raise OmnikitValueError(f"{name} with activation_function={act!r} is not supported; only 'gelu' converts")


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


def build_converted(name: str, hf_module: nn.Module, key_map: KeyMap, **overrides: Any) -> nn.Module:
    """``create_model(name, **overrides)`` on ``hf_module``'s device and dtype, loaded strictly with the
    tensors ``key_map`` gathers from ``hf_module``'s state dict."""
    reference = next(hf_module.parameters())
    model = create_model(name, device=reference.device, **overrides)
    source = hf_module.state_dict()
    model.load_state_dict(key_map.gather(source, {k: v.shape for k, v in model.state_dict().items()}), strict=True)
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
    return build_converted(
        "whisper_large_v3_encoder", hf_encoder, whisper_key_map(config.d_model),
        n_mels=config.num_mel_bins, dim=config.d_model, depth=config.encoder_layers,
        num_heads=config.encoder_attention_heads, mlp_hidden=config.encoder_ffn_dim,
        max_positions=config.max_source_positions,
    )
