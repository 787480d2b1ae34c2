"""Gemma 4 from the Hub: ``Gemma4ForCausalLM`` (part ``"text_model"``) as a
:class:`~omnikit.models.gemma4.Gemma4LM`; ``Gemma4ForConditionalGeneration``'s parts ``"text_model"``
``"audio_encoder"`` (a :class:`~omnikit.audio.gemma4.Gemma4AudioEncoder` with the audio
embedder, giving soft tokens of the text width) and ``"vision_encoder"`` (a
:class:`~omnikit.vision.gemma4.Gemma4VisionEncoder` with the vision embedder).

Config translation is one declarative :class:`~omnikit.convert.configmap.ConfigMap` per tower
(:data:`TEXT`, :data:`AUDIO`, :data:`VISION`; the ``*_config_from_hf`` / ``*_to_hf`` functions add
only the text width and the checks no rule expresses); every structural option is either honoured
or refused with a ``ValueError`` naming it. The text key map
is per layer: sliding and global layers differ in head size and key/value heads, K = V layers have
no ``v_proj`` and KV-shared layers no ``k_proj`` / ``v_proj`` / ``k_norm`` at all; q/k/v projections
are fused into omnikit's ``attn.qkv``. The MoE's experts are stored fused (``experts.gate_up_proj``,
gate rows first) as omnikit keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from omnikit.audio.gemma4 import Gemma4AudioConfig, Gemma4AudioEncoder
from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Derived, Field, Fields, Fixed, Refuse
from omnikit.convert.inputs import _as_tensor, text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip
from omnikit.models.gemma4 import Gemma4Config, Gemma4LM, kv_sharing
from omnikit.utils.checks import OmnikitValueError
from omnikit.vision.gemma4 import Gemma4VisionConfig, Gemma4VisionEncoder

__all__ = [
    "AUDIO", "TEXT", "VISION",
    "audio_config_from_hf", "audio_config_to_hf", "audio_key_map", "text_config_from_hf", "text_config_to_hf",
    "text_key_map", "vision_config_from_hf", "vision_key_map",
]

_TYPES = {"sliding_attention": "sliding", "full_attention": "full"}


def _refuse(name: str, value: Any, expected: str) -> OmnikitValueError:
    return OmnikitValueError(f"Gemma 4 config `{name}` = {value!r} is not supported; expected {expected}")


_DEFAULT_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}


def _rope(params: Config, index: int) -> float:
    """Entry ``index`` of ``(sliding base, full base, full rotary fraction)`` of ``rope_parameters``."""
    sliding, full = params.get("sliding_attention") or {}, params.get("full_attention") or {}
    if sliding.get("rope_type", "default") != "default" or sliding.get("partial_rotary_factor", 1.0) != 1.0:
        raise _refuse("rope_parameters.sliding_attention", sliding, "rope_type 'default' on the whole head")
    if full.get("rope_type", "default") not in ("default", "proportional") or full.get("factor", 1.0) != 1.0:
        raise _refuse("rope_parameters.full_attention", full, "rope_type 'proportional' or 'default', factor 1")
    fraction = full.get("partial_rotary_factor", 1.0) if full.get("rope_type") == "proportional" else 1.0
    return float((sliding.get("rope_theta", 10_000.0), full.get("rope_theta", 1_000_000.0), fraction)[index])


def _rope_parameters(value: Any, f: Fields) -> Config:
    return {"sliding_attention": {"rope_type": "default", "rope_theta": f["rope_base"]},
            "full_attention": {"rope_type": "proportional", "rope_theta": f["global_rope_base"],
                               "partial_rotary_factor": f["global_rotary_fraction"]}}


def _rope_rule(ours: str, index: int) -> Convert:
    return Convert(ours, "rope_parameters", lambda params, f: _rope(params, index), _rope_parameters,
                   default=_DEFAULT_ROPE)


def _layer_types(raw: list[str] | None, f: Fields) -> tuple[str, ...]:
    """``layer_types`` (default: every 6th layer full); transformers forces the last layer to full."""
    depth = f["depth"]
    raw = raw or ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(depth)]
    if len(raw) != depth or set(raw) - set(_TYPES):
        raise _refuse("layer_types", raw, f"{depth} entries of {sorted(_TYPES)}")
    return (*(_TYPES[t] for t in raw[:-1]), "full")


def _global_layer(per_layer: Config | None, head_dim: int, heads: int | None, f: Fields) -> tuple[Any, Any]:
    """``(head_dim, kv heads)`` of full layers from ``per_layer_config`` or ``global_head_dim`` /
    ``num_global_key_value_heads``; refused when layers of one type differ."""
    if per_layer is None:
        return head_dim, heads if f["k_eq_v"] else None
    types = f["layer_types"]
    overrides = {int(i): dict(v) for i, v in per_layer.items()}
    allowed = {"head_dim", "num_key_value_heads"}
    for i, override in overrides.items():
        if set(override) - allowed or types[i] != "full":
            raise _refuse(f"per_layer_config[{i}]", override, f"overrides of {sorted(allowed)} on full layers only")
    full = [overrides.get(i, {}) for i, t in enumerate(types) if t == "full"]
    if any(o != full[0] for o in full):
        raise _refuse("per_layer_config", per_layer, "the same override on every full layer")
    return (full[0].get("head_dim"), full[0].get("num_key_value_heads")) if full else (None, None)


def _per_layer_config(value: Any, f: Fields) -> dict[str, Config]:
    override = {"head_dim": f["global_head_dim"]}
    if f["k_eq_v"] and f["global_kv_heads"]:
        override["num_key_value_heads"] = f["global_kv_heads"]
    return {str(i): override for i, t in enumerate(f["layer_types"]) if t == "full"}


def _global_rule(ours: str, index: int) -> Convert:
    return Convert(ours, ("per_layer_config", "global_head_dim", "num_global_key_value_heads"),
                   lambda *values: _global_layer(*values)[index],
                   lambda value, f: (_per_layer_config(value, f), f["global_head_dim"], f["global_kv_heads"]),
                   default=(None, 512, None))


def _moe_rule(ours: str, theirs: str) -> Convert:
    """A MoE size, 0 unless ``enable_moe_block``; written with ``enable_moe_block``."""
    return Convert(ours, ("enable_moe_block", theirs), lambda on, value, f: (value or 0) if on else 0,
                   lambda value, f: (bool(f["num_experts"]), value or None), default=(False, None))


#: ``Gemma4TextConfig`` (``config.json`` of ``Gemma4ForCausalLM`` or ``text_config``) <-> :class:`Gemma4Config`.
#: ``hidden_size_per_layer_input`` null (as transformers writes a disabled one) or absent: no per-layer inputs.
TEXT = ConfigMap((
    Refuse("hidden_activation", ("gelu_pytorch_tanh", "gelu_tanh")), Refuse("attention_bias", (False,)),
    Refuse("attention_dropout", (0.0,)), Refuse("use_bidirectional_attention", (None, "vision")),
    Field("dim", "hidden_size"), Field("depth", "num_hidden_layers"), Field("num_heads", "num_attention_heads"),
    Field("num_kv_heads", "num_key_value_heads", 4), Field("head_dim", "head_dim", 256),
    Field("mlp_hidden", "intermediate_size"), Field("vocab_size", "vocab_size"),
    Convert("layer_types", "layer_types", _layer_types, lambda value, f: [f"{t}_attention" for t in value],
            default=None),
    Field("sliding_window", "sliding_window", 512), Field("k_eq_v", "attention_k_eq_v", False, bool),
    _global_rule("global_head_dim", 0), _global_rule("global_kv_heads", 1),
    Field("num_kv_shared_layers", "num_kv_shared_layers", 0),
    Field("double_wide_mlp", "use_double_wide_mlp", False, bool),
    Field("norm_eps", "rms_norm_eps", 1e-6), _rope_rule("rope_base", 0), _rope_rule("global_rope_base", 1),
    _rope_rule("global_rotary_fraction", 2),
    Convert("per_layer_dim", "hidden_size_per_layer_input", lambda value, f: value or 0, lambda value, f: value,
            default=None),
    Convert("per_layer_vocab", "vocab_size_per_layer_input",
            lambda value, f: (value or f["vocab_size"]) if f["per_layer_dim"] else None,
            lambda value, f: value, default=None),
    Field("final_softcap", "final_logit_softcapping", None), _moe_rule("num_experts", "num_experts"),
    _moe_rule("top_k", "top_k_experts"), _moe_rule("expert_hidden", "moe_intermediate_size"),
    Field("tie_embeddings", "tie_word_embeddings", True, bool), Fixed("causal", True),
    Constant("model_type", "gemma4_text"), Constant("dtype", "float32"),
), target=Gemma4Config)


def text_config_from_hf(config: Config) -> Gemma4Config:
    """The :class:`Gemma4Config` of a ``Gemma4TextConfig`` dict (``config.json`` or its ``text_config``)."""
    return TEXT(config)


def text_config_to_hf(config: Gemma4Config) -> Config:
    """A ``Gemma4TextConfig`` dict (``model_type`` ``gemma4_text``) for a :class:`Gemma4Config`."""
    out = TEXT.write(replace(config, layer_types=config.types(), global_head_dim=config.global_head_dim
                             or config.head_dim, per_layer_vocab=config.per_layer_vocab or config.vocab_size))
    if out is None:
        raise OmnikitValueError("`causal=False` (bidirectional everywhere) has no Gemma4ForCausalLM config")
    return out


def _qkv_rule(config: Gemma4Config, i: int, theirs: str) -> Fuse:
    """The fused q/k/v rule of layer ``i``: its head size and key/value projections depend on its
    type (full layers: ``global_head_dim``, K = V) and on KV sharing (no k/v at all)."""
    full = config.types()[i] == "full"
    head_dim = (config.global_head_dim or config.head_dim) if full else config.head_dim
    kv_heads = (config.global_kv_heads or config.num_kv_heads) if full else config.num_kv_heads
    reuse = kv_sharing(config.types(), config.num_kv_shared_layers)[i][1] is not None
    projections = 0 if reuse else 1 if config.k_eq_v and full else 2
    hf = f"{theirs}layers.{i}.self_attn."
    names = (f"{hf}q_proj.weight", f"{hf}k_proj.weight", f"{hf}v_proj.weight")[: 1 + projections]
    sizes = (config.num_heads * head_dim, *[kv_heads * head_dim] * projections)
    return Fuse(f"decoder.blocks.{i}.attn.qkv.weight", names, sizes)


def text_key_map(config: Gemma4Config, theirs: str = "model.") -> KeyMap:
    """Rules of the whole text model with checkpoint names under ``theirs`` (``"model."`` for the
    causal LM, ``"model.language_model."`` inside ``Gemma4ForConditionalGeneration``)."""
    layer, ours = theirs + "layers.{i}.", "decoder.blocks.{i}."
    per_layer = KeyMap(tuple(_qkv_rule(config, i, theirs) for i in range(config.depth)))
    head = (Skip("lm_head.weight"),) if config.tie_embeddings else (Rename("lm_head.weight", "lm_head.weight"),)
    renames = {
        "attn.q_norm.weight": "self_attn.q_norm.weight", "attn.k_norm.weight": "self_attn.k_norm.weight",
        "attn.out.weight": "self_attn.o_proj.weight", "norm1.weight": "input_layernorm.weight",
        "post_attn_norm.weight": "post_attention_layernorm.weight", "norm2.weight": "pre_feedforward_layernorm.weight",
        "post_mlp_norm.weight": "post_feedforward_layernorm.weight", "mlp.gate.weight": "mlp.gate_proj.weight",
        "mlp.up.weight": "mlp.up_proj.weight", "mlp.down.weight": "mlp.down_proj.weight",
        "moe.router.weight": "router.proj.weight", "moe.router.scale": "router.scale",
        "moe.router.per_expert_scale": "router.per_expert_scale", "moe.experts.gate_up": "experts.gate_up_proj",
        "moe.experts.down": "experts.down_proj", "post_mlp_norm1.weight": "post_feedforward_layernorm_1.weight",
        "pre_moe_norm.weight": "pre_feedforward_layernorm_2.weight",
        "post_moe_norm.weight": "post_feedforward_layernorm_2.weight",
        "per_layer.gate.weight": "per_layer_input_gate.weight", "per_layer.proj.weight": "per_layer_projection.weight",
        "per_layer.norm.weight": "post_per_layer_input_norm.weight", "layer_scalar": "layer_scalar",
    }
    return per_layer + KeyMap((
        Rename("embed.weight", theirs + "embed_tokens.weight"), Rename("decoder.norm.weight", theirs + "norm.weight"),
        Rename("ple.embed.weight", theirs + "embed_tokens_per_layer.weight"),
        Rename("ple.proj.weight", theirs + "per_layer_model_projection.weight"),
        Rename("ple.norm.weight", theirs + "per_layer_projection_norm.weight"),
        *head,
        *(Rename(ours + o, layer + t) for o, t in renames.items()),
    ))


def _build_text(config: Config) -> nn.Module:
    return Gemma4LM(text_config_from_hf(config))


def _text_map(config: Config) -> KeyMap:
    return text_key_map(text_config_from_hf(config))


def _export_text(model: nn.Module) -> Config | None:
    if not isinstance(model, Gemma4LM):
        return None
    return {**text_config_to_hf(model.config), "architectures": ["Gemma4ForCausalLM"]}


def _channels(value: Any, f: Fields) -> tuple[int, int]:
    if len(value) != 2:
        raise _refuse("audio_config.subsampling_conv_channels", value, "two channel counts")
    return tuple(value)


#: ``audio_config`` (``Gemma4AudioConfig``) <-> :class:`Gemma4AudioConfig` fields (``text_dim`` comes from
#: the text config); most of the tower's norms use 1e-6 whatever ``rms_norm_eps`` says, so it must be 1e-6.
AUDIO = ConfigMap((
    Refuse("hidden_act", ("silu",), label="audio_config.hidden_act"),
    Refuse("attention_context_right", (0,), label="audio_config.attention_context_right"),
    Refuse("rms_norm_eps", (1e-6,), label="audio_config.rms_norm_eps"),
    Convert("channels", "subsampling_conv_channels", _channels, lambda value, f: list(value), default=(128, 32)),
    Convert("n_mels", "subsampling_conv_channels", lambda value, f: f["channels"][0],
            lambda value, f: list(f["channels"]), default=(128, 32)),
    Field("dim", "hidden_size", 1024), Field("depth", "num_hidden_layers", 12),
    Field("num_heads", "num_attention_heads", 8), Field("chunk_size", "attention_chunk_size", 12),
    Field("context_left", "attention_context_left", 13), Field("softcap", "attention_logit_cap", 50.0),
    Field("invalid_logit", "attention_invalid_logits_value", -1e9), Field("conv_kernel", "conv_kernel_size", 5),
    Field("residual_weight", "residual_weight", 0.5), Field("clip", "gradient_clipping", 1e10),
    Field("out_dim", "output_proj_dims", 1536), Field("clipped_linears", "use_clipped_linears", True, bool),
    Constant("model_type", "gemma4_audio"),
))


def audio_config_from_hf(config: Config, text_dim: int = 0) -> Gemma4AudioConfig:
    """The :class:`Gemma4AudioConfig` of an ``audio_config`` dict; ``text_dim``: width of the audio
    embedder (``text_config.hidden_size``; 0 for the tower alone)."""
    return Gemma4AudioConfig(**AUDIO.read(config), text_dim=text_dim)


def audio_config_to_hf(config: Gemma4AudioConfig) -> Config:
    """An ``audio_config`` dict (``model_type`` ``gemma4_audio``) for a :class:`Gemma4AudioConfig`."""
    if config.n_mels != config.channels[0]:
        raise OmnikitValueError(f"`n_mels` ({config.n_mels}) must equal channels[0] ({config.channels[0]}) "
                                "to have a Gemma4AudioConfig")
    return AUDIO.write(config)


_BOUNDS = ("input_min", "input_max", "output_min", "output_max")


def _clippable(ours: str, theirs: str, clipped: bool) -> tuple[Rename, ...]:
    bounds = _BOUNDS if clipped else ()
    return (Rename(ours + ".weight", theirs + ".linear.weight"),
            *(Rename(f"{ours}.{b}", f"{theirs}.{b}") for b in bounds))


def audio_key_map(config: Gemma4AudioConfig, tower: str = "audio_tower.", embedder: str = "embed_audio.") -> KeyMap:
    """Rules of the audio tower (checkpoint names under ``tower``) and its embedder (under ``embedder``)."""
    sub, layer, ours = tower + "subsample_conv_projection.", tower + "layers.{i}.", "blocks.{i}."
    clipped = config.clipped_linears
    rules: list[Any] = [
        Rename("conv0.weight", sub + "layer0.conv.weight"), Rename("norm0.weight", sub + "layer0.norm.weight"),
        Rename("conv1.weight", sub + "layer1.conv.weight"), Rename("norm1.weight", sub + "layer1.norm.weight"),
        Rename("proj.weight", sub + "input_proj_linear.weight"), Rename("out_proj.{p}", tower + "output_proj.{p}"),
        Rename("embed.proj.weight", embedder + "embedding_projection.weight"),
    ]
    for n in (1, 2):
        ff, hf = f"{ours}ff{n}.", f"{layer}feed_forward{n}."
        rules += [Rename(ff + "pre_norm.weight", hf + "pre_layer_norm.weight"),
                  Rename(ff + "post_norm.weight", hf + "post_layer_norm.weight"),
                  *_clippable(ff + "fc1", hf + "ffw_layer_1", clipped),
                  *_clippable(ff + "fc2", hf + "ffw_layer_2", clipped)]
    for o, t in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "post")):
        rules += _clippable(f"{ours}attn.{o}", f"{layer}self_attn.{t}", clipped)
    for o, t in (("start", "linear_start"), ("end", "linear_end")):
        rules += _clippable(f"{ours}conv.{o}", f"{layer}lconv1d.{t}", clipped)
    renames = {
        "attn.rel_k.weight": "self_attn.relative_k_proj.weight", "attn.per_dim_scale": "self_attn.per_dim_scale",
        "attn_norm.weight": "norm_pre_attn.weight", "attn_post_norm.weight": "norm_post_attn.weight",
        "out_norm.weight": "norm_out.weight", "conv.conv.weight": "lconv1d.depthwise_conv1d.weight",
        "conv.pre_norm.weight": "lconv1d.pre_layer_norm.weight", "conv.conv_norm.weight": "lconv1d.conv_norm.weight",
    }
    rules += [Rename(ours + o, layer + t) for o, t in renames.items()]
    return KeyMap(tuple(rules))


def audio_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``input_features (B, T, n_mels)`` and ``input_features_mask (B, T)`` (a prefix of valid frames)
    -> ``features (B, n_mels, T)`` and ``lengths``."""
    if "input_features" not in inputs:
        raise OmnikitValueError(f"`inputs` expected 'input_features' but got keys {sorted(inputs)}")
    device = next(model.parameters()).device
    features = _as_tensor(inputs["input_features"], "input_features").float().to(device)
    if features.ndim != 3:
        raise OmnikitValueError(f"`inputs['input_features']` expected (B, T, n_mels) but got {tuple(features.shape)}")
    kwargs: dict[str, Any] = {"features": features.transpose(1, 2)}
    mask = inputs.get("input_features_mask")
    if mask is not None:
        mask = _as_tensor(mask, "input_features_mask").to(device).bool()
        lengths = mask.sum(-1)
        if tuple(mask.shape) != tuple(features.shape[:2]) or not torch.equal(
                mask, torch.arange(mask.shape[1], device=device) < lengths[:, None]):
            raise OmnikitValueError("`inputs['input_features_mask']` expected (B, T) with valid frames first")
        kwargs["lengths"] = lengths
    return kwargs


#: ``vision_config`` <-> :class:`Gemma4VisionConfig` fields (``text_dim`` from the text config).
VISION = ConfigMap((
    Refuse("hidden_activation", ("gelu_pytorch_tanh", "gelu_tanh"), label="vision_config.hidden_activation"),
    *(Refuse(flag, (False,), label=f"vision_config.{flag}") for flag in ("attention_bias", "use_clipped_linears")),
    Refuse("attention_dropout", (0.0,), label="vision_config.attention_dropout"),
    Refuse("rope_parameters.rope_type", ("axial",), label="vision_config.rope_parameters.rope_type"),
    Refuse("rope_parameters.factor", (1.0,), label="vision_config.rope_parameters.factor", write_value=False),
    Field("dim", "hidden_size", 768), Field("depth", "num_hidden_layers", 16),
    Field("num_heads", "num_attention_heads", 12),
    Derived("num_kv_heads", "num_key_value_heads", lambda f: f["num_heads"]), Field("head_dim", "head_dim", 64),
    Field("mlp_hidden", "intermediate_size", 3072), Field("patch_size", "patch_size", 16),
    Field("position_table", "position_embedding_size", 10240), Field("pool", "pooling_kernel_size", 3),
    Field("rope_base", "rope_parameters.rope_theta", 100.0, float), Field("norm_eps", "rms_norm_eps", 1e-6),
    Field("standardize", "standardize", False, bool), Constant("model_type", "gemma4_vision"),
))


def vision_config_from_hf(config: Config, text_dim: int = 0) -> Gemma4VisionConfig:
    """The :class:`Gemma4VisionConfig` of a ``vision_config`` dict; ``text_dim``: width of the embedder."""
    return Gemma4VisionConfig(**VISION.read(config), text_dim=text_dim)


def vision_key_map(config: Gemma4VisionConfig, tower: str = "vision_tower.", embedder: str = "embed_vision.") -> KeyMap:
    """Rules of the vision tower (checkpoint names under ``tower``) and its embedder (under ``embedder``)."""
    layer, ours = tower + "encoder.layers.{i}.", "blocks.{i}."
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    attn = layer + "self_attn."
    renames = {
        "attn.out.weight": "self_attn.o_proj.linear.weight", "attn.q_norm.weight": "self_attn.q_norm.weight",
        "attn.k_norm.weight": "self_attn.k_norm.weight", "norm1.weight": "input_layernorm.weight",
        "post_attn_norm.weight": "post_attention_layernorm.weight", "norm2.weight": "pre_feedforward_layernorm.weight",
        "post_mlp_norm.weight": "post_feedforward_layernorm.weight", "mlp.gate.weight": "mlp.gate_proj.linear.weight",
        "mlp.up.weight": "mlp.up_proj.linear.weight", "mlp.down.weight": "mlp.down_proj.linear.weight",
    }
    return KeyMap((
        Rename("patch_proj.weight", tower + "patch_embedder.input_proj.weight"),
        Rename("position_table", tower + "patch_embedder.position_embedding_table"),
        Rename("std_bias", tower + "std_bias"), Rename("std_scale", tower + "std_scale"),
        Rename("embed.proj.weight", embedder + "embedding_projection.weight"),
        Fuse(ours + "attn.qkv.weight", tuple(f"{attn}{x}_proj.linear.weight" for x in "qkv"), (q, kv, kv)),
        *(Rename(ours + o, layer + t) for o, t in renames.items()),
    ))


def vision_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``pixel_values (B, N, 3 p^2)`` and ``image_position_ids (B, N, 2)`` -> the tower's arguments."""
    missing = sorted({"pixel_values", "image_position_ids"} - set(inputs))
    if missing:
        raise OmnikitValueError(f"`inputs` expected {missing} but got keys {sorted(inputs)}")
    device = next(model.parameters()).device
    return {"pixel_values": _as_tensor(inputs["pixel_values"], "pixel_values").float().to(device),
            "positions": _as_tensor(inputs["image_position_ids"], "image_position_ids").long().to(device)}


def _build_vision(config: Config) -> nn.Module:
    return Gemma4VisionEncoder(vision_config_from_hf(_vision_part(config), _text_part(config).get("hidden_size", 0)))


def _vision_part(config: Config) -> Config:
    vision = config.get("vision_config")
    if not vision:
        raise OmnikitValueError("`part` 'vision_encoder' needs a checkpoint with a vision_config (this one has none)")
    return vision


def _vision_map(config: Config) -> KeyMap:
    return vision_key_map(vision_config_from_hf(_vision_part(config)))


def _text_part(config: Config) -> Config:
    """``text_config`` with the top-level ``tie_word_embeddings`` (default True), the one that ties
    ``Gemma4ForConditionalGeneration``'s ``lm_head`` in transformers (the text config's is not read)."""
    return {**(config.get("text_config") or {}), "tie_word_embeddings": config.get("tie_word_embeddings", True)}


def _build_audio(config: Config) -> nn.Module:
    return Gemma4AudioEncoder(audio_config_from_hf(_audio_part(config), _text_part(config).get("hidden_size", 0)))


def _audio_part(config: Config) -> Config:
    audio = config.get("audio_config")
    if not audio:
        raise OmnikitValueError("`part` 'audio_encoder' needs a checkpoint with an audio_config (this one has none)")
    return audio


def _export_audio(model: nn.Module) -> Config | None:
    if not isinstance(model, Gemma4AudioEncoder) or not model.config.text_dim:
        return None
    return {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
            "audio_config": audio_config_to_hf(model.config), "text_config": {"hidden_size": model.config.text_dim}}


register_architecture(
    "Gemma4ForCausalLM",
    parts={"text_model": Part(_build_text, _text_map, inputs=text_inputs, export_config=_export_text)},
    default_part="text_model",
)
def _build_omni(config: Config) -> nn.Module:
    from omnikit.fusion.gemma4_omni import Gemma4Omni

    text = _text_part(config)
    if text.get("use_bidirectional_attention") == "all":
        raise _refuse("text_config.use_bidirectional_attention", "all", "None or 'vision'")
    vision = config.get("vision_config")
    audio = config.get("audio_config")
    return Gemma4Omni(
        Gemma4LM(text_config_from_hf(text)),
        Gemma4VisionEncoder(vision_config_from_hf(vision, text["hidden_size"])) if vision else None,
        Gemma4AudioEncoder(audio_config_from_hf(audio, text["hidden_size"])) if audio else None,
        image_token_id=config.get("image_token_id", 258_880), audio_token_id=config.get("audio_token_id", 258_881),
        video_token_id=config.get("video_token_id", 258_884),
        pad_token_id=text.get("pad_token_id", 0) or 0,
        bidirectional_vision=text.get("use_bidirectional_attention") == "vision",
    )


def _omni_map(config: Config) -> KeyMap:
    rules = text_key_map(text_config_from_hf(_text_part(config)), "model.language_model.").under("lm.")
    if config.get("vision_config"):
        rules = rules + vision_key_map(vision_config_from_hf(config["vision_config"]), "model.vision_tower.",
                                       "model.embed_vision.").under("vision.")
    if config.get("audio_config"):
        rules = rules + audio_key_map(audio_config_from_hf(config["audio_config"], 1), "model.audio_tower.",
                                      "model.embed_audio.").under("audio.")
    return rules


def omni_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A Gemma 4 processor's outputs (``input_ids``, ``attention_mask``, ``pixel_values``,
    ``image_position_ids``, ``input_features``, ``input_features_mask``) -> :class:`Gemma4Omni` arguments."""
    if inputs.get("pixel_values_videos") is not None:
        raise OmnikitValueError("`inputs['pixel_values_videos']`: Gemma 4 video is not supported")
    kwargs = text_inputs(model, inputs)
    if "pixel_values" in inputs:
        vision = vision_inputs(model, inputs)
        kwargs.update(pixel_values=vision["pixel_values"], image_positions=vision["positions"])
    if "input_features" in inputs:
        audio = audio_inputs(model, inputs)
        kwargs.update(audio_features=audio["features"], audio_lengths=audio.get("lengths"))
    return kwargs


register_architecture(
    "Gemma4ForConditionalGeneration",
    parts={
        "model": Part(_build_omni, _omni_map, owns=("model.", "lm_head."), inputs=omni_inputs),
        "text_model": Part(lambda c: _build_text(_text_part(c)), lambda c: text_key_map(text_config_from_hf(
            _text_part(c)), "model.language_model."), owns=("model.language_model.", "lm_head."), inputs=text_inputs),
        "vision_encoder": Part(_build_vision, _vision_map, prefix="model.",
                               owns=("model.vision_tower.", "model.embed_vision."), inputs=vision_inputs),
        "audio_encoder": Part(_build_audio, lambda c: audio_key_map(audio_config_from_hf(_audio_part(c), 1)),
                              prefix="model.", owns=("model.audio_tower.", "model.embed_audio."), inputs=audio_inputs,
                              export_config=_export_audio),
    },
    default_part="model",
)
