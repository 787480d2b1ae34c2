"""The Qwen3-Omni Talker's maps (``talker_config`` of :mod:`omnikit.convert.hub_qwen3_omni`):
``Qwen3OmniMoeTalkerForConditionalGeneration`` -> :class:`omnikit.fusion.Qwen3OmniTalker`.

Key map: :func:`talker_key_map` (the Qwen decoder-layer rules of :mod:`omnikit.convert.hub_qwen`
for both decoders, shared expert included, plus projections, codec embeddings and heads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omnikit.convert.hub_qwen import decoder_key_map
from omnikit.convert.keymap import KeyMap, Rename, Skip
from omnikit.speech.qwen3_omni_talker import (
    Qwen3OmniTalkerConfig,
    predictor_decoder_config,
    talker_decoder_config,
)
from omnikit.utils.checks import OmnikitValueError

__all__ = ["talker_config", "talker_key_map"]

def talker_key_map(config: Qwen3OmniTalkerConfig) -> KeyMap:
    """omnikit key <- checkpoint name (relative to ``talker.``); checkpoints store each routed
    expert's ``gate_proj`` / ``up_proj`` / ``down_proj`` (stacked on load)."""
    return decoder_key_map(talker_decoder_config(config), config.expert_hidden) + decoder_key_map(
        predictor_decoder_config(config), hf_layers="code_predictor.model.layers.{i}.",
        ours="code_predictor.decoder.blocks.{i}.",
    ) + KeyMap((
        Rename("decoder.norm.weight", "model.norm.weight"),
        Rename("code_predictor.decoder.norm.weight", "code_predictor.model.norm.weight"),
        Rename("codec_embedding.weight", "model.codec_embedding.weight"),
        Rename("{x}_projection.fc{n}.{p}", "{x}_projection.linear_fc{n}.{p}"),
        Rename("codec_head.weight", "codec_head.weight"),
        Rename("code_predictor.embeddings.{k}.weight", "code_predictor.model.codec_embedding.{k}.weight"),
        Rename("code_predictor.heads.{k}.weight", "code_predictor.lm_head.{k}.weight"),
        Skip("model.rotary_emb.inv_freq"), Skip("code_predictor.model.rotary_emb.inv_freq"),
    ))


def _rope(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    rope = dict(config.get("rope_parameters") or {})
    if rope.get("rope_type", "default") != "default":
        raise OmnikitValueError(f"{name} rope_type {rope.get('rope_type')!r} is not supported; expected 'default'")
    return rope


def talker_config(talker: Mapping[str, Any]) -> Qwen3OmniTalkerConfig:
    """The :class:`~omnikit.fusion.Qwen3OmniTalkerConfig` of a ``talker_config`` dict."""
    text, pred = talker["text_config"], talker["code_predictor_config"]
    for sub, name in ((text, "talker"), (pred, "code predictor")):
        if sub.get("hidden_act", "silu") != "silu" or sub.get("attention_bias", False):
            raise OmnikitValueError(f"{name} with hidden_act={sub.get('hidden_act')!r}, attention_bias="
                                    f"{sub.get('attention_bias')} is not supported; expected 'silu' without biases")
    if text.get("mlp_only_layers") or text.get("decoder_sparse_step", 1) != 1:
        raise OmnikitValueError("talker with dense layers (mlp_only_layers / decoder_sparse_step) is not supported")
    if pred["hidden_size"] != text["hidden_size"]:
        raise OmnikitValueError(
            f"code predictor width {pred['hidden_size']} must equal the talker's {text['hidden_size']}"
        )
    rope, pred_rope = _rope(text, "talker"), _rope(pred, "code predictor")
    if not rope.get("interleaved", rope.get("mrope_interleaved", False)) or "mrope_section" not in rope:
        raise OmnikitValueError(f"talker rope parameters expected an interleaved mrope_section but got {rope}")
    return Qwen3OmniTalkerConfig(
        dim=text["hidden_size"], depth=text["num_hidden_layers"], num_heads=text["num_attention_heads"],
        num_kv_heads=text.get("num_key_value_heads"), head_dim=text.get("head_dim"),
        thinker_dim=talker.get("thinker_hidden_size", 2048), vocab_size=text["vocab_size"],
        num_experts=text.get("num_experts", text.get("num_local_experts")), top_k=text["num_experts_per_tok"],
        expert_hidden=text["moe_intermediate_size"], shared_hidden=text["shared_expert_intermediate_size"],
        normalize_weights=bool(text.get("norm_topk_prob", False)), projection_hidden=text["intermediate_size"],
        norm_eps=text.get("rms_norm_eps", 1e-6), rope_base=float(rope.get("rope_theta", 10000.0)),
        mrope_sections=tuple(rope["mrope_section"]), num_codebooks=talker.get("num_code_groups", 32),
        codec_bos_id=talker.get("codec_bos_id", 4197), predictor_depth=pred["num_hidden_layers"],
        predictor_heads=pred["num_attention_heads"], predictor_kv_heads=pred.get("num_key_value_heads"),
        predictor_head_dim=pred.get("head_dim"), predictor_mlp_hidden=pred["intermediate_size"],
        predictor_vocab_size=pred["vocab_size"], predictor_rope_base=float(pred_rope.get("rope_theta", 10000.0)),
        predictor_norm_eps=pred.get("rms_norm_eps", 1e-6),
    )
