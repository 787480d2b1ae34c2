"""``transformers`` ``Qwen3MoeSparseMoeBlock`` / ``Qwen2MoeSparseMoeBlock`` -> :class:`omnikit.moe.MoE`."""

from __future__ import annotations

import torch
from torch import nn

from omnikit.convert import converter
from omnikit.moe.layer import MoE, MoEConfig
from omnikit.utils.checks import OmnikitValueError
from omnikit.utils.precision import cast_model

__all__ = ["convert_qwen2_moe_block", "convert_qwen3_moe_block"]


def _check_silu(hf_block: nn.Module) -> None:
    act = getattr(hf_block.experts.config, "hidden_act", "silu")
    if act != "silu":
        raise OmnikitValueError(f"`hf_module` experts use hidden_act={act!r}; only 'silu' (SwiGLU) converts")
    if getattr(hf_block.experts, "has_bias", False):
        raise OmnikitValueError("`hf_module` experts have biases; omnikit's SwiGLU experts have none")


def _convert(hf_block: nn.Module, **shared: int | bool) -> MoE:
    _check_silu(hf_block)
    gate, experts = hf_block.gate, hf_block.experts
    config = MoEConfig(
        dim=gate.hidden_dim, num_experts=gate.num_experts, top_k=gate.top_k,
        expert_hidden=experts.intermediate_dim, normalize_weights=bool(gate.norm_topk_prob), **shared,
    )
    weight = gate.weight
    with torch.device(weight.device):
        moe = MoE(config)
    cast_model(moe, experts.gate_up_proj.dtype)
    with torch.no_grad():
        moe.router.weight.copy_(weight)
        moe.experts.gate_up.copy_(experts.gate_up_proj)
        moe.experts.down.copy_(experts.down_proj)
    return moe


@converter("Qwen3MoeSparseMoeBlock")
def convert_qwen3_moe_block(hf_block: nn.Module) -> MoE:
    """A :class:`MoE` equal to a Qwen3-MoE block: softmax router, top-k (renormalised when the
    config says ``norm_topk_prob``), SwiGLU experts; same device, router kept in float32."""
    return _convert(hf_block)


@converter("Qwen2MoeSparseMoeBlock")
@converter("Qwen3OmniMoeTalkerTextSparseMoeBlock")
def convert_qwen2_moe_block(hf_block: nn.Module) -> MoE:
    """A :class:`MoE` equal to a Qwen2-MoE block: Qwen3-style routed experts plus a shared SwiGLU
    expert scaled by ``sigmoid(shared_expert_gate(x))``."""
    hf_shared = hf_block.shared_expert
    moe = _convert(hf_block, shared_hidden=hf_shared.intermediate_size, shared_gate=True)
    with torch.no_grad():
        moe.shared.gate.weight.copy_(hf_shared.gate_proj.weight)
        moe.shared.up.weight.copy_(hf_shared.up_proj.weight)
        moe.shared.down.weight.copy_(hf_shared.down_proj.weight)
        moe.shared_gate.weight.copy_(hf_block.shared_expert_gate.weight)
    return moe
