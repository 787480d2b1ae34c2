"""Qwen decoder LMs from the Hub: ``Qwen3ForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3MoeForCausalLM``.

Each loads as a :class:`omnikit.fusion.Thinker` without media (a :class:`~omnikit.models.CausalLM`
with ``generate``), part ``"text_model"`` (the default). Qwen2 has q/k/v biases and no qk-norm;
Qwen3 has qk-norm and, with ``attention_bias``, q/k/v and output biases; Qwen3-MoE replaces the
MLP of every ``decoder_sparse_step``-th layer not in ``mlp_only_layers`` by a MoE layer (softmax
router, top-k renormalised when ``norm_topk_prob``), its per-expert weights stacked into
omnikit's grouped experts. ``from_transformers`` converts ``Qwen3DecoderLayer`` and the Qwen MoE
blocks with the same config and key maps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from omnikit.convert.architectures import Config, Mapped, register_architecture, register_transformers
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Derived, Field, Fixed, Refuse, Same
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip, StackExperts
from omnikit.layers.decoder import DecoderBlock, DecoderConfig
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.utils.checks import OmnikitValueError

__all__ = [
    "DECODER",
    "MOE",
    "MROPE",
    "QWEN2",
    "QWEN3",
    "attention_key_map",
    "decoder_config",
    "decoder_key_map",
    "interleaved",
    "lm_key_map",
    "moe_config",
    "moe_key_map",
    "sparse_layers",
]

#: What every Qwen decoder's config.json shares (Qwen2, Qwen3, their MoE and Omni text models).
DECODER = ConfigMap((
    Refuse("hidden_act", ("silu",)), Refuse("use_sliding_window", (False,), write_value=False),
    Refuse("rope_parameters.rope_type", ("default",), ("rope_scaling.rope_type", "rope_scaling.type")),
    Field("dim", "hidden_size"), Field("depth", "num_hidden_layers"), Field("num_heads", "num_attention_heads"),
    Derived("num_kv_heads", "num_key_value_heads", lambda f: f["num_heads"]),
    Derived("head_dim", "head_dim", lambda f: f["dim"] // f["num_heads"]),
    Field("mlp_hidden", "intermediate_size"), Field("norm_eps", "rms_norm_eps", 1e-6),
    Field("rope_base", "rope_parameters.rope_theta", 10000.0, float, ("rope_scaling.rope_theta", "rope_theta")),
    Field("vocab_size", "vocab_size"), Field("tie_embeddings", "tie_word_embeddings", False, bool),
    Fixed("mlp", "swiglu"), Fixed("norm", "rmsnorm"), Fixed("sliding_window", None), Fixed("attention_chunk", None),
), target=DecoderConfig)
_PLAIN_ROPE = ConfigMap((Fixed("mrope_sections", None), Fixed("mrope_interleaved", False),
                         Constant("max_position_embeddings", 32768), Constant("dtype", "float32")))
#: Qwen3: qk-norm; ``attention_bias`` puts biases on q/k/v and the output projection.
QWEN3 = DECODER + _PLAIN_ROPE + ConfigMap((
    Fixed("qk_norm", True), Field("qkv_bias", "attention_bias", False, bool), Same("out_bias", "qkv_bias"),
    Constant("model_type", "qwen3"),
))
#: Qwen2: q/k/v biases, no qk-norm.
QWEN2 = DECODER + _PLAIN_ROPE + ConfigMap((
    Fixed("qk_norm", False), Fixed("qkv_bias", True), Fixed("out_bias", False), Constant("model_type", "qwen2"),
))
#: A Qwen MoE layer (routed SwiGLU experts, softmax router).
MOE = ConfigMap((
    Refuse("hidden_act", ("silu",)), Field("dim", "hidden_size"),
    Field("num_experts", "num_experts", fallbacks=("num_local_experts",)), Field("top_k", "num_experts_per_tok"),
    Field("expert_hidden", "moe_intermediate_size"), Field("normalize_weights", "norm_topk_prob", True, bool),
), target=MoEConfig)
#: Qwen2-MoE's layer adds a shared expert scaled by ``sigmoid(shared_expert_gate(x))``.
SHARED_MOE = MOE + ConfigMap((Field("shared_hidden", "shared_expert_intermediate_size"), Fixed("shared_gate", True)))


def _sections(value: Any, fields: Any) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise OmnikitValueError(f"text_config rope parameters expected a 3-entry mrope_section but got {value!r}")
    return tuple(value)


def interleaved(value: Any, fields: Any) -> bool:
    """The ``rope_parameters.interleaved`` a Qwen3-Omni M-RoPE requires (``ValueError`` otherwise)."""
    if not value:
        raise OmnikitValueError("text_config rope parameters expected interleaved M-RoPE but got interleaved=False")
    return True


#: M-RoPE ``(t, h, w)`` sections of a Qwen-Omni text model (required, 3 entries).
MROPE = ConfigMap((Convert("mrope_sections", "rope_parameters.mrope_section", _sections, lambda v, f: list(v),
                           fallbacks=("rope_scaling.mrope_section",)),))
def decoder_config(config: Config, *, qk_norm: bool, qkv_bias: bool, out_bias: bool) -> DecoderConfig:
    """The :class:`DecoderConfig` of a Qwen-family ``config.json`` (text part) with these attention options."""
    return (DECODER + ConfigMap((Fixed("qk_norm", qk_norm), Fixed("qkv_bias", qkv_bias),
                                 Fixed("out_bias", out_bias))))(config)


def moe_config(config: Config) -> MoEConfig:
    """The :class:`MoEConfig` of a Qwen3-MoE layer."""
    return MOE(config)


def sparse_layers(config: Config) -> list[int]:
    """Indices of Qwen3-MoE layers whose MLP is a MoE layer."""
    experts = config.get("num_experts", config.get("num_local_experts", 0))
    step = config.get("decoder_sparse_step", 1)
    dense = set(config.get("mlp_only_layers") or ())
    return [i for i in range(config["num_hidden_layers"]) if i not in dense and experts > 0 and (i + 1) % step == 0]


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


def moe_key_map(expert_hidden: int, hf: str = "", ours: str = "") -> KeyMap:
    """Rules of a :class:`MoE` <- a Qwen sparse block (``gate``, per-expert or in-memory stacked
    ``experts``, optional ``shared_expert`` and ``shared_expert_gate``)."""
    return KeyMap((
        Rename(ours + "router.weight", hf + "gate.weight"),
        StackExperts(ours + "experts.gate_up", (hf + "experts.{e}.gate_proj.weight", hf + "experts.{e}.up_proj.weight"),
                     (expert_hidden, expert_hidden), stacked=hf + "experts.gate_up_proj"),
        StackExperts(ours + "experts.down", (hf + "experts.{e}.down_proj.weight",), stacked=hf + "experts.down_proj"),
        Rename(ours + "shared.{m}.weight", hf + "shared_expert.{m}_proj.weight"),
        Rename(ours + "shared_gate.weight", hf + "shared_expert_gate.weight"),
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
        *(Rename(f"{ours}mlp.{m}.weight", f"{mlp}{m}_proj.weight") for m in ("gate", "up", "down")),
        Skip(attn + "rotary_emb.inv_freq"),
    )) + moe_key_map(expert_hidden, mlp, ours + "mlp.")


def lm_key_map(config: DecoderConfig, expert_hidden: int = 0) -> KeyMap:
    """Rules of a whole Qwen causal LM (embeddings, layers, final norm, LM head)."""
    head = (Skip("lm_head.weight"),) if config.tie_embeddings else (Rename("lm_head.weight", "lm_head.weight"),)
    return KeyMap((
        Rename("embed.weight", "model.embed_tokens.weight"), Rename("decoder.norm.weight", "model.norm.weight"),
        *head, Skip("model.rotary_emb.inv_freq"),
    )) + decoder_key_map(config, expert_hidden)


def _build_lm(config: DecoderConfig, mlp_factory: Any = None) -> nn.Module:
    from omnikit.fusion.thinker import Thinker

    return Thinker(config, mlp_factory)


def _export(cmap: ConfigMap, architecture: str) -> Callable[[nn.Module], Config | None]:
    def export(model: nn.Module) -> Config | None:
        if not isinstance(model, CausalLM) or any(isinstance(m, MoE) for m in model.modules()):
            return None
        config = cmap.write(model.config)
        return None if config is None else {"architectures": [architecture], **config}

    return export


def _dense(cmap: ConfigMap, architecture: str) -> Mapped:
    return Mapped(cmap, _build_lm, lm_key_map, _export(cmap, architecture))


def _moe_lm(config: Config) -> tuple[DecoderConfig, MoEConfig, frozenset[int]]:
    return QWEN3(config), MOE(config), frozenset(sparse_layers(config))


def _build_moe_lm(config: tuple[DecoderConfig, MoEConfig, frozenset[int]]) -> nn.Module:
    decoder, moe, sparse = config
    return _build_lm(decoder, lambda i: MoE(moe) if i in sparse else "swiglu")


def _block(config: DecoderConfig) -> DecoderBlock:
    return DecoderBlock(config.dim, config.num_heads, config.num_kv_heads, config.head_dim,
                        mlp_hidden=config.mlp_hidden, mlp=config.mlp, norm=config.norm, norm_eps=config.norm_eps,
                        qk_norm=config.qk_norm, qkv_bias=config.qkv_bias, out_bias=config.out_bias,
                        rope_base=config.rope_base, sliding_window=config.sliding_window)


for _name, _map in (("Qwen3ForCausalLM", QWEN3), ("Qwen2ForCausalLM", QWEN2)):
    register_architecture(_name, parts={"text_model": _dense(_map, _name).part(inputs=text_inputs)},
                          default_part="text_model")
register_architecture("Qwen3MoeForCausalLM", default_part="text_model", parts={"text_model": Mapped(
    _moe_lm, _build_moe_lm, lambda c: lm_key_map(c[0], c[1].expert_hidden)).part(inputs=text_inputs)})

register_transformers("Qwen3DecoderLayer", Mapped(QWEN3, _block, lambda c: decoder_key_map(c, 0, "", "")),
                      lambda layer: layer.self_attn.config.to_dict())
register_transformers("Qwen3MoeSparseMoeBlock", Mapped(MOE, MoE, lambda c: moe_key_map(c.expert_hidden)),
                      lambda block: block.experts.config.to_dict())
for _name in ("Qwen2MoeSparseMoeBlock", "Qwen3OmniMoeTalkerTextSparseMoeBlock"):
    register_transformers(_name, Mapped(SHARED_MOE, MoE, lambda c: moe_key_map(c.expert_hidden)),
                          lambda block: block.experts.config.to_dict())
