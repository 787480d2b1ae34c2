"""``transformers`` ``Qwen3OmniMoeTalkerForConditionalGeneration`` -> :class:`omnikit.fusion.Qwen3OmniTalker`.

Key maps (relative to ``talker.``): :data:`TALKER_FUSED` stacks the q/k/v projections of both
decoders, :data:`TALKER_KEYS` renames the rest. The routed experts are stored stacked
(``gate_up_proj (E, 2I, D)``, ``down_proj (E, D, I)``) in transformers 5 and in omnikit alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.convert import converter
from omnikit.convert.keys import fuse_state, rename_state
from omnikit.convert.whisper import build_converted
from omnikit.fusion.qwen3_omni_talker import Qwen3OmniTalker
from omnikit.utils.checks import OmnikitValueError

__all__ = [
    "TALKER_FUSED", "TALKER_KEYS", "convert_qwen3_omni_talker", "qwen_attention_keys", "talker_config", "talker_state",
]

_STACK = r"(model|code_predictor\.model)\.layers\.(\d+)\."

#: ``(pattern with {part}, parts, fused key)``: q/k/v rows stacked in that order.
TALKER_FUSED = ((_STACK + r"self_attn\.{part}_proj\.weight", ("q", "k", "v"), r"\1.layers.\2.qkv.weight"),)


def qwen_attention_keys(stack: str, ours: str) -> tuple[tuple[str, str], ...]:
    """Rules for the attention and norms of a Qwen3-style decoder whose transformers prefix matches the
    regex ``stack`` (``model``) and whose omnikit :class:`~omnikit.layers.Decoder` is at ``ours``; the
    q/k/v projections are expected already fused into ``{stack}.layers.{i}.qkv.weight``."""
    layer = stack + r"\.layers\.(\d+)\."
    return (
        (layer + r"qkv\.weight", ours + r".blocks.\1.attn.qkv.weight"),
        (layer + r"self_attn\.o_proj\.weight", ours + r".blocks.\1.attn.out.weight"),
        (layer + r"self_attn\.([qk])_norm\.weight", ours + r".blocks.\1.attn.\2_norm.weight"),
        (layer + r"input_layernorm\.weight", ours + r".blocks.\1.norm1.weight"),
        (layer + r"post_attention_layernorm\.weight", ours + r".blocks.\1.norm2.weight"),
        (stack + r"\.norm\.weight", ours + ".norm.weight"),
    )


#: transformers key pattern -> omnikit key, after :data:`TALKER_FUSED`.
TALKER_KEYS: tuple[tuple[str, str], ...] = (
    *qwen_attention_keys(r"model", "decoder"),
    *qwen_attention_keys(r"code_predictor\.model", "code_predictor.decoder"),
    (r"model\.layers\.(\d+)\.mlp\.gate\.weight", r"decoder.blocks.\1.mlp.router.weight"),
    (r"model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj", r"decoder.blocks.\1.mlp.experts.gate_up"),
    (r"model\.layers\.(\d+)\.mlp\.experts\.down_proj", r"decoder.blocks.\1.mlp.experts.down"),
    (r"model\.layers\.(\d+)\.mlp\.shared_expert\.(gate|up|down)_proj\.weight",
     r"decoder.blocks.\1.mlp.shared.\2.weight"),
    (r"model\.layers\.(\d+)\.mlp\.shared_expert_gate\.weight", r"decoder.blocks.\1.mlp.shared_gate.weight"),
    (r"code_predictor\.model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight",
     r"code_predictor.decoder.blocks.\1.mlp.\2.weight"),
    (r"model\.codec_embedding\.weight", r"codec_embedding.weight"),
    (r"(text|hidden)_projection\.linear_fc([12])\.(weight|bias)", r"\1_projection.fc\2.\3"),
    (r"codec_head\.weight", r"codec_head.weight"),
    (r"code_predictor\.model\.codec_embedding\.(\d+)\.weight", r"code_predictor.embeddings.\1.weight"),
    (r"code_predictor\.lm_head\.(\d+)\.weight", r"code_predictor.heads.\1.weight"),
)


def talker_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An omnikit :class:`Qwen3OmniTalker` state dict from a transformers one (keys relative to ``talker.``)."""
    for pattern, parts, target in TALKER_FUSED:
        state = fuse_state(state, pattern, parts, target)
    return rename_state(state, TALKER_KEYS)


def _rope(config: Any, name: str) -> dict[str, Any]:
    rope = dict(config.rope_parameters or {})
    if rope.get("rope_type", "default") != "default":
        raise OmnikitValueError(f"{name} rope_type {rope.get('rope_type')!r} is not supported; expected 'default'")
    return rope


def talker_config(config: Any) -> dict[str, Any]:
    """:class:`~omnikit.fusion.Qwen3OmniTalkerConfig` fields from a ``Qwen3OmniMoeTalkerConfig``."""
    text, pred = config.text_config, config.code_predictor_config
    for sub, name in ((text, "talker"), (pred, "code predictor")):
        if sub.hidden_act != "silu" or sub.attention_bias:
            raise OmnikitValueError(f"{name} with hidden_act={sub.hidden_act!r}, attention_bias={sub.attention_bias} "
                                    "is not supported; expected 'silu' without attention biases")
    if text.mlp_only_layers or text.decoder_sparse_step != 1:
        raise OmnikitValueError("talker with dense layers (mlp_only_layers / decoder_sparse_step) is not supported")
    if pred.hidden_size != text.hidden_size:
        raise OmnikitValueError(f"code predictor width {pred.hidden_size} must equal the talker's {text.hidden_size}")
    rope, pred_rope = _rope(text, "talker"), _rope(pred, "code predictor")
    if not rope.get("interleaved", rope.get("mrope_interleaved", False)):
        raise OmnikitValueError("talker M-RoPE must be interleaved (Qwen3-Omni)")
    return dict(
        dim=text.hidden_size, depth=text.num_hidden_layers, num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads, head_dim=getattr(text, "head_dim", None),
        thinker_dim=config.thinker_hidden_size,
        vocab_size=text.vocab_size, num_experts=text.num_experts, top_k=text.num_experts_per_tok,
        expert_hidden=text.moe_intermediate_size, shared_hidden=text.shared_expert_intermediate_size,
        normalize_weights=bool(text.norm_topk_prob), projection_hidden=text.intermediate_size,
        norm_eps=text.rms_norm_eps,
        rope_base=float(rope["rope_theta"]), mrope_sections=tuple(rope["mrope_section"]),
        num_codebooks=config.num_code_groups, codec_bos_id=config.codec_bos_id,
        predictor_depth=pred.num_hidden_layers, predictor_heads=pred.num_attention_heads,
        predictor_kv_heads=pred.num_key_value_heads, predictor_head_dim=getattr(pred, "head_dim", None),
        predictor_mlp_hidden=pred.intermediate_size, predictor_vocab_size=pred.vocab_size,
        predictor_rope_base=float(pred_rope["rope_theta"]), predictor_norm_eps=pred.rms_norm_eps,
    )


@converter("Qwen3OmniMoeTalkerForConditionalGeneration")
def convert_qwen3_omni_talker(hf_talker: nn.Module) -> Qwen3OmniTalker:
    """A :class:`Qwen3OmniTalker` whose :meth:`~Qwen3OmniTalker.codec_logits` and
    :meth:`~Qwen3OmniTalker.residual_logits` equal the transformers Talker's and code predictor's logits."""
    state = talker_state(dict(hf_talker.state_dict()))
    return build_converted("qwen3_omni_30b_a3b_talker", hf_talker, state, **talker_config(hf_talker.config))
