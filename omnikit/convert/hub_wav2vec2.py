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
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from omnikit.audio.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder
from omnikit.convert.architectures import Mapped, exporter, preset, register_architecture, register_transformers
from omnikit.convert.configmap import REQUIRED, ConfigMap, Constant, Convert, Field, Fields, Fixed, Refuse
from omnikit.convert.keymap import Fuse, KeyMap, Legacy, Rename, Skip
from omnikit.utils.checks import OmnikitValueError

__all__ = ["WAV2VEC2", "wav2vec2_key_map"]


def _conv_layers(values: tuple[int, ...], fields: Fields) -> tuple[list[int], int]:
    return list(values), len(values)


#: The :class:`Wav2Vec2Config` of a transformers ``Wav2Vec2Config`` ``config.json``. Written with SpecAugment
#: off (``mask_time_prob=0``: no mask vector to write); transformers' GroupNorm then normalises over padding
#: that omnikit's ``mask_group_norm=True`` leaves out (read as False); unpadded batches agree.
WAV2VEC2 = ConfigMap((
    Constant("model_type", "wav2vec2"), Constant("mask_time_prob", 0.0),
    Refuse("hidden_act", ("gelu",)), Refuse("feat_extract_activation", ("gelu",)),
    Refuse("add_adapter", (False,), write_value=False), Refuse("adapter_attn_dim", (None,), write_value=False),
    Refuse("layer_norm_eps", (1e-5,)), Fixed("norm_eps", 1e-5),  # the conv norms use 1e-5 too
    Convert("conv_channels", ("conv_dim", "num_feat_extract_layers"), lambda dims, n, f: tuple(dims), _conv_layers,
            (REQUIRED, None)),
    Field("conv_kernels", "conv_kernel", cast=tuple), Field("conv_strides", "conv_stride", cast=tuple),
    Field("conv_bias", "conv_bias", False), Field("feat_norm", "feat_extract_norm", "group"),
    Field("dim", "hidden_size"), Field("depth", "num_hidden_layers"), Field("num_heads", "num_attention_heads"),
    Field("mlp_hidden", "intermediate_size"), Field("pos_kernel", "num_conv_pos_embeddings", 128),
    Field("pos_groups", "num_conv_pos_embedding_groups", 16),
    Field("stable_layer_norm", "do_stable_layer_norm", False), Fixed("mask_group_norm", False),
), target=Wav2Vec2Config)


def wav2vec2_key_map(config: Wav2Vec2Config) -> KeyMap:
    """Rules of :class:`Wav2Vec2Encoder` <- transformers' ``Wav2Vec2Model`` (names relative to it)."""
    dim = config.dim
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


#: ``save_hf`` exports any :class:`Wav2Vec2Encoder` (``mask_group_norm`` is not part of the published layout).
ENCODER = Mapped(WAV2VEC2, Wav2Vec2Encoder, wav2vec2_key_map, exporter(
    WAV2VEC2.write, Wav2Vec2Encoder, "Wav2Vec2Model", lambda model: replace(model.config, mask_group_norm=False)))
register_architecture("Wav2Vec2Model", parts={"audio_encoder": ENCODER.part(inputs=waveform_inputs)},
                      default_part="audio_encoder")
for _name in ("Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining"):  # the pretraining checkpoints (wav2vec2-base, -large-lv60)
    register_architecture(_name, parts={"audio_encoder": ENCODER.part("wav2vec2.", inputs=waveform_inputs,
                                                                      exported=False)},
                          default_part="audio_encoder")
register_transformers("Wav2Vec2Model", Mapped(WAV2VEC2, preset("wav2vec2_base"), wav2vec2_key_map))
