"""The Qwen3-Omni Talker's maps (``talker_config`` of :mod:`omnikit.convert.hub_qwen3_omni`):
``Qwen3OmniMoeTalkerForConditionalGeneration`` -> :class:`omnikit.fusion.Qwen3OmniTalker`.

Config map: :data:`talker_config`; key map: :func:`talker_key_map` (the Qwen decoder-layer rules of
:mod:`omnikit.convert.hub_qwen` for both decoders, shared expert included, plus projections, codec
embeddings and heads).
"""

from __future__ import annotations

from omnikit.convert.configmap import ConfigMap, Convert, Field, Fields, Refuse
from omnikit.convert.hub_qwen import _sections, decoder_key_map
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


def _same_width(talker: int, predictor: int, fields: Fields) -> int:
    if predictor != talker:
        raise OmnikitValueError(f"code predictor width {predictor} must equal the talker's {talker}")
    return talker


_T, _P = "text_config.", "code_predictor_config."
_INTERLEAVED = _T + "rope_parameters.interleaved"
#: The :class:`~omnikit.fusion.Qwen3OmniTalkerConfig` of a ``talker_config`` dict: an all-MoE talker decoder
#: (interleaved M-RoPE) and a dense code predictor of the same width, SiLU, no biases.
talker_config = ConfigMap((
    *(Refuse(sub + key, allowed, label=sub + key) for sub in (_T, _P) for key, allowed in (
        ("hidden_act", ("silu",)), ("attention_bias", (False,)), ("rope_parameters.rope_type", ("default",)))),
    Refuse(_T + "mlp_only_layers", ([],), write_value=False, label=_T + "mlp_only_layers"),
    Refuse(_T + "decoder_sparse_step", (1,), write_value=False, label=_T + "decoder_sparse_step"),
    Refuse(_INTERLEAVED, (True,), (_T + "rope_parameters.mrope_interleaved",), label=_INTERLEAVED, default=False),
    Convert("dim", (_T + "hidden_size", _P + "hidden_size"), _same_width, lambda dim, f: (dim, dim)),
    Field("depth", _T + "num_hidden_layers"), Field("num_heads", _T + "num_attention_heads"),
    Field("num_kv_heads", _T + "num_key_value_heads", None), Field("head_dim", _T + "head_dim", None),
    Field("thinker_dim", "thinker_hidden_size", 2048), Field("vocab_size", _T + "vocab_size"),
    Field("num_experts", _T + "num_experts", fallbacks=(_T + "num_local_experts",)),
    Field("top_k", _T + "num_experts_per_tok"), Field("expert_hidden", _T + "moe_intermediate_size"),
    Field("shared_hidden", _T + "shared_expert_intermediate_size"),
    Field("normalize_weights", _T + "norm_topk_prob", False, bool),
    Field("projection_hidden", _T + "intermediate_size"),
    Field("norm_eps", _T + "rms_norm_eps", 1e-6), Field("rope_base", _T + "rope_parameters.rope_theta", 10000.0, float),
    Convert("mrope_sections", _T + "rope_parameters.mrope_section", _sections, lambda v, f: list(v)),
    Field("num_codebooks", "num_code_groups", 32), Field("codec_bos_id", "codec_bos_id", 4197),
    Field("predictor_depth", _P + "num_hidden_layers"), Field("predictor_heads", _P + "num_attention_heads"),
    Field("predictor_kv_heads", _P + "num_key_value_heads", None), Field("predictor_head_dim", _P + "head_dim", None),
    Field("predictor_mlp_hidden", _P + "intermediate_size"), Field("predictor_vocab_size", _P + "vocab_size"),
    Field("predictor_rope_base", _P + "rope_parameters.rope_theta", 10000.0, float),
    Field("predictor_norm_eps", _P + "rms_norm_eps", 1e-6),
), target=Qwen3OmniTalkerConfig)
