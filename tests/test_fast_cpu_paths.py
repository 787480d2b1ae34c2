"""The fast paths of issue 30: oneDNN linears, packed sequences attended segment by segment, stream checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from omnikit.audio.blocks import EncoderStack
from omnikit.layers import Attention
from omnikit.layers import linear as linear_module
from omnikit.layers.attention_backends import scaled_dot_product
from omnikit.layers.linear import MIN_ROWS, MIN_STREAMED_WEIGHT, Linear, linear
from omnikit.streaming import check_stream_batch, is_streaming, stream_members, streaming


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


@pytest.mark.parametrize(("shape", "bias", "grads"), [
    ((2, 150, 64), True, (True, True, True)),  # 2.5M multiply-adds: oneDNN
    ((300, 64), False, (True, True, False)),
    ((3, 100, 64), True, (False, True, True)),  # first layer: no input gradient
    ((290, 64), True, (True, False, False)),  # frozen weight and bias (adapters)
    ((2, 9, 64), True, (True, True, True)),  # a tiny product: F.linear
])
def test_linear_matches_f_linear_values_and_gradients(shape, bias, grads):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).requires_grad_(grads[0])
    weight = torch.randn(128, shape[-1], generator=g).requires_grad_(grads[1])
    b = torch.randn(128, generator=g).requires_grad_(grads[2]) if bias else None
    upstream = torch.randn(*shape[:-1], 128, generator=g)
    leaves = [t for t in (x, weight, b) if t is not None and t.requires_grad]
    ours = torch.autograd.grad(linear(x, weight, b), leaves, upstream)
    ref = torch.autograd.grad(F.linear(x, weight, b), leaves, upstream)
    assert _rel(linear(x, weight, b), F.linear(x, weight, b)) <= 1e-5
    for a, r in zip(ours, ref, strict=True):
        assert a.shape == r.shape and _rel(a, r) <= 1e-5


def test_linear_falls_back_where_onednn_is_not_used():
    g = torch.Generator().manual_seed(1)
    weight, b = torch.randn(2048, 1024, generator=g), torch.randn(2048, generator=g)
    for x, w, bias in ((torch.randn(MIN_ROWS - 1, 1024, generator=g), weight, b),  # few rows, autograd on
                       (torch.randn(8, 1024, dtype=torch.float64, generator=g), weight.double(), b.double()),
                       (torch.randn(0, 1024), weight, b)):
        assert torch.equal(linear(x, w, bias), F.linear(x, w, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.randn(8, 1024, generator=g)
        assert torch.equal(linear(x, weight, b), F.linear(x, weight, b))


def test_few_rows_take_onednn_for_a_streamed_weight_outside_autograd_only(monkeypatch):
    g = torch.Generator().manual_seed(2)
    large = torch.randn(MIN_STREAMED_WEIGHT // 512, 512, generator=g)
    small = torch.randn(MIN_STREAMED_WEIGHT // 512 - 1, 512, generator=g)
    calls = []
    kernel = linear_module.onednn_linear
    monkeypatch.setattr(linear_module, "onednn_linear", lambda *a: calls.append(a[0].shape[0]) or kernel(*a))
    for rows in (1, 2, 3):  # a decoding step of batch 1 to 3
        x = torch.randn(rows, 512, generator=g)
        with torch.no_grad():
            assert _rel(linear(x, large), F.linear(x, large)) <= 1e-5
            assert torch.equal(linear(x, small), F.linear(x, small))  # a smaller weight keeps F.linear
        assert torch.equal(linear(x, large), F.linear(x, large))  # autograd recording keeps F.linear too
    assert calls == [1, 2, 3]


def test_linear_module_is_an_nn_linear_with_its_keys():
    torch.manual_seed(0)
    ours = Linear(6, 4)
    torch.manual_seed(0)
    ref = nn.Linear(6, 4)
    assert isinstance(ours, nn.Linear) and list(ours.state_dict()) == list(ref.state_dict())
    assert torch.equal(ours.weight, ref.weight)
    x = torch.randn(3, 5, 6)
    assert _rel(ours(x), ref(x)) <= 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_packed_segments_match_the_block_diagonal_mask(causal):
    g = torch.Generator().manual_seed(2)
    bounds = [0, 7, 17, 17, 24, 31, 41, 44]  # repeated lengths (batched together), an empty segment
    q = torch.randn(1, 4, 44, 8, generator=g, requires_grad=True)
    k, v = (torch.randn(1, 2, 44, 8, generator=g, requires_grad=True) for _ in range(2))  # grouped-query heads
    cu = torch.tensor(bounds)
    fast = scaled_dot_product(q, k, v, backend="sdpa", causal=causal, cu_seqlens=cu)
    ref = scaled_dot_product(q, k, v, backend="eager", causal=causal, cu_seqlens=cu)  # the masked path
    assert fast.shape == ref.shape and _rel(fast, ref) <= 1e-5
    upstream = torch.randn(fast.shape, generator=g)
    for a, r in zip(torch.autograd.grad(fast, (q, k, v), upstream), torch.autograd.grad(ref, (q, k, v), upstream),
                    strict=True):
        assert _rel(a, r) <= 1e-5


def test_one_length_side_by_side_stays_a_view_in_order():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 30, 8, generator=g) for _ in range(3))
    fast = scaled_dot_product(q, k, v, cu_seqlens=torch.tensor([0, 10, 20, 30]))
    ref = F.scaled_dot_product_attention(*(t[0].unflatten(1, (3, 10)).transpose(0, 1) for t in (q, k, v)))
    assert torch.equal(fast, ref.transpose(0, 1).flatten(1, 2)[None])


def test_ragged_windows_match_each_window_alone():
    torch.manual_seed(0)
    stack = EncoderStack(16, 2, 2, 32).eval()
    x = torch.randn(5, 12, 16)
    valid = torch.tensor([12, 5, 12, 1, 9])
    with torch.no_grad():
        out = stack.forward_ragged(x, valid)
        for row, n in enumerate(valid.tolist()):
            alone = stack(x[row: row + 1, :n])
            assert _rel(out[row, :n], alone[0]) <= 1e-5
            assert not out[row, n:].any()


def test_an_open_stream_keeps_its_members_until_it_closes():
    attn = Attention(16, 2, causal=True)
    assert not is_streaming(attn)
    with streaming(attn, 2):
        assert is_streaming(attn) and attn.__dict__["_omnikit_stream_members"] == stream_members(attn)
        check_stream_batch(attn, 2, "x")
        with pytest.raises(ValueError, match="x"):
            check_stream_batch(attn, 3, "x")
    assert not is_streaming(attn) and "_omnikit_stream_members" not in attn.__dict__
