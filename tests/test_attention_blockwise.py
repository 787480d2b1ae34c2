"""Mask-free causal attention (omnikit.layers.attention_blockwise): equal to one softmax over all keys
(outputs and gradients), chunked prefill through it equals one pass over contexts longer than a key
block, and a chunked prefill allocates nothing that grows with the context."""

from __future__ import annotations

import pytest
import torch

from omnikit.layers import DecoderConfig, scaled_dot_product
from omnikit.layers.attention_blockwise import MIN_BLOCK, _plan, causal_block_attention
from omnikit.layers.hybrid import HybridConfig, HybridDecoder
from omnikit.models import CausalLM, prefill
from omnikit.utils.allocations import LargestAllocation

#: float32 kernels against a float64 softmax: measured 4e-7 at most (outputs and gradients)
REL = 1e-5
TOL = {"atol": 1e-5, "rtol": 1e-4}


def _softmax_reference(q, k, v, pieces, window, padding):
    """Float64 attention with the explicit ``(T, S)`` mask: the oracle (rows seeing nothing give 0)."""
    q_pos = torch.cat([torch.arange(start, start + length) for start, length in pieces])[:, None]
    k_pos = torch.arange(k.shape[2])[None, :]
    ok = k_pos <= q_pos
    if window is not None:
        ok = ok & (k_pos > q_pos - window)
    ok = ok[None, None] if padding is None else ok[None, None] & padding[:, None, None, :]
    groups = q.shape[1] // k.shape[1]
    keys, values = (t.repeat_interleave(groups, 1).double() for t in (k, v))
    scores = (q.double() @ keys.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~ok, float("-inf"))
    return scores.softmax(-1).nan_to_num(0.0) @ values


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double() - want.detach()).norm() / want.detach().norm())


@pytest.mark.parametrize(("pieces", "window", "padded"), [
    ([(300, 200)], None, 0),             # a chunk after a 300-key prefix: one unmasked call + the causal block
    ([(0, 64), (448, 64)], None, 0),     # a cp rank's two load-balanced pieces
    ([(300, 200)], 150, 0),              # a sliding window shorter than the chunk: masked blocks only
    ([(300, 200)], 700, 137),            # a window longer than the context, left padding over two blocks
    ([(0, 500)], None, 137),             # one pass of a left-padded batch: padded queries see nothing
], ids=["prefix", "cp-pieces", "window", "window-padding", "padding"])
def test_equals_one_softmax_with_gradients(pieces, window, padded) -> None:
    g = torch.Generator().manual_seed(0)
    rows, keys = sum(n for _, n in pieces), 512
    q = torch.randn(2, 4, rows, 16, generator=g, requires_grad=True)
    k, v = (torch.randn(2, 2, keys, 16, generator=g, requires_grad=True) for _ in "kv")  # 2 query heads per kv head
    padding = torch.ones(2, keys, dtype=torch.bool)
    padding[1, :padded] = False
    padding = padding if padded else None
    got = causal_block_attention(q, k, v, pieces, sliding_window=window, key_padding_mask=padding)
    want = _softmax_reference(q, k, v, pieces, window, padding)
    assert not got.isnan().any() and _rel(got, want) <= REL
    weights = torch.randn(want.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((got.double() * weights).sum(), (q, k, v))
    wants = torch.autograd.grad((want * weights).sum(), (q, k, v))
    assert max(_rel(a, b) for a, b in zip(grads, wants)) <= REL


def test_plan_masks_only_what_it_must() -> None:
    """A long clean prefix is one unmasked call; left padding masks only the blocks holding it."""
    kinds = [(s.keys.start, s.keys.stop, s.kind) for s in _plan([(1000, 64)], None, None)]
    assert kinds == [(0, 1000, "full"), (1000, 1064, "causal")]
    padded = torch.nn.functional.pad((torch.arange(1064) < 200).long().cumsum(0), (1, 0))  # keys 0-199 padded
    kinds = [(s.keys.start, s.keys.stop, s.kind) for s in _plan([(1000, 64)], None, padded)]
    assert kinds == [(0, MIN_BLOCK, "masked"), (MIN_BLOCK, 2 * MIN_BLOCK, "masked"), (2 * MIN_BLOCK, 1000, "full"),
                     (1000, 1064, "causal")]
    with pytest.raises(ValueError, match="pieces"):
        causal_block_attention(torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8), [(0, 3)])


def _lm(window: int | None = None) -> CausalLM:
    torch.manual_seed(0)
    config = DecoderConfig(dim=32, depth=2, num_heads=2, num_kv_heads=1, head_dim=16, vocab_size=64,
                           sliding_window=window)
    return CausalLM(config).eval()


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("window", [None, 90], ids=["full", "window"])
def test_chunked_prefill_over_many_key_blocks_equals_one_pass(cache: str, window: int | None) -> None:
    """A 400-token left-padded prompt (row 1: 150 padding positions, over two key blocks) in chunks of 37:
    every chunk after the first attends over a prefix, with and without a sliding window."""
    lm = _lm(window)
    ids = torch.randint(0, 64, (2, 400), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 400, dtype=torch.bool)
    mask[1, :150] = False
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full = lm(ids, positions=positions, key_padding_mask=mask)
        with lm.streaming(2, max_len=400 if cache == "static" else None):
            last = prefill(lm, ids, chunk=37, positions=positions, key_padding_mask=mask)
    torch.testing.assert_close(last, full[:, -1], **TOL)


def test_hybrid_chunked_prefill_over_many_key_blocks_equals_one_pass() -> None:
    torch.manual_seed(0)
    config = HybridConfig(dim=32, depth=2, num_heads=2, num_kv_heads=1, head_dim=16, linear_heads=2,
                          linear_head_dim=16, linear_backend="torch", full_attention_interval=2)
    model = HybridDecoder(config).eval()
    x = torch.randn(1, 300, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x)
        with model.streaming(1):
            last = prefill(model, x, chunk=64)
    torch.testing.assert_close(last, full[:, -1], **TOL)


def _largest_in_prefill(model: torch.nn.Module, inputs: torch.Tensor, chunk: int) -> int:
    """Largest allocation of a chunked prefill through a static cache (allocated before, outside the count)."""
    with torch.no_grad(), model.streaming(1, max_len=inputs.shape[1]), LargestAllocation() as mode:
        prefill(model, inputs, chunk=chunk)
    return mode.largest


@pytest.mark.parametrize("kind", ["dense", "hybrid"])
def test_chunked_prefill_allocates_nothing_that_grows_with_the_context(kind: str) -> None:
    """The largest tensor allocated while prefilling 512 and 4096 tokens in chunks of 64 is the same size
    (a chunk's activations): the masked path allocated a (64 x context) mask, 262144 elements at 4096."""
    torch.manual_seed(0)
    if kind == "dense":
        model = _lm()
        inputs = {n: torch.randint(0, 64, (1, n)) for n in (512, 4096)}
    else:
        config = HybridConfig(dim=32, depth=2, num_heads=2, num_kv_heads=1, head_dim=16, linear_heads=2,
                              linear_head_dim=16, linear_backend="torch", full_attention_interval=2)
        model = HybridDecoder(config).eval()
        inputs = {n: torch.randn(1, n, 32) for n in (512, 4096)}
    short, long = (_largest_in_prefill(model, x, 64) for x in inputs.values())
    assert long == short
    assert long < 64 * 512


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-6), (torch.bfloat16, 2e-2)])
def test_other_kernel_dtypes_match_the_float32_reference(dtype: torch.dtype, atol: float) -> None:
    """float64 and bf16 through the mask-free path (window and padding: masked blocks) against the eager
    backend's float32 softmax; gradients are finite."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 40, 16, generator=g).to(dtype).requires_grad_()
    k, v = (torch.randn(1, 1, 300, 16, generator=g).to(dtype).requires_grad_() for _ in "kv")
    padding = torch.ones(1, 300, dtype=torch.bool)
    padding[0, :20] = False
    got = causal_block_attention(q, k, v, [(260, 40)], sliding_window=100, key_padding_mask=padding)
    want = scaled_dot_product(q, k, v, backend="eager", causal=True, q_offset=260, sliding_window=100,
                              key_padding_mask=padding)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=atol)
    got.sum().backward()
    assert all(t.grad.isfinite().all() for t in (q, k, v))
