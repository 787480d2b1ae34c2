"""Qwen decoder LMs from the Hub: ``Qwen3ForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3MoeForCausalLM``.

Each loads as a :class:`omnikit.fusion.Thinker` without media (a :class:`~omnikit.models.CausalLM`
with ``generate``), part ``"text_model"`` (the default). Qwen2 has q/k/v biases and no qk-norm;
Qwen3 has qk-norm and, with ``attention_bias``, q/k/v and output biases; Qwen3-MoE replaces the
MLP of every ``decoder_sparse_step``-th layer not in ``mlp_only_layers`` by a MoE layer (softmax
router, top-k renormalised when ``norm_topk_prob``), its per-expert weights stacked into
omnikit's grouped experts.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip, StackExperts
from omnikit.layers.decoder import DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.utils.checks import OmnikitValueError

__all__ = ["attention_key_map", "decoder_config", "decoder_key_map", "qwen_config", "sparse_layers"]


def _rope_theta(config: Config) -> float:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise OmnikitValueError(f"rope_type {rope_type!r} is not supported; only 'default' rotary loads")
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def decoder_config(config: Config, *, qk_norm: bool, qkv_bias: bool, out_bias: bool) -> DecoderConfig:
    """The :class:`DecoderConfig` of a Qwen-family ``config.json`` (text part)."""
    if config.get("hidden_act", "silu") != "silu":
        raise OmnikitValueError(f"hidden_act {config.get('hidden_act')!r} is not supported; expected 'silu'")
    if config.get("use_sliding_window"):
        raise OmnikitValueError("use_sliding_window=True is not supported (per-layer windows are not modelled)")
    heads = config["num_attention_heads"]
    return DecoderConfig(
        dim=config["hidden_size"], depth=config["num_hidden_layers"], num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        mlp_hidden=config["intermediate_size"], norm_eps=config.get("rms_norm_eps", 1e-6), qk_norm=qk_norm,
        qkv_bias=qkv_bias, out_bias=out_bias, rope_base=_rope_theta(config), vocab_size=config["vocab_size"],
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def sparse_layers(config: Config) -> list[int]:
    """Indices of Qwen3-MoE layers whose MLP is a MoE layer."""
    experts = config.get("num_experts", config.get("num_local_experts", 0))
    step = config.get("decoder_sparse_step", 1)
    dense = set(config.get("mlp_only_layers") or ())
    return [i for i in range(config["num_hidden_layers"]) if i not in dense and experts > 0 and (i + 1) % step == 0]


def moe_config(config: Config) -> MoEConfig:
    """The :class:`MoEConfig` of a Qwen3-MoE layer."""
    return MoEConfig(
        dim=config["hidden_size"], num_experts=config.get("num_experts", config.get("num_local_experts")),
        top_k=config["num_experts_per_tok"], expert_hidden=config["moe_intermediate_size"],
        normalize_weights=bool(config.get("norm_topk_prob", True)),
    )


def attention_key_map(sizes: tuple[int, int, int], hf_layers: str, ours: str) -> KeyMap:
    """Rules of a pre-norm attention block in transformers' Llama-style naming (``input_layernorm``,
    ``self_attn.{q,k,v,o}_proj``, ``post_attention_layernorm``) onto omnikit's ``norm1``, fused
    ``attn.qkv`` (``sizes`` = q, k, v rows), ``attn.out``, ``norm2``; biases where the model has them."""
    attn = hf_layers + "self_attn."
    qkv = ("q_proj", "k_proj", "v_proj")
    return KeyMap((
        Rename(ours + "norm1.{p}", hf_layers + "input_layernorm.{p}"),
        Rename(ours + "norm2.{p}", hf_layers + "post_attention_layernorm.{p}"),
        Fuse(ours + "attn.qkv.weight", tuple(f"{attn}{p}.weight" for p in qkv), sizes),
        Fuse(ours + "attn.qkv.bias", tuple(f"{attn}{p}.bias" for p in qkv), sizes),
        Rename(ours + "attn.out.{p}", attn + "o_proj.{p}"),
    ))


def decoder_key_map(config: DecoderConfig, expert_hidden: int = 0, hf_layers: str = "model.layers.{i}.",
                    ours: str = "decoder.blocks.{i}.") -> KeyMap:
    """Rules of a Qwen decoder layer stack (attention, norms, dense SwiGLU, or MoE experts of width
    ``expert_hidden`` stacked from per-expert tensors)."""
    heads, kv = config.num_heads, config.num_kv_heads or config.num_heads
    head_dim = config.head_dim or config.dim // heads
    attn = hf_layers + "self_attn."
    mlp = hf_layers + "mlp."
    return attention_key_map((heads * head_dim, kv * head_dim, kv * head_dim), hf_layers, ours) + KeyMap((
        Rename(ours + "attn.q_norm.weight", attn + "q_norm.weight"),
        Rename(ours + "attn.k_norm.weight", attn + "k_norm.weight"),
        Rename(ours + "mlp.gate.weight", mlp + "gate_proj.weight"),
        Rename(ours + "mlp.up.weight", mlp + "up_proj.weight"),
        Rename(ours + "mlp.down.weight", mlp + "down_proj.weight"),
        Rename(ours + "mlp.router.weight", mlp + "gate.weight"),
        StackExperts(ours + "mlp.experts.gate_up", (mlp + "experts.{e}.gate_proj.weight",
                                                    mlp + "experts.{e}.up_proj.weight"),
                     (expert_hidden, expert_hidden)),
        StackExperts(ours + "mlp.experts.down", (mlp + "experts.{e}.down_proj.weight",)),
        Skip(attn + "rotary_emb.inv_freq"),
    ))


def lm_key_map(config: DecoderConfig, expert_hidden: int = 0) -> KeyMap:
    """Rules of a whole Qwen causal LM (embeddings, layers, final norm, LM head)."""
    head = (Skip("lm_head.weight"),) if config.tie_embeddings else (Rename("lm_head.weight", "lm_head.weight"),)
    return KeyMap((
        Rename("embed.weight", "model.embed_tokens.weight"), Rename("decoder.norm.weight", "model.norm.weight"),
        *head, Skip("model.rotary_emb.inv_freq"),
    )) + decoder_key_map(config, expert_hidden)


def qwen_config(config: DecoderConfig, architecture: str) -> Config:
    """A transformers ``config.json`` dict for a dense Qwen2/Qwen3 :class:`DecoderConfig`."""
    config_dict: Config = {
        "architectures": [architecture], "model_type": "qwen3" if architecture.startswith("Qwen3") else "qwen2",
        "hidden_size": config.dim, "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads or config.num_heads,
        "intermediate_size": config.mlp_hidden, "rms_norm_eps": config.norm_eps, "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_embeddings, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},
        "max_position_embeddings": 32768, "dtype": "float32",
    }
    if architecture.startswith("Qwen3"):
        config_dict.update(head_dim=config.head_dim or config.dim // config.num_heads, attention_bias=config.qkv_bias)
    return config_dict


def _dense_export(architecture: str, qk_norm: bool) -> Any:
    def export(model: nn.Module) -> Config | None:
        if not isinstance(model, CausalLM) or any(isinstance(m, MoE) for m in model.modules()):
            return None
        cfg = model.config
        matches = (cfg.mlp == "swiglu" and cfg.norm == "rmsnorm" and cfg.mrope_sections is None
                   and cfg.sliding_window is None and cfg.attention_chunk is None and cfg.qk_norm == qk_norm
                   and (cfg.qkv_bias == cfg.out_bias if qk_norm else cfg.qkv_bias and not cfg.out_bias))
        return qwen_config(cfg, architecture) if matches and cfg.mlp_hidden else None

    return export


def _build_lm(config: DecoderConfig, mlp_factory: Any = None) -> nn.Module:
    from omnikit.fusion.thinker import Thinker

    return Thinker(config, mlp_factory)


def _qwen3(config: Config) -> DecoderConfig:
    bias = bool(config.get("attention_bias", False))
    return decoder_config(config, qk_norm=True, qkv_bias=bias, out_bias=bias)


def _qwen2(config: Config) -> DecoderConfig:
    return decoder_config(config, qk_norm=False, qkv_bias=True, out_bias=False)


def _build_moe(config: Config) -> nn.Module:
    sparse, moe = set(sparse_layers(config)), moe_config(config)
    return _build_lm(_qwen3(config), lambda i: MoE(moe) if i in sparse else "swiglu")


register_architecture(
    "Qwen3ForCausalLM",
    parts={"text_model": Part(lambda c: _build_lm(_qwen3(c)), lambda c: lm_key_map(_qwen3(c)),
                              inputs=text_inputs, export_config=_dense_export("Qwen3ForCausalLM", qk_norm=True))},
    default_part="text_model",
)
register_architecture(
    "Qwen2ForCausalLM",
    parts={"text_model": Part(lambda c: _build_lm(_qwen2(c)), lambda c: lm_key_map(_qwen2(c)),
                              inputs=text_inputs, export_config=_dense_export("Qwen2ForCausalLM", qk_norm=False))},
    default_part="text_model",
)
register_architecture(
    "Qwen3MoeForCausalLM",
    parts={"text_model": Part(_build_moe, lambda c: lm_key_map(_qwen3(c), c["moe_intermediate_size"]),
                              inputs=text_inputs)},
    default_part="text_model",
)
