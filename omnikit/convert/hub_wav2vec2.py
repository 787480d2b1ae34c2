"""wav2vec 2.0 from the Hub: ``Wav2Vec2Model`` and the encoder of ``Wav2Vec2ForCTC`` / ``Wav2Vec2ForPreTraining``.

Part ``"audio_encoder"`` (the default), a :class:`omnikit.audio.wav2vec2.Wav2Vec2Encoder`: the model's
``last_hidden_state`` as ``.hidden_states`` (for the CTC and pretraining checkpoints, their ``wav2vec2.``
encoder; the CTC head, quantizer and projections are not loaded). q/k/v projections are
fused; the positional conv's weight norm loads from ``parametrizations.weight.original0/1`` or the
older ``weight_g/weight_v``. The GroupNorm of base checkpoints normalises over the whole padded clip,
as in transformers (``mask_group_norm=False``). ``hf_inputs`` turns ``input_values (B, S)`` and
``attention_mask`` into ``wav`` and ``lengths``; without a mask (what the base models' feature
extractor returns) nothing is masked, exactly like transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from omnikit.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder
from omnikit.convert.architectures import Config, Mapped, Part, preset, register_architecture, register_transformers
from omnikit.convert.keymap import Fuse, KeyMap, Legacy, Rename, Skip
from omnikit.utils.checks import OmnikitValueError

__all__ = ["wav2vec2_config", "wav2vec2_export_config", "wav2vec2_key_map"]


def wav2vec2_config(config: Config) -> Wav2Vec2Config:
    """The :class:`Wav2Vec2Config` of a transformers ``Wav2Vec2Config`` ``config.json``."""
    unsupported = {
        "hidden_act": (config.get("hidden_act", "gelu"), "gelu"),
        "feat_extract_activation": (config.get("feat_extract_activation", "gelu"), "gelu"),
        "add_adapter": (config.get("add_adapter", False), False),
        "adapter_attn_dim": (config.get("adapter_attn_dim"), None),
        "layer_norm_eps": (config.get("layer_norm_eps", 1e-5), 1e-5),  # the conv norms use 1e-5 too
    }
    for name, (value, expected) in unsupported.items():
        if value != expected:
            raise OmnikitValueError(f"Wav2Vec2 {name}={value!r} is not supported; expected {expected!r}")
    return Wav2Vec2Config(
        conv_channels=tuple(config["conv_dim"]), conv_kernels=tuple(config["conv_kernel"]),
        conv_strides=tuple(config["conv_stride"]), conv_bias=config.get("conv_bias", False),
        feat_norm=config.get("feat_extract_norm", "group"), dim=config["hidden_size"],
        depth=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
        mlp_hidden=config["intermediate_size"], pos_kernel=config.get("num_conv_pos_embeddings", 128),
        pos_groups=config.get("num_conv_pos_embedding_groups", 16),
        stable_layer_norm=config.get("do_stable_layer_norm", False), mask_group_norm=False,
    )


def wav2vec2_export_config(model: nn.Module) -> Config | None:
    """The ``Wav2Vec2Model`` ``config.json`` of a :class:`Wav2Vec2Encoder` (``None`` for any other module).

    SpecAugment is off (``mask_time_prob=0``: no mask vector to write). transformers' GroupNorm then
    normalises over padding that omnikit's ``mask_group_norm=True`` leaves out; unpadded batches agree.
    """
    if not isinstance(model, Wav2Vec2Encoder):
        return None
    c = model.config
    return {
        "architectures": ["Wav2Vec2Model"], "model_type": "wav2vec2", "conv_dim": list(c.conv_channels),
        "conv_kernel": list(c.conv_kernels), "conv_stride": list(c.conv_strides), "conv_bias": c.conv_bias,
        "num_feat_extract_layers": len(c.conv_channels), "feat_extract_norm": c.feat_norm, "hidden_size": c.dim,
        "num_hidden_layers": c.depth, "num_attention_heads": c.num_heads, "intermediate_size": c.mlp_hidden,
        "num_conv_pos_embeddings": c.pos_kernel, "num_conv_pos_embedding_groups": c.pos_groups,
        "do_stable_layer_norm": c.stable_layer_norm, "layer_norm_eps": c.norm_eps, "mask_time_prob": 0.0,
    }


def wav2vec2_key_map(config: Config) -> KeyMap:
    """Rules of :class:`Wav2Vec2Encoder` <- transformers' ``Wav2Vec2Model`` (names relative to it)."""
    dim = config["hidden_size"]
    ours, theirs = "layers.blocks.{i}.", "encoder.layers.{i}."
    attn = theirs + "attention."
    qkv = tuple(f"{attn}{p}_proj" for p in "qkv")
    pos = "encoder.pos_conv_embed.conv."
    renames = {"norm1": "layer_norm", "norm2": "final_layer_norm", "attn.out": "attention.out_proj",
               "mlp.fc1": "feed_forward.intermediate_dense", "mlp.fc2": "feed_forward.output_dense"}
    return KeyMap((
        Rename("features.convs.{i}.conv.{p}", "feature_extractor.conv_layers.{i}.conv.{p}"),
        Rename("features.norms.{i}.{p}", "feature_extractor.conv_layers.{i}.layer_norm.{p}"),
        Rename("features.proj_norm.{p}", "feature_projection.layer_norm.{p}"),
        Rename("features.proj.{p}", "feature_projection.projection.{p}"),
        Rename("pos_conv.conv.bias", pos + "bias"),
        Rename("pos_conv.conv.parametrizations.weight.{o}", pos + "parametrizations.weight.{o}"),
        Legacy(pos + "weight_g", pos + "parametrizations.weight.original0"),
        Legacy(pos + "weight_v", pos + "parametrizations.weight.original1"),
        Rename("norm.{p}", "encoder.layer_norm.{p}"),
        *(Rename(f"{ours}{o}.{{p}}", f"{theirs}{t}.{{p}}") for o, t in renames.items()),
        Fuse(ours + "attn.qkv.weight", tuple(p + ".weight" for p in qkv), (dim, dim, dim)),
        Fuse(ours + "attn.qkv.bias", tuple(p + ".bias" for p in qkv), (dim, dim, dim)),
        Skip("masked_spec_embed"),
    ))


def waveform_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_values (B, S)`` and an optional right-padded ``attention_mask (B, S)`` -> ``wav``, ``lengths``."""
    if "input_values" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_values' but got keys {sorted(inputs)}")
    reference = next(model.parameters())
    kwargs = {"wav": torch.as_tensor(inputs["input_values"]).to(reference.device, reference.dtype)}
    if inputs.get("attention_mask") is not None:
        kwargs["lengths"] = torch.as_tensor(inputs["attention_mask"]).to(reference.device).long().sum(-1)
    return kwargs


def _encoder_part(prefix: str, export: bool) -> Part:
    return Part(lambda c: Wav2Vec2Encoder(wav2vec2_config(c)), wav2vec2_key_map, prefix=prefix,
                inputs=waveform_inputs, export_config=wav2vec2_export_config if export else None)


register_architecture("Wav2Vec2Model", parts={"audio_encoder": _encoder_part("", True)},
                      default_part="audio_encoder")
for _name in ("Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"):  # the pretraining checkpoints (wav2vec2-base, -large-lv60)
    register_architecture(_name, parts={"audio_encoder": _encoder_part("wav2vec2.", False)},
                          default_part="audio_encoder")
# from_transformers: the key map reads the config.json dict itself, so the "config" step keeps it whole
register_transformers("Wav2Vec2Model", Mapped(lambda config: config, lambda config: preset("wav2vec2_base")(
    wav2vec2_config(config)), wav2vec2_key_map))
