"""Hybrid stack: layer pattern, streaming memory flat in sequence length, MoE aux through the stack."""

from __future__ import annotations

import pytest
import torch

import omnikit
from omnikit.layers import DecoderBlock
from omnikit.layers.hybrid import HybridConfig, HybridDecoder, LinearAttentionBlock
from omnikit.moe import MoEAux


def test_full_attention_every_nth_layer() -> None:
    model = HybridDecoder(HybridConfig(dim=16, depth=8, num_heads=2, full_attention_interval=4))
    kinds = [isinstance(b, DecoderBlock) for b in model.blocks]
    assert kinds == [False, False, False, True] * 2
    assert all(isinstance(b, LinearAttentionBlock) for b, full in zip(model.blocks, kinds) if not full)


def _state_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes held by linear-attention states, bytes of valid KV cache) of an open stream."""
    linear = kv = 0
    for m in model.modules():
        state = getattr(m, "streaming_state", None)
        if state is None:
            continue
        if hasattr(state, "recurrent") and state.recurrent is not None:
            linear += state.recurrent.numel() * state.recurrent.element_size()
        if hasattr(state, "pending") and state.pending is not None:
            linear += state.pending.numel() * state.pending.element_size()
        if hasattr(state, "keys") and state.keys is not None:
            kv += 2 * state.length * state.keys[0, :, 0].numel() * state.keys.element_size() * state.batch_size
    return linear, kv


def test_inference_memory_of_linear_layers_is_flat_in_sequence_length() -> None:
    model = omnikit.create_model("hybrid_moe_tiny").eval()
    x = torch.randn(1, 64, 32)
    with torch.no_grad(), model.streaming(1):
        model(x[:, :4])
        linear_4, kv_4 = _state_bytes(model)
        for t in range(4, 64):
            out = model(x[:, t : t + 1])
        linear_64, kv_64 = _state_bytes(model)
    assert linear_4 == linear_64 > 0
    assert kv_64 == 16 * kv_4  # only the one full-attention layer grows, linearly
    with torch.no_grad():
        torch.testing.assert_close(out, model(x)[:, -1:], atol=1e-4, rtol=1e-4)


def test_hybrid_stack_returns_moe_aux_per_block() -> None:
    model = omnikit.create_model("hybrid_moe_tiny")
    x = torch.randn(2, 6, 32)
    out, auxes = model(x, return_aux=True)
    torch.testing.assert_close(out, model(x))
    assert len(auxes) == 4 and all(isinstance(a, MoEAux) for a in auxes)
    sum(a.load_balancing_loss for a in auxes).backward()
    assert model.blocks[0].mlp.router.weight.grad is not None


def test_published_shape_builds_on_meta() -> None:
    blocks = omnikit.create_model("qwen3_next_80b_a3b", device="meta").decoder.blocks
    assert sum(isinstance(b, DecoderBlock) for b in blocks) == 12
    assert blocks[0].mlp.router.top_k == 10 and blocks[0].mixer.num_v_heads == 32


def test_lora_targets_and_tensor_parallel_rows_cover_the_new_layers() -> None:
    """peft adapts the DeltaNet projections beside attention; a gated query head's rows (query then
    gate) stay together on one tensor-parallel rank."""
    from omnikit.distributed.heads import head_split_order
    from omnikit.fusion.towers import lora_targets

    targets = lora_targets(omnikit.create_model("qwen3_next_tiny"), kinds=("attention",))["target_modules"]
    assert {"decoder.blocks.0.mixer.qkvz", "decoder.blocks.0.mixer.out", "decoder.blocks.3.attn.qkv"} <= set(targets)
    # 2 query heads of width 2 (query, gate), 2 kv heads, head_dim 1: rows q0 g0 q1 g1 k0 k1 v0 v1
    assert head_split_order(2, 2, 1, 2, query_width=2).tolist() == [0, 1, 4, 6, 2, 3, 5, 7]


def test_partial_interleaved_mrope_equals_qwen3_5_rotary() -> None:
    """Qwen3.5's rotary: interleaved M-RoPE sections on a quarter of the head (distinct t/h/w ids)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5TextRotaryEmbedding

    from omnikit.layers import RotaryEmbedding

    config = transformers.Qwen3_5TextConfig(head_dim=64, rope_parameters={
        "rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25, "mrope_section": [3, 3, 2],
        "mrope_interleaved": True})
    positions = torch.randint(0, 50, (3, 2, 7))
    cos_ref, sin_ref = Qwen3_5TextRotaryEmbedding(config)(torch.zeros(1), positions)
    cos, sin = RotaryEmbedding(64, 1e4, sections=(3, 3, 2), interleaved=True, rotary_dim=16)(positions)
    torch.testing.assert_close(cos, cos_ref)
    torch.testing.assert_close(sin, sin_ref)
