"""Gemma 4 from the Hub: ``Gemma4ForCausalLM`` (part ``"text_model"``) as a :class:`~omnikit.models.gemma4.Gemma4LM`.

Config translation is one function per direction (:func:`text_config_from_hf`,
:func:`text_config_to_hf`); every structural option of ``Gemma4TextConfig`` is either honoured or
refused with a ``ValueError`` naming it. The key map is per layer: sliding and global layers
differ in head size and key/value heads, K = V layers have no ``v_proj`` and KV-shared layers no
``k_proj`` / ``v_proj`` / ``k_norm`` at all; q/k/v projections are fused into omnikit's ``attn.qkv``.
The MoE's experts are stored fused (``experts.gate_up_proj``, gate rows first) as omnikit keeps them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip
from omnikit.models.gemma4 import Gemma4Config, Gemma4LM, kv_sharing
from omnikit.utils.checks import OmnikitValueError

__all__ = ["text_config_from_hf", "text_config_to_hf", "text_key_map"]

_TYPES = {"sliding_attention": "sliding", "full_attention": "full"}


def _refuse(name: str, value: Any, expected: str) -> OmnikitValueError:
    return OmnikitValueError(f"Gemma 4 config `{name}` = {value!r} is not supported; expected {expected}")


def _rope(config: Config) -> tuple[float, float, float]:
    """``(sliding base, full base, full rotary fraction)`` of ``rope_parameters``."""
    params = config.get("rope_parameters") or {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
    }
    sliding, full = params.get("sliding_attention") or {}, params.get("full_attention") or {}
    if sliding.get("rope_type", "default") != "default" or sliding.get("partial_rotary_factor", 1.0) != 1.0:
        raise _refuse("rope_parameters.sliding_attention", sliding, "rope_type 'default' on the whole head")
    if full.get("rope_type", "default") not in ("default", "proportional") or full.get("factor", 1.0) != 1.0:
        raise _refuse("rope_parameters.full_attention", full, "rope_type 'proportional' or 'default', factor 1")
    fraction = full.get("partial_rotary_factor", 1.0) if full.get("rope_type") == "proportional" else 1.0
    return float(sliding.get("rope_theta", 10_000.0)), float(full.get("rope_theta", 1_000_000.0)), float(fraction)


def _global_layer(config: Config, types: list[str]) -> tuple[int | None, int | None]:
    """``(head_dim, kv heads)`` of full layers from ``per_layer_config`` or ``global_head_dim`` /
    ``num_global_key_value_heads``; refused when layers of one type differ."""
    per_layer = config.get("per_layer_config")
    if per_layer is None:
        heads = config.get("num_global_key_value_heads") if config.get("attention_k_eq_v", False) else None
        return config.get("global_head_dim", 512), heads
    overrides = {int(i): dict(v) for i, v in per_layer.items()}
    allowed = {"head_dim", "num_key_value_heads"}
    for i, override in overrides.items():
        if set(override) - allowed or types[i] != "full":
            raise _refuse(f"per_layer_config[{i}]", override, f"overrides of {sorted(allowed)} on full layers only")
    full = [overrides.get(i, {}) for i, t in enumerate(types) if t == "full"]
    if any(o != full[0] for o in full):
        raise _refuse("per_layer_config", per_layer, "the same override on every full layer")
    return (full[0].get("head_dim"), full[0].get("num_key_value_heads")) if full else (None, None)


def text_config_from_hf(config: Config) -> Gemma4Config:
    """The :class:`Gemma4Config` of a ``Gemma4TextConfig`` dict (``config.json`` or its ``text_config``)."""
    if config.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise _refuse("hidden_activation", config.get("hidden_activation"), "'gelu_pytorch_tanh'")
    for flag in ("attention_bias",):
        if config.get(flag):
            raise _refuse(flag, config.get(flag), "False")
    if config.get("attention_dropout") or 0.0:
        raise _refuse("attention_dropout", config.get("attention_dropout"), "0.0")
    if config.get("use_bidirectional_attention") not in (None, "vision"):
        raise _refuse("use_bidirectional_attention", config.get("use_bidirectional_attention"), "None or 'vision'")
    depth = config["num_hidden_layers"]
    raw_types = config.get("layer_types") or [
        "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(depth)
    ]
    if len(raw_types) != depth or set(raw_types) - set(_TYPES):
        raise _refuse("layer_types", raw_types, f"{depth} entries of {sorted(_TYPES)}")
    types = [_TYPES[t] for t in raw_types]
    types[-1] = "full"  # transformers forces the last layer to full attention
    global_head_dim, global_kv_heads = _global_layer(config, types)
    rope_base, global_rope_base, fraction = _rope(config)
    moe = bool(config.get("enable_moe_block", False))
    per_layer_dim = config.get("hidden_size_per_layer_input", 256) or 0
    return Gemma4Config(
        dim=config["hidden_size"], depth=depth, num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads", 4), head_dim=config.get("head_dim", 256),
        mlp_hidden=config["intermediate_size"], vocab_size=config["vocab_size"], layer_types=tuple(types),
        sliding_window=config.get("sliding_window", 512), global_head_dim=global_head_dim,
        global_kv_heads=global_kv_heads, k_eq_v=bool(config.get("attention_k_eq_v", False)),
        num_kv_shared_layers=config.get("num_kv_shared_layers", 0) or 0,
        double_wide_mlp=bool(config.get("use_double_wide_mlp", False)), norm_eps=config.get("rms_norm_eps", 1e-6),
        rope_base=rope_base, global_rope_base=global_rope_base, global_rotary_fraction=fraction,
        per_layer_dim=per_layer_dim,
        per_layer_vocab=config.get("vocab_size_per_layer_input", config["vocab_size"]) if per_layer_dim else None,
        final_softcap=config.get("final_logit_softcapping"),
        num_experts=(config.get("num_experts") or 0) if moe else 0,
        top_k=(config.get("top_k_experts") or 0) if moe else 0,
        expert_hidden=(config.get("moe_intermediate_size") or 0) if moe else 0,
        tie_embeddings=bool(config.get("tie_word_embeddings", True)),
    )


def text_config_to_hf(config: Gemma4Config) -> Config:
    """A ``Gemma4TextConfig`` dict (``model_type`` ``gemma4_text``) for a :class:`Gemma4Config`."""
    types = config.types()
    full_override = {"head_dim": config.global_head_dim or config.head_dim}
    if config.k_eq_v and config.global_kv_heads:
        full_override["num_key_value_heads"] = config.global_kv_heads
    if not config.causal:
        raise OmnikitValueError("`causal=False` (bidirectional everywhere) has no Gemma4ForCausalLM config")
    return {
        "model_type": "gemma4_text", "hidden_size": config.dim, "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim, "intermediate_size": config.mlp_hidden, "vocab_size": config.vocab_size,
        "layer_types": [f"{t}_attention" for t in types], "sliding_window": config.sliding_window,
        "per_layer_config": {str(i): full_override for i, t in enumerate(types) if t == "full"},
        "attention_k_eq_v": config.k_eq_v, "num_kv_shared_layers": config.num_kv_shared_layers,
        "use_double_wide_mlp": config.double_wide_mlp, "rms_norm_eps": config.norm_eps,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": config.rope_base},
            "full_attention": {"rope_type": "proportional", "rope_theta": config.global_rope_base,
                               "partial_rotary_factor": config.global_rotary_fraction},
        },
        "hidden_size_per_layer_input": config.per_layer_dim,
        "vocab_size_per_layer_input": config.per_layer_vocab or config.vocab_size,
        "final_logit_softcapping": config.final_softcap, "enable_moe_block": bool(config.num_experts),
        "num_experts": config.num_experts or None, "top_k_experts": config.top_k or None,
        "moe_intermediate_size": config.expert_hidden or None, "tie_word_embeddings": config.tie_embeddings,
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "use_bidirectional_attention": None,
        "dtype": "float32",
    }


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
        "ple_gate.weight": "per_layer_input_gate.weight", "ple_proj.weight": "per_layer_projection.weight",
        "ple_norm.weight": "post_per_layer_input_norm.weight", "layer_scalar": "layer_scalar",
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


register_architecture(
    "Gemma4ForCausalLM",
    parts={"text_model": Part(_build_text, _text_map, inputs=text_inputs, export_config=_export_text)},
    default_part="text_model",
)
