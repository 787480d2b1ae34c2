"""``from_transformers`` for Qwen3-MoE and Qwen2-MoE sparse blocks: same outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from omnikit.convert import from_transformers
from omnikit.moe import MoE

transformers = pytest.importorskip("transformers")


def _init(block: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _qwen3(seed: int, implementation: str):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    g = torch.Generator().manual_seed(seed)
    experts = int(torch.randint(2, 10, (), generator=g))
    config = transformers.Qwen3MoeConfig(
        hidden_size=4 * int(torch.randint(2, 9, (), generator=g)),
        moe_intermediate_size=4 * int(torch.randint(1, 6, (), generator=g)),
        num_experts=experts,
        num_experts_per_tok=int(torch.randint(1, experts + 1, (), generator=g)),
        norm_topk_prob=bool(seed % 2),
        experts_implementation=implementation,
    )
    block = Qwen3MoeSparseMoeBlock(config)
    _init(block, seed)
    return block, config.hidden_size


def _qwen2(seed: int, implementation: str):
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

    config = transformers.Qwen2MoeConfig(
        hidden_size=24, moe_intermediate_size=12, shared_expert_intermediate_size=20, num_experts=5,
        num_experts_per_tok=2, norm_topk_prob=bool(seed % 2), experts_implementation=implementation,
    )
    block = Qwen2MoeSparseMoeBlock(config)
    _init(block, seed)
    return block, config.hidden_size


def _assert_same_outputs_and_grads(hf: torch.nn.Module, dim: int, seed: int) -> None:
    ours = from_transformers(hf)
    assert isinstance(ours, MoE)
    x = torch.randn(2, 9, dim, generator=torch.Generator().manual_seed(seed))
    x_hf, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_hf, out = hf(x_hf), ours(x_ours)
    torch.testing.assert_close(out, out_hf, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    out_hf.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_hf.grad, atol=1e-5, rtol=1e-4)
    pairs = {
        "router.weight": hf.gate.weight, "experts.gate_up": hf.experts.gate_up_proj,
        "experts.down": hf.experts.down_proj,
    }
    if ours.shared is not None:
        shared = hf.shared_expert
        pairs.update({
            "shared.gate.weight": shared.gate_proj.weight, "shared.up.weight": shared.up_proj.weight,
            "shared.down.weight": shared.down_proj.weight, "shared_gate.weight": hf.shared_expert_gate.weight,
        })
    params = dict(ours.named_parameters())
    assert set(pairs) == set(params)
    for name, ref in pairs.items():
        torch.testing.assert_close(params[name].grad, ref.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("implementation", ["eager", "grouped_mm"])
def test_qwen3_moe_block_random_configs(seed: int, implementation: str) -> None:
    hf, dim = _qwen3(seed, implementation)
    _assert_same_outputs_and_grads(hf, dim, seed)


@pytest.mark.parametrize("seed", range(2))
def test_qwen2_moe_block_with_shared_expert(seed: int) -> None:
    hf, dim = _qwen2(seed, "eager")
    _assert_same_outputs_and_grads(hf, dim, seed)


def test_converted_block_keeps_router_fp32_for_bf16_modules() -> None:
    hf, dim = _qwen3(0, "eager")
    ours = from_transformers(hf.to(torch.bfloat16))
    assert ours.router.weight.dtype == torch.float32 and ours.experts.gate_up.dtype == torch.bfloat16
    out = ours(torch.randn(3, dim, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_non_silu_experts_are_refused() -> None:
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    config = transformers.Qwen3MoeConfig(hidden_size=8, moe_intermediate_size=4, num_experts=2,
                                         num_experts_per_tok=1, hidden_act="gelu")
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        from_transformers(Qwen3MoeSparseMoeBlock(config))


def test_qwen3_omni_talker_moe_block_with_shared_expert() -> None:
    omni = pytest.importorskip("transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe")
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTalkerTextConfig

    config = Qwen3OmniMoeTalkerTextConfig(
        hidden_size=16, moe_intermediate_size=8, shared_expert_intermediate_size=12, num_experts=6,
        num_experts_per_tok=2, norm_topk_prob=True,
    )
    block = omni.Qwen3OmniMoeTalkerTextSparseMoeBlock(config)
    _init(block, 3)
    _assert_same_outputs_and_grads(block, config.hidden_size, 3)
