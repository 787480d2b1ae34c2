"""Hybrid linear-attention LMs from the Hub: ``Qwen3NextForCausalLM``, ``Qwen3_5ForCausalLM``,
``Qwen3_5MoeForCausalLM``.

Each loads as a :class:`~omnikit.models.CausalLM` on a :class:`~omnikit.layers.hybrid.HybridConfig`
(part ``"text_model"``, the default): layer ``i`` is gated full attention when ``layer_types[i] ==
"full_attention"`` (every 4th), Gated DeltaNet otherwise. Full attention: q_proj emits each head's
query and sigmoid output gate, q/k norm, rotary on ``partial_rotary_factor`` of the head. Norms are
zero-centred (``x * (1 + w)``) except the DeltaNet's gated norm. Qwen3-Next fuses the DeltaNet
projections per key head (``in_proj_qkvz``, ``in_proj_ba``: the ``"fused"`` layout); Qwen3.5
splits them (``in_proj_qkv/z/b/a``). MLPs: Qwen3.5 dense SwiGLU; Qwen3-Next and Qwen3.5-MoE a MoE
layer (softmax router, top-k renormalised) with a sigmoid-gated shared expert, per-expert
tensors on disk stacked into omnikit's grouped experts.

The published Qwen3.5 checkpoints are vision-language (``Qwen3_5ForConditionalGeneration``,
``Qwen3_5MoeForConditionalGeneration``): :mod:`omnikit.convert.hub_qwen3_5_vl` registers them on the
functions of this module.

Not modelled: the multi-token-prediction head. Its ``mtp.*`` tensors are skipped by an explicit
rule on load and not written back. Qwen3.5 text checkpoints load from transformers' layout
(``model.layers.*``, what ``Qwen3_5ForCausalLM.save_pretrained`` writes); M-RoPE sections are
ignored for text (equal t/h/w ids make M-RoPE the 1-D rotary).

The config translation is one function per direction: :func:`hybrid_config` (``config.json`` ->
:class:`HybridConfig`) and :func:`hf_config` (:class:`HybridConfig` and MoE settings -> ``config.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.hub_qwen import lm_key_map, sparse_layers
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.utils.checks import OmnikitValueError

__all__ = ["ARCHITECTURES", "build_text", "export_text_config", "hf_config", "hybrid_config", "hybrid_key_map",
           "moe_config", "text_key_map"]

#: architecture -> (``model_type``, DeltaNet projection layout, MoE MLPs).
ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "Qwen3NextForCausalLM": ("qwen3_next", "fused", True),
    "Qwen3_5ForCausalLM": ("qwen3_5_text", "split", False),
    "Qwen3_5MoeForCausalLM": ("qwen3_5_moe_text", "split", True),
}

#: Deepest name below ``mtp.`` in published checkpoints (``layers.0.mlp.experts.7.up_proj.weight``) plus room.
_MTP_DEPTH = 9


def _full_attention_interval(config: Config) -> int:
    """The ``n`` of ``layer_types`` (full attention at ``i % n == n - 1``); ValueError for another pattern."""
    depth = config["num_hidden_layers"]
    types = config.get("layer_types")
    interval = config.get("full_attention_interval", 4)
    if types is None:
        return interval
    full = [i for i, kind in enumerate(types) if kind == "full_attention"]
    interval = full[0] + 1 if full else depth + 1
    expected = ["full_attention" if i % interval == interval - 1 else "linear_attention" for i in range(depth)]
    if list(types) != expected:
        raise OmnikitValueError(
            f"`layer_types` expected full attention every n-th layer (n = {interval}) but got {types}"
        )
    return interval


def hybrid_config(config: Config, architecture: str) -> HybridConfig:
    """The :class:`HybridConfig` of a Qwen3-Next / Qwen3.5 ``config.json`` (checked, not silently cast)."""
    if config.get("hidden_act", "silu") != "silu":
        raise OmnikitValueError(f"hidden_act {config.get('hidden_act')!r} is not supported; expected 'silu'")
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise OmnikitValueError(f"rope_type {rope.get('rope_type')!r} is not supported; only 'default' rotary loads")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    factor = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 0.25))
    bias = bool(config.get("attention_bias", False))
    _, projection, moe = ARCHITECTURES[architecture]
    return HybridConfig(
        dim=config["hidden_size"], depth=config["num_hidden_layers"], num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads, head_dim=head_dim,
        mlp_hidden=None if moe and "intermediate_size" not in config else config["intermediate_size"],
        norm="rmsnorm_zero_centered", norm_eps=config.get("rms_norm_eps", 1e-6), qk_norm=True, qkv_bias=bias,
        out_bias=bias, rope_base=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        rotary_dim=int(head_dim * factor), attn_output_gate=True, vocab_size=config["vocab_size"],
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        linear_heads=config["linear_num_key_heads"], linear_head_dim=config["linear_key_head_dim"],
        linear_v_heads=config["linear_num_value_heads"], linear_v_head_dim=config["linear_value_head_dim"],
        full_attention_interval=_full_attention_interval(config), conv_size=config.get("linear_conv_kernel_dim", 4),
        linear_projection=projection,
    )


def moe_config(config: Config) -> MoEConfig:
    """The MoE layer of Qwen3-Next / Qwen3.5-MoE: routed experts plus a sigmoid-gated shared expert."""
    return MoEConfig(
        dim=config["hidden_size"], num_experts=config["num_experts"], top_k=config["num_experts_per_tok"],
        expert_hidden=config["moe_intermediate_size"], normalize_weights=bool(config.get("norm_topk_prob", True)),
        shared_hidden=config["shared_expert_intermediate_size"], shared_gate=True,
    )


def hf_config(config: HybridConfig, architecture: str, moe: MoEConfig | None = None,
              sparse: list[int] | None = None) -> Config:
    """The transformers ``config.json`` dict of a hybrid LM (``moe`` on the layers ``sparse``, all by default)."""
    model_type, _, has_moe = ARCHITECTURES[architecture]
    head_dim = config.head_dim or config.dim // config.num_heads
    interval = config.full_attention_interval
    out: Config = {
        "architectures": [architecture], "model_type": model_type, "hidden_size": config.dim,
        "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads or config.num_heads, "head_dim": head_dim,
        "rms_norm_eps": config.norm_eps, "vocab_size": config.vocab_size, "hidden_act": "silu",
        "tie_word_embeddings": config.tie_embeddings, "attention_bias": config.qkv_bias,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base,
                            "partial_rotary_factor": (config.rotary_dim or head_dim) / head_dim},
        "layer_types": ["full_attention" if i % interval == interval - 1 else "linear_attention"
                        for i in range(config.depth)],
        "linear_num_key_heads": config.linear_heads or config.num_heads,
        "linear_key_head_dim": config.linear_head_dim or config.dim // (config.linear_heads or config.num_heads),
        "linear_num_value_heads": config.linear_v_heads or config.linear_heads or config.num_heads,
        "linear_conv_kernel_dim": config.conv_size, "max_position_embeddings": 32768, "dtype": "float32",
    }
    out["linear_value_head_dim"] = config.linear_v_head_dim or out["linear_key_head_dim"]
    if config.mlp_hidden is not None:
        out["intermediate_size"] = config.mlp_hidden
    if has_moe and moe is not None:
        out.update(num_experts=moe.num_experts, num_experts_per_tok=moe.top_k,
                   moe_intermediate_size=moe.expert_hidden, shared_expert_intermediate_size=moe.shared_hidden)
        if architecture == "Qwen3NextForCausalLM":
            dense = [i for i in range(config.depth) if sparse is not None and i not in sparse]
            out.update(norm_topk_prob=moe.normalize_weights, decoder_sparse_step=1, mlp_only_layers=dense)
    return out


def _mtp_skips() -> tuple[Skip, ...]:
    """Skip every ``mtp.*`` tensor (the multi-token-prediction head, not modelled), at any depth."""
    return tuple(Skip("mtp." + ".".join(f"{{n{d}}}" for d in range(depth))) for depth in range(1, _MTP_DEPTH + 1))


def hybrid_key_map(config: HybridConfig, expert_hidden: int = 0) -> KeyMap:
    """Rules of a whole Qwen3-Next / Qwen3.5 causal LM onto :class:`CausalLM` keys."""
    heads, kv = config.num_heads, config.num_kv_heads or config.num_heads
    head_dim = config.head_dim or config.dim // heads
    ours, theirs = "decoder.blocks.{i}.", "model.layers.{i}."
    attn, mixer, linear, mlp = theirs + "self_attn.", ours + "mixer.", theirs + "linear_attn.", theirs + "mlp."
    gated_q = (2 * heads * head_dim, kv * head_dim, kv * head_dim)  # q_proj: each head's query then its gate
    v_heads = config.linear_v_heads or config.linear_heads or config.num_heads
    projections = (
        (Rename(mixer + "qkvz.weight", linear + "in_proj_qkvz.weight"),
         Rename(mixer + "ba.weight", linear + "in_proj_ba.weight"))
        if config.linear_projection == "fused" else
        (Rename(mixer + "qkv.weight", linear + "in_proj_qkv.weight"),
         Rename(mixer + "gate.weight", linear + "in_proj_z.weight"),
         Fuse(mixer + "beta_decay.weight", (linear + "in_proj_b.weight", linear + "in_proj_a.weight"),
              (v_heads, v_heads)))
    )
    return KeyMap((
        Fuse(ours + "attn.qkv.weight", tuple(f"{attn}{p}.weight" for p in ("q_proj", "k_proj", "v_proj")), gated_q),
        Fuse(ours + "attn.qkv.bias", tuple(f"{attn}{p}.bias" for p in ("q_proj", "k_proj", "v_proj")), gated_q),
        *projections,
        Rename(mixer + "conv.weight", linear + "conv1d.weight"),
        Rename(mixer + "A_log", linear + "A_log"),
        Rename(mixer + "dt_bias", linear + "dt_bias"),
        Rename(mixer + "norm.weight", linear + "norm.weight"),
        Rename(mixer + "out.weight", linear + "out_proj.weight"),
        Rename(ours + "mlp.shared.{m}.weight", mlp + "shared_expert.{m}_proj.weight"),
        Rename(ours + "mlp.shared_gate.weight", mlp + "shared_expert_gate.weight"),
        *_mtp_skips(),
    )) + lm_key_map(config, expert_hidden)


def build_text(config: Config, architecture: str, lm: Callable[..., CausalLM] = CausalLM,
               cfg: HybridConfig | None = None) -> CausalLM:
    """``lm(cfg, mlp_factory)`` of a hybrid ``config.json`` (``cfg``: its :class:`HybridConfig`, read from it
    when not given): MoE MLPs on the sparse layers of the MoE architectures."""
    cfg = hybrid_config(config, architecture) if cfg is None else cfg
    if not ARCHITECTURES[architecture][2]:
        return lm(cfg, None)
    sparse, moe = set(sparse_layers(config)), moe_config(config)
    return lm(cfg, lambda i: MoE(moe) if i in sparse else "swiglu")


def text_key_map(config: Config, architecture: str) -> KeyMap:
    """:func:`hybrid_key_map` of a hybrid ``config.json``."""
    return hybrid_key_map(hybrid_config(config, architecture), config.get("moe_intermediate_size", 0))


def _build(architecture: str) -> Any:
    return lambda config: build_text(config, architecture)


def _key_map(architecture: str) -> Any:
    return lambda config: text_key_map(config, architecture)


def export_text_config(model: nn.Module, architecture: str) -> Config | None:
    """The ``config.json`` dict of a hybrid LM of ``architecture``'s layout (M-RoPE sections aside: the
    caller writes them), or None when ``model`` does not have it."""
    _, projection, has_moe = ARCHITECTURES[architecture]
    if not isinstance(model, CausalLM) or not isinstance(model.decoder, HybridDecoder):
        return None
    cfg = model.config
    moes = [i for i, b in enumerate(model.decoder.blocks) if isinstance(b.mlp, MoE)]
    matches = (cfg.linear_projection == projection and cfg.norm == "rmsnorm_zero_centered" and cfg.qk_norm
               and cfg.attn_output_gate and cfg.qkv_bias == cfg.out_bias and cfg.mlp == "swiglu"
               and bool(moes) == has_moe)
    moe = model.decoder.blocks[moes[0]].mlp.config if moes else None
    if moe is not None:  # one gated-shared-expert MoE everywhere it is; 3.5-MoE: every layer, renormalised
        same = all(model.decoder.blocks[i].mlp.config == moe for i in moes)
        matches = matches and same and moe.shared_gate and moe.shared_hidden > 0 and (
            architecture == "Qwen3NextForCausalLM" or (len(moes) == cfg.depth and moe.normalize_weights))
    return hf_config(cfg, architecture, moe, moes) if matches else None


def _export(architecture: str) -> Any:
    """``save_hf`` of a hybrid LM built without ``load_hf`` (a preset): its config when it matches."""

    def export(model: nn.Module) -> Config | None:
        if not isinstance(model, CausalLM) or model.config.mrope_sections is not None:
            return None
        return export_text_config(model, architecture)

    return export


for _name in ARCHITECTURES:
    register_architecture(
        _name,
        parts={"text_model": Part(_build(_name), _key_map(_name), inputs=text_inputs, export_config=_export(_name))},
        default_part="text_model",
    )

