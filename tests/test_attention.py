"""Attention at speed: packed sequences end to end, sliding-window and chunked rules, MoE aux through the stack."""

from __future__ import annotations

import pytest
import torch
from references import reference_attention

import omnikit
from omnikit.layers import (
    Attention,
    Decoder,
    DecoderConfig,
    build_attention_mask,
    positions_from_cu_seqlens,
    scaled_dot_product,
)
from omnikit.layers.attention_backends import flash_attn_available
from omnikit.moe import MoEAux


def test_chunk_mask_is_block_diagonal_and_causal() -> None:
    mask = build_attention_mask(q_len=6, kv_len=6, causal=True, chunk_size=3)[0, 0]
    expected = torch.tensor([[j <= i and j // 3 == i // 3 for j in range(6)] for i in range(6)])
    assert torch.equal(mask, expected)
    # decoding at absolute position 7 (q_offset) sees only its own chunk 6..7
    step = build_attention_mask(q_len=1, kv_len=8, q_offset=7, causal=True, chunk_size=3)[0, 0, 0]
    assert step.tolist() == [False] * 6 + [True, True]


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
@pytest.mark.parametrize("rule", [{"chunk_size": 4}, {"chunk_size": 4, "sliding_window": 3}, {"sliding_window": 5}])
def test_chunk_and_window_rules_match_reference(backend: str, rule: dict) -> None:
    q, k, v = torch.randn(2, 4, 13, 8), torch.randn(2, 2, 13, 8), torch.randn(2, 2, 13, 8)
    mask = build_attention_mask(q_len=13, kv_len=13, causal=True, **rule)
    out = scaled_dot_product(q, k, v, backend=backend, causal=True, **rule)
    torch.testing.assert_close(out, reference_attention(q, k, v, mask), atol=2e-5, rtol=1e-4)


def test_window_output_ignores_keys_outside_the_window() -> None:
    attn = Attention(16, 2, causal=True, sliding_window=3).eval()
    x = torch.randn(1, 10, 16)
    far = x.clone()
    far[:, :6] = torch.randn(1, 6, 16) * 10  # positions 0..5 are outside the window of 8 and 9
    with torch.no_grad():
        a, b = attn(x), attn(far)
    torch.testing.assert_close(a[:, 8:], b[:, 8:])
    assert not torch.allclose(a[:, 6:8], b[:, 6:8])


def test_chunked_streaming_equals_full_forward() -> None:
    attn = Attention(16, 4, 2, causal=True, chunk_size=4).eval()
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        full = attn(x)
        with attn.streaming(2):
            steps = torch.cat([attn(x[:, :5]), attn(x[:, 5:6]), attn(x[:, 6:])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_positions_restart_in_every_packed_sequence() -> None:
    positions = positions_from_cu_seqlens(torch.tensor([0, 3, 3, 7]), 7)
    assert positions.tolist() == [0, 1, 2, 0, 1, 2, 3]


def _decoder(**config) -> Decoder:
    torch.manual_seed(0)
    base = dict(dim=32, depth=2, num_heads=4, num_kv_heads=2)
    return Decoder(DecoderConfig(**{**base, **config})).eval()


@pytest.mark.parametrize("backend", ["sdpa", "flex", "eager"])
@pytest.mark.parametrize("rule", [{}, {"sliding_window": 3}, {"attention_chunk": 4}])
def test_packed_decoder_equals_each_sequence_alone(backend: str, rule: dict) -> None:
    decoder = _decoder(backend=backend, **rule)
    lengths = [5, 1, 9, 4]
    xs = [torch.randn(1, n, 32) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    with torch.no_grad():
        packed = decoder(torch.cat(xs, 1), cu_seqlens=cu)
        alone = torch.cat([decoder(x) for x in xs], 1)
    torch.testing.assert_close(packed, alone, atol=2e-5, rtol=1e-4)


def test_packed_moe_decoder_equals_separate_and_gradients_flow() -> None:
    torch.manual_seed(0)
    decoder = Decoder(DecoderConfig(dim=32, depth=2, num_heads=4),
                      mlp_factory=lambda i: omnikit.create_model("moe_tiny"))
    xs = [torch.randn(1, n, 32) for n in (6, 3)]
    packed = decoder(torch.cat(xs, 1), cu_seqlens=torch.tensor([0, 6, 9]))
    torch.testing.assert_close(packed, torch.cat([decoder(x) for x in xs], 1), atol=2e-5, rtol=1e-4)
    packed.square().mean().backward()
    assert all(p.grad is not None for p in decoder.parameters())


def test_decoder_threads_moe_aux_without_changing_outputs() -> None:
    torch.manual_seed(0)
    decoder = Decoder(
        DecoderConfig(dim=32, depth=3, num_heads=4),
        mlp_factory=lambda i: omnikit.create_model("moe_tiny") if i != 1 else omnikit.layers.SwiGLU(32, 64),
    )
    x = torch.randn(2, 7, 32)
    plain = decoder(x)
    out, auxes = decoder(x, return_aux=True)
    torch.testing.assert_close(out, plain)
    assert [type(a) for a in auxes] == [MoEAux, type(None), MoEAux]
    assert all(int(a.tokens_per_expert.sum()) == 2 * 7 * 2 for a in auxes if a is not None)
    loss = sum(a.load_balancing_loss for a in auxes if a is not None)
    loss.backward()
    assert decoder.blocks[0].mlp.router.weight.grad is not None
    decoder.gradient_checkpointing = True
    decoder.train()
    out_ckpt, auxes_ckpt = decoder(x, return_aux=True)
    torch.testing.assert_close(out_ckpt, plain)
    assert isinstance(auxes_ckpt[2], MoEAux)


def test_chunk_size_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="`chunk_size` expected an int > 0 but got 0"):
        Attention(16, 2, chunk_size=0)
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="chunk_size"):
        scaled_dot_product(q, q, q, backend="flash", chunk_size=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["sdpa", "flex", "flash"])
def test_cuda_bf16_packed_attention_matches_fp32_cpu_reference(backend: str) -> None:
    if backend == "flash" and not flash_attn_available(torch.device("cuda")):
        pytest.skip("flash_attn is not installed")
    torch.manual_seed(0)
    attn = Attention(128, 4, 2, causal=True, sliding_window=16).eval()
    cu = torch.tensor([0, 40, 47, 100])
    x = torch.randn(1, 100, 128)
    with torch.no_grad():
        ref = attn(x, cu_seqlens=cu)
        attn_gpu = Attention(128, 4, 2, causal=True, sliding_window=16, backend=backend).cuda().bfloat16()
        attn_gpu.load_state_dict(attn.state_dict())
        out = attn_gpu(x.cuda().bfloat16(), cu_seqlens=cu.cuda())
    torch.testing.assert_close(out.float().cpu(), ref, atol=3e-2, rtol=3e-2)
