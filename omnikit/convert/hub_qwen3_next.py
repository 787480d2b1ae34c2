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

The config translation is declarative: one :class:`~omnikit.convert.configmap.ConfigMap` per architecture for
the language model (:data:`TEXT`, read and written) and one for its MoE layer (:data:`MOE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from omnikit.convert.architectures import Config, Part, register_architecture
from omnikit.convert.configmap import ConfigMap, Constant, Convert, Derived, Field, Fixed, Refuse, Same
from omnikit.convert.hub_qwen import SHARED_MOE, lm_key_map, sparse_layers
from omnikit.convert.inputs import text_inputs
from omnikit.convert.keymap import Fuse, KeyMap, Rename, Skip
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.models.language_model import CausalLM
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.utils.checks import OmnikitValueError

__all__ = ["ARCHITECTURES", "MOE", "TEXT", "build_text", "export_text_config", "hf_config", "hybrid_config",
           "hybrid_key_map", "text_key_map"]

#: architecture -> (``model_type``, DeltaNet projection layout, MoE MLPs).
ARCHITECTURES: dict[str, tuple[str, str, bool]] = {
    "Qwen3NextForCausalLM": ("qwen3_next", "fused", True),
    "Qwen3_5ForCausalLM": ("qwen3_5_text", "split", False),
    "Qwen3_5MoeForCausalLM": ("qwen3_5_moe_text", "split", True),
}

#: Deepest name below ``mtp.`` in published checkpoints (``layers.0.mlp.experts.7.up_proj.weight``) plus room.
_MTP_DEPTH = 9


@dataclass(frozen=True)
class _LayerPattern:
    """Config-map rule: ``full_attention_interval`` <- ``layer_types`` (full attention every ``n``-th layer,
    ``i % n == n - 1``; any other pattern raises ``ValueError``) or, without it, the ``full_attention_interval``
    key (default 4); written as ``layer_types`` alone. Reads ``depth`` from the rules before it."""

    def read(self, config: Config, fields: dict[str, Any]) -> None:
        depth, types = fields["depth"], config.get("layer_types")
        if types is None:
            fields["full_attention_interval"] = config.get("full_attention_interval", 4)
            return
        full = [i for i, kind in enumerate(types) if kind == "full_attention"]
        interval = full[0] + 1 if full else depth + 1
        if list(types) != _pattern(interval, depth):
            raise OmnikitValueError(
                f"`layer_types` expected full attention every n-th layer (n = {interval}) but got {types}"
            )
        fields["full_attention_interval"] = interval

    def write(self, values: dict[str, Any], out: Config) -> bool:
        out["layer_types"] = _pattern(values["full_attention_interval"], values["depth"])
        return True


def _pattern(interval: int, depth: int) -> list[str]:
    return ["full_attention" if i % interval == interval - 1 else "linear_attention" for i in range(depth)]


def _text_map(architecture: str) -> ConfigMap:
    """The :class:`HybridConfig` <-> ``config.json`` map of ``architecture``'s language model."""
    model_type, projection, moe = ARCHITECTURES[architecture]
    # MoE models may omit the dense width (then no layer is dense); a None width is not written
    width = (Convert("mlp_hidden", "intermediate_size", lambda v, f: v, lambda v, f: v, None) if moe
             else Field("mlp_hidden", "intermediate_size"))
    return ConfigMap((
        Refuse("hidden_act", ("silu",)), Refuse("rope_parameters.rope_type", ("default",)),
        Constant("model_type", model_type), Field("dim", "hidden_size"), Field("depth", "num_hidden_layers"),
        Field("num_heads", "num_attention_heads"),
        Derived("num_kv_heads", "num_key_value_heads", lambda f: f["num_heads"]),
        Derived("head_dim", "head_dim", lambda f: f["dim"] // f["num_heads"]),
        Field("norm_eps", "rms_norm_eps", 1e-6), Field("vocab_size", "vocab_size"),
        Field("tie_embeddings", "tie_word_embeddings", False, bool),
        Field("qkv_bias", "attention_bias", False, bool), Same("out_bias", "qkv_bias"),
        Field("rope_base", "rope_parameters.rope_theta", 10000.0, float, ("rope_theta",)),
        Convert("rotary_dim", "rope_parameters.partial_rotary_factor", lambda v, f: int(f["head_dim"] * v),
                lambda v, f: v / f["head_dim"], 0.25, ("partial_rotary_factor",)),
        _LayerPattern(),
        Field("linear_heads", "linear_num_key_heads"), Field("linear_head_dim", "linear_key_head_dim"),
        Field("linear_v_heads", "linear_num_value_heads"), Field("conv_size", "linear_conv_kernel_dim", 4),
        Constant("max_position_embeddings", 32768), Constant("dtype", "float32"),
        Field("linear_v_head_dim", "linear_value_head_dim"), width,
        Fixed("norm", "rmsnorm_zero_centered"), Fixed("qk_norm", True), Fixed("attn_output_gate", True),
        Fixed("mlp", "swiglu"), Fixed("linear_projection", projection), Fixed("sliding_window", None),
        Fixed("attention_chunk", None),
    ), target=HybridConfig)


#: architecture -> the map of its language model (``config.json`` <-> :class:`HybridConfig`).
TEXT: dict[str, ConfigMap] = {name: _text_map(name) for name in ARCHITECTURES}
#: architecture -> the map of its MoE layer: routed experts and a sigmoid-gated shared expert (Qwen3.5-MoE always
#: renormalises the top-k weights and has no ``norm_topk_prob``).
MOE: dict[str, ConfigMap] = {
    "Qwen3NextForCausalLM": SHARED_MOE + ConfigMap((Constant("decoder_sparse_step", 1),)),
    "Qwen3_5MoeForCausalLM": ConfigMap((
        Field("dim", "hidden_size"), Field("num_experts", "num_experts"), Field("top_k", "num_experts_per_tok"),
        Field("expert_hidden", "moe_intermediate_size"), Field("shared_hidden", "shared_expert_intermediate_size"),
        Fixed("shared_gate", True), Fixed("normalize_weights", True),
    ), target=MoEConfig),
}


def hybrid_config(config: Config, architecture: str) -> HybridConfig:
    """The :class:`HybridConfig` of a Qwen3-Next / Qwen3.5 ``config.json`` (:data:`TEXT`)."""
    return TEXT[architecture](config)


def hf_config(config: HybridConfig, architecture: str, moe: MoEConfig | None = None,
              sparse: list[int] | None = None, text_map: ConfigMap | None = None) -> Config | None:
    """The transformers ``config.json`` dict of a hybrid LM (``text_map``, default :data:`TEXT`, and :data:`MOE`;
    ``moe`` on the layers ``sparse``), or None when ``config`` does not have the architecture's layout. Widths
    left to their defaults are written as the model builds them."""
    _, _, has_moe = ARCHITECTURES[architecture]
    head_dim = config.head_dim or config.dim // config.num_heads
    linear_heads = config.linear_heads or config.num_heads
    key_dim = config.linear_head_dim or config.dim // linear_heads
    config = replace(config, num_kv_heads=config.num_kv_heads or config.num_heads, head_dim=head_dim,
                     rotary_dim=config.rotary_dim or head_dim, linear_heads=linear_heads, linear_head_dim=key_dim,
                     linear_v_heads=config.linear_v_heads or linear_heads,
                     linear_v_head_dim=config.linear_v_head_dim or key_dim)
    text = (TEXT[architecture] if text_map is None else text_map).write(config)
    experts = MOE[architecture].write(moe) if has_moe and moe is not None else {}
    if text is None or experts is None:
        return None
    if experts and architecture == "Qwen3NextForCausalLM":
        experts["mlp_only_layers"] = [i for i in range(config.depth) if sparse is not None and i not in sparse]
    return {"architectures": [architecture], **text, **experts}


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
    sparse, moe = set(sparse_layers(config)), MOE[architecture](config)
    return lm(cfg, lambda i: MoE(moe) if i in sparse else "swiglu")


def text_key_map(config: Config, architecture: str) -> KeyMap:
    """:func:`hybrid_key_map` of a hybrid ``config.json``."""
    return hybrid_key_map(hybrid_config(config, architecture), config.get("moe_intermediate_size", 0))


def _build(architecture: str) -> Any:
    return lambda config: build_text(config, architecture)


def _key_map(architecture: str) -> Any:
    return lambda config: text_key_map(config, architecture)


def export_text_config(model: nn.Module, architecture: str, text_map: ConfigMap | None = None) -> Config | None:
    """The ``config.json`` dict of a hybrid LM of ``architecture``'s layout (its language model written by
    ``text_map``, default :data:`TEXT`), or None when ``model`` does not have it."""
    if not isinstance(model, CausalLM) or not isinstance(model.decoder, HybridDecoder):
        return None
    cfg = model.config
    moes = [i for i, b in enumerate(model.decoder.blocks) if isinstance(b.mlp, MoE)]
    matches = bool(moes) == ARCHITECTURES[architecture][2]  # the maps check the rest of the layout
    moe = model.decoder.blocks[moes[0]].mlp.config if moes else None
    if moe is not None:  # one shared-expert MoE everywhere it is; 3.5-MoE: in every layer
        same = all(model.decoder.blocks[i].mlp.config == moe for i in moes)
        matches = matches and same and moe.shared_hidden > 0 and (
            architecture == "Qwen3NextForCausalLM" or len(moes) == cfg.depth)
    return hf_config(cfg, architecture, moe, moes, text_map) if matches else None


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

