"""Core layers: attention backends and masks, rotary (1-D and M-RoPE), streaming, causal conv, errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from references import reference_attention

from omnikit.layers import (
    Attention,
    CausalConv1d,
    DecoderBlock,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    build_attention_mask,
    scaled_dot_product,
)
from omnikit.layers.rotary import mrope_axis_of_frequency
from omnikit.streaming import streaming


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
@pytest.mark.parametrize("rule", ["none", "causal", "window", "padding", "segments", "offset"])
def test_backends_match_reference(backend: str, rule: str) -> None:
    B, H, KV, T, D = 2, 4, 2, 11, 8
    S = T + (5 if rule == "offset" else 0)
    q, k, v = torch.randn(B, H, T, D), torch.randn(B, KV, S, D), torch.randn(B, KV, S, D)
    kwargs: dict = {}
    if rule in ("causal", "offset"):
        kwargs["causal"] = True
    if rule == "offset":
        kwargs["q_offset"] = S - T
    if rule == "window":
        kwargs.update(causal=True, sliding_window=3)
    if rule == "padding":
        kwargs["key_padding_mask"] = torch.arange(S)[None] < torch.tensor([[S], [6]])
    segments = None
    if rule == "segments":
        q, k, v = q[:1], k[:1], v[:1]
        kwargs["cu_seqlens"] = torch.tensor([0, 4, 9, 11])
        segments = torch.tensor([0] * 4 + [1] * 5 + [2] * 2)
    mask = build_attention_mask(
        q_len=T, kv_len=S, q_offset=kwargs.get("q_offset", 0), causal=kwargs.get("causal", False),
        sliding_window=kwargs.get("sliding_window"), key_padding_mask=kwargs.get("key_padding_mask"),
        segment_ids=segments,
    )
    out = scaled_dot_product(q, k, v, backend=backend, **kwargs)
    torch.testing.assert_close(out, reference_attention(q, k, v, mask), atol=2e-5, rtol=1e-4)


def test_fully_masked_rows_give_zeros_not_nan() -> None:
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool)
    mask[..., 1, :] = False
    for backend in ("sdpa", "eager"):
        out = scaled_dot_product(q, k, v, backend=backend, attention_mask=mask)
        assert torch.isfinite(out).all() and out[:, :, 1].abs().max() == 0


def test_packed_sequences_equal_separate_runs() -> None:
    attn = Attention(16, 4, 2, causal=True, qk_norm=True).eval()
    lengths = [5, 3, 7]
    xs = [torch.randn(1, n, 16) for n in lengths]
    cu = torch.tensor([0, 5, 8, 15])
    rotary = RotaryEmbedding(4)
    positions = torch.cat([torch.arange(n) for n in lengths])
    packed = attn(torch.cat(xs, 1), rope=rotary(positions), cu_seqlens=cu)
    separate = torch.cat([attn(x, rope=rotary(torch.arange(x.shape[1]))) for x in xs], 1)
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-5)


def test_key_padding_hides_padded_keys() -> None:
    attn = Attention(16, 2).eval()
    x = torch.randn(1, 6, 16)
    noisy = torch.cat([x, torch.randn(1, 3, 16) * 50], 1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    torch.testing.assert_close(attn(noisy, key_padding_mask=mask)[:, :6], attn(x), atol=1e-5, rtol=1e-5)


def test_streaming_kv_cache_equals_full_forward() -> None:
    block = DecoderBlock(32, 4, 2, qk_norm=True, sliding_window=4).eval()
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        full = block(x)
        with block.attn.streaming(2):
            steps = torch.cat([block(x[:, :4]), block(x[:, 4:5]), block(x[:, 5:])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_streaming_with_grad_is_differentiable() -> None:
    block = DecoderBlock(16, 2)
    x = torch.randn(1, 6, 16, requires_grad=True)
    with streaming(block, 1):
        out = torch.cat([block(x[:, :3]), block(x[:, 3:])], 1)
    out.sum().backward()
    full_grad = torch.autograd.grad(block(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, full_grad, atol=1e-5, rtol=1e-5)


def test_stream_rejects_other_batch_and_nesting() -> None:
    attn = Attention(8, 2, causal=True)
    with attn.streaming(2):
        with pytest.raises(ValueError, match="batch_size=2"):
            attn(torch.randn(3, 1, 8))
        with pytest.raises(ValueError, match="already streaming"), attn.streaming(2):
            pass
    assert attn.streaming_state is None


def test_mrope_with_equal_ids_is_1d_rope() -> None:
    for interleaved in (False, True):
        mrope = RotaryEmbedding(32, sections=(4, 6, 6), interleaved=interleaved)
        rope = RotaryEmbedding(32)
        pos = torch.randint(0, 100, (2, 9))
        for a, b in zip(mrope(pos[None].expand(3, -1, -1)), rope(pos)):
            torch.testing.assert_close(a, b)


def test_mrope_axis_assignment_matches_qwen_layouts() -> None:
    contiguous = mrope_axis_of_frequency((16, 24, 24), interleaved=False)
    assert contiguous[:16].eq(0).all() and contiguous[16:40].eq(1).all() and contiguous[40:].eq(2).all()
    interleaved = mrope_axis_of_frequency((24, 20, 20), interleaved=True)
    assert interleaved[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert interleaved[60:].eq(0).all() and (interleaved == 1).sum() == 20 and (interleaved == 2).sum() == 20


@pytest.mark.parametrize(
    "module_path,class_name,sections,interleaved",
    [
        ("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni", "Qwen2_5OmniRotaryEmbedding", (4, 6, 6), False),
        ("transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe", "Qwen3OmniMoeThinkerTextRotaryEmbedding",
         (6, 5, 5), True),
    ],
)
def test_mrope_matches_transformers(module_path: str, class_name: str, sections, interleaved: bool) -> None:
    module = pytest.importorskip(module_path)
    head_dim = 2 * sum(sections)
    config = SimpleNamespace(
        max_position_embeddings=4096, head_dim=head_dim, hidden_size=4 * head_dim, num_attention_heads=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(sections)},
    )
    hf_rotary = getattr(module, class_name)(config)
    positions = torch.randint(0, 300, (3, 2, 7))
    expected = hf_rotary(torch.zeros(1, dtype=torch.float32), positions)
    ours = RotaryEmbedding(head_dim, 10000.0, sections=sections, interleaved=interleaved)(positions)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)


def test_rmsnorm_matches_definition_and_keeps_dtype() -> None:
    norm = RMSNorm(8)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(3, 8)
    expected = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_swiglu_gates_the_up_projection() -> None:
    mlp = SwiGLU(6, 5)
    x = torch.randn(2, 6)
    expected = mlp.down(torch.nn.functional.silu(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T))
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 1, 1), (4, 2, 1), (3, 1, 2), (5, 3, 1)])
def test_causal_conv_streaming_equals_offline(kernel: int, stride: int, dilation: int) -> None:
    conv = CausalConv1d(3, 4, kernel, stride=stride, dilation=dilation).eval()
    x = torch.randn(2, 3, 31)
    offline = conv(x)
    assert offline.shape[-1] == 31 // stride
    with torch.no_grad(), conv.streaming(2):
        chunks = torch.cat([conv(x[..., a:b]) for a, b in ((0, 1), (1, 8), (8, 9), (9, 20), (20, 31))], -1)
    torch.testing.assert_close(chunks, offline, atol=1e-6, rtol=1e-5)
    future = x.clone()
    future[..., 16:] = torch.randn(2, 3, 15)
    torch.testing.assert_close(conv(future)[..., : 16 // stride], offline[..., : 16 // stride])


def test_block_called_alone_is_causal() -> None:
    block = DecoderBlock(16, 2).eval()
    x = torch.randn(1, 8, 16)
    changed = x.clone()
    changed[:, 5:] += 1
    torch.testing.assert_close(block(changed)[:, :5], block(x)[:, :5])
    assert not torch.allclose(block(changed)[:, 5:], block(x)[:, 5:])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: Attention(30, 4), "must divide `dim`"),
        (lambda: Attention(32, 4, 3), "must divide `num_heads`"),
        (lambda: Attention(32, 4, backend="fast"), "`backend` expected one of"),
        (lambda: Attention(32, 0), "`num_heads` expected an int > 0"),
        (lambda: Attention(32, 4)(torch.randn(2, 5)), "`x` expected shape"),
        (lambda: Attention(32, 4)(torch.randn(2, 5, 16)), r"`x` expected shape \(B, T, 32\)"),
        (lambda: Attention(32, 4)(torch.randint(0, 3, (2, 5, 32))), "floating-point"),
        (lambda: Attention(32, 4)(torch.randn(2, 5, 32), key_padding_mask=torch.ones(2, 4, dtype=torch.bool)),
         "`key_padding_mask` expected shape"),
        (lambda: Attention(32, 4)(torch.randn(2, 5, 32), attention_mask=torch.ones(5, 5, dtype=torch.bool)),
         "`attention_mask` expected a 4-D tensor"),
        (lambda: RotaryEmbedding(7), "even"),
        (lambda: RotaryEmbedding(16, sections=(2, 2, 2)), "summing to head_dim // 2 = 8"),
        (lambda: RotaryEmbedding(16)(torch.zeros(3, 1, 4, dtype=torch.long)), "1-D"),
        (lambda: scaled_dot_product(torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4),
                                    cu_seqlens=torch.tensor([0, 3])), "batch 1"),
        (lambda: scaled_dot_product(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4),
                                    cu_seqlens=torch.tensor([0, 2])), "end at the packed length 3"),
        (lambda: scaled_dot_product(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4),
                                    backend="flash"), "flash_attn"),
        (lambda: CausalConv1d(3, 3, 2, stride=3), "receptive field"),
        (lambda: CausalConv1d(3, 3, 2)(torch.randn(1, 4, 5)), r"`x` expected shape \(B, 3, T\)"),
    ],
)
def test_bad_input_raises_clear_errors(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.cuda
def test_sdpa_and_flash_backends_agree_on_cuda_bf16() -> None:
    q, k, v = (torch.randn(1, 4, 64, 32, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = scaled_dot_product(q.float(), k.float(), v.float(), backend="eager", causal=True)
    out = scaled_dot_product(q, k, v, backend="auto", causal=True)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
