"""Registered MoE layers: tiny test variants and published shapes (build them on ``device="meta"``).

Decoders built with MoE layers are registered with the language models (:mod:`omnikit.models.presets`).
"""

from __future__ import annotations

from typing import Any

from omnikit.moe.layer import MoE, MoEConfig
from omnikit.registry import configure, register_model

__all__ = [
    "moe_deepseek_tiny",
    "moe_shared_tiny",
    "moe_tiny",
    "qwen2_moe_a2_7b_moe",
    "qwen3_30b_a3b_moe",
    "qwen3_omni_talker_moe",
    "qwen3_omni_thinker_moe",
]


def _build(name: str, overrides: dict[str, Any], **defaults: Any) -> MoE:
    return MoE(configure(MoEConfig, name, overrides, **defaults))


@register_model(kind="moe", modalities=("text",))
def moe_tiny(**overrides: Any) -> MoE:
    """8 experts, top-2, softmax then renormalised top-k (Qwen3-MoE routing) at dim 32."""
    return _build("moe_tiny", overrides, dim=32, num_experts=8, top_k=2, expert_hidden=16)


@register_model(kind="moe", modalities=("text",))
def moe_shared_tiny(**overrides: Any) -> MoE:
    """Qwen2-MoE routing at dim 32: 8 experts, top-2 without renormalising, sigmoid-gated shared expert."""
    return _build(
        "moe_shared_tiny", overrides, dim=32, num_experts=8, top_k=2, expert_hidden=16, shared_hidden=32,
        shared_gate=True, normalize_weights=False,
    )


@register_model(kind="moe", modalities=("text",))
def moe_deepseek_tiny(**overrides: Any) -> MoE:
    """DeepSeek-V3 routing at dim 32: sigmoid scores, balancing bias, scaled weights, ungated shared expert."""
    return _build(
        "moe_deepseek_tiny", overrides, dim=32, num_experts=8, top_k=2, expert_hidden=16, shared_hidden=16,
        scoring="sigmoid", balance_bias=True, route_scale=2.5,
    )


@register_model(kind="moe", modalities=("text",))
def qwen3_30b_a3b_moe(**overrides: Any) -> MoE:
    """Qwen3-30B-A3B MoE block: dim 2048, 128 experts of FFN 768, top-8, renormalised softmax."""
    return _build("qwen3_30b_a3b_moe", overrides, dim=2048, num_experts=128, top_k=8, expert_hidden=768)


@register_model(kind="moe", modalities=("text",))
def qwen3_omni_thinker_moe(**overrides: Any) -> MoE:
    """Qwen3-Omni-30B-A3B thinker MoE block: dim 2048, 128 experts of FFN 768, top-8, renormalised."""
    return _build("qwen3_omni_thinker_moe", overrides, dim=2048, num_experts=128, top_k=8, expert_hidden=768)


@register_model(kind="moe", modalities=("audio",))
def qwen3_omni_talker_moe(**overrides: Any) -> MoE:
    """Qwen3-Omni talker MoE block: dim 1024, 128 experts of FFN 384, top-8 (not renormalised),
    sigmoid-gated shared expert of FFN 768 (transformers' ``Qwen3OmniMoeTalkerTextConfig`` defaults)."""
    return _build(
        "qwen3_omni_talker_moe", overrides, dim=1024, num_experts=128, top_k=8, expert_hidden=384,
        shared_hidden=768, shared_gate=True, normalize_weights=False,
    )


@register_model(kind="moe", modalities=("text",))
def qwen2_moe_a2_7b_moe(**overrides: Any) -> MoE:
    """Qwen1.5-MoE-A2.7B block: dim 2048, 60 experts of FFN 1408, top-4, gated shared expert of 5632."""
    return _build(
        "qwen2_moe_a2_7b_moe", overrides, dim=2048, num_experts=60, top_k=4, expert_hidden=1408,
        shared_hidden=5632, shared_gate=True, normalize_weights=False,
    )
