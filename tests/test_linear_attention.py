"""Gated DeltaNet: chunked form == recurrent form, delta-rule semantics, streaming with a fixed-size state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omnikit.layers.linear_attention import (
    GatedDeltaNet,
    fla_available,
    gated_delta_rule,
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
)


def inputs(batch=2, heads=3, length=23, d_k=8, d_v=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(batch, heads, length, d_k, generator=g), dim=-1)
    k = F.normalize(torch.randn(batch, heads, length, d_k, generator=g), dim=-1)
    v = torch.randn(batch, heads, length, d_v, generator=g)
    log_decay = -torch.rand(batch, heads, length, generator=g) * 2
    beta = torch.rand(batch, heads, length, generator=g)
    state = torch.randn(batch, heads, d_k, d_v, generator=g)
    return q, k, v, log_decay, beta, state


def test_recurrent_form_is_the_gated_delta_rule() -> None:
    q, k, v, g, beta, s0 = inputs(batch=1, heads=1, length=5)
    out, state = gated_delta_rule_recurrent(q, k, v, g, beta, s0)
    s = s0[0, 0]
    eye = torch.eye(s.shape[0])
    for t in range(5):
        kt, vt = k[0, 0, t, :, None], v[0, 0, t, :, None]
        s = g[0, 0, t].exp() * (eye - beta[0, 0, t] * kt @ kt.T) @ s + beta[0, 0, t] * kt @ vt.T
        torch.testing.assert_close(out[0, 0, t], s.T @ q[0, 0, t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0, 0], s, atol=1e-5, rtol=1e-5)


def test_delta_rule_recalls_what_it_wrote() -> None:
    k = torch.eye(4)[None, None]  # orthogonal keys
    v = torch.randn(1, 1, 4, 3)
    ones = torch.ones(1, 1, 4)
    out, _ = gated_delta_rule_recurrent(k, k, v, torch.zeros_like(ones), ones)  # no decay, full writes
    torch.testing.assert_close(out, v)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_form_equals_recurrent_form_with_gradients(chunk_size: int, with_state: bool) -> None:
    tensors = [t.requires_grad_() for t in inputs()]
    q, k, v, g, beta, s0 = tensors
    initial = s0 if with_state else None
    out_r, state_r = gated_delta_rule_recurrent(q, k, v, g, beta, initial)
    out_c, state_c = gated_delta_rule_chunked(q, k, v, g, beta, initial, chunk_size)
    torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state_c, state_r, atol=1e-5, rtol=1e-5)
    w_out, w_state = torch.randn_like(out_r), torch.randn_like(state_r)
    grads_r = torch.autograd.grad((out_r * w_out).sum() + (state_r * w_state).sum(), tensors, allow_unused=True)
    grads_c = torch.autograd.grad((out_c * w_out).sum() + (state_c * w_state).sum(), tensors, allow_unused=True)
    for a, b in zip(grads_c, grads_r):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_chunked_form_is_stable_under_strong_decay() -> None:
    q, k, v, g, beta, _ = inputs(length=40)
    out_r, _ = gated_delta_rule_recurrent(q, k, v, g * 20, beta)
    out_c, _ = gated_delta_rule_chunked(q, k, v, g * 20, beta, chunk_size=16)
    assert torch.isfinite(out_c).all()
    torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=1e-5)


def test_layer_streaming_equals_full_and_state_is_fixed_size() -> None:
    torch.manual_seed(0)
    layer = GatedDeltaNet(32, 2, 8, num_v_heads=4, chunk_size=4).eval()
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        full = layer(x)
        sizes = []
        with layer.streaming(2):
            pieces = [layer(x[:, :7]), layer(x[:, 7:8])]
            sizes.append(layer.streaming_state.recurrent.numel() + layer.streaming_state.conv.numel())
            for t in range(8, 30):
                pieces.append(layer(x[:, t : t + 1]))
            sizes.append(layer.streaming_state.recurrent.numel() + layer.streaming_state.conv.numel())
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert sizes[0] == sizes[1] == 2 * 4 * 8 * 8 + 2 * (2 * 2 * 8 + 4 * 8) * 3  # state + conv tail, any length


def test_layer_is_causal() -> None:
    layer = GatedDeltaNet(16, 2).eval()
    x = torch.randn(1, 12, 16)
    y = x.clone()
    y[:, 8:] = torch.randn(1, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[:, :8], layer(y)[:, :8])


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="`num_v_heads` \\(3\\) must be a multiple of `num_heads` \\(2\\)"):
        GatedDeltaNet(16, 2, num_v_heads=3)
    with pytest.raises(ValueError, match="`backend` expected one of"):
        GatedDeltaNet(16, 2, backend="triton")
    with pytest.raises(ValueError, match=r"`x` expected shape \(B, T, 16\)"):
        GatedDeltaNet(16, 2)(torch.randn(2, 5, 8))
    if not fla_available(torch.device("cpu")):
        with pytest.raises(ValueError, match="backend='fla' needs"):
            gated_delta_rule(*inputs()[:5], backend="fla")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_paths_match_the_fp32_cpu_reference() -> None:
    q, k, v, g, beta, s0 = inputs(length=130, d_k=64, d_v=64)
    ref, ref_state = gated_delta_rule_recurrent(q, k, v, g, beta, s0)
    backends = ["torch"] + (["fla"] if fla_available(torch.device("cuda")) else [])
    for backend in backends:
        out, state = gated_delta_rule(*(t.cuda() for t in (q, k, v, g, beta, s0)), backend=backend)
        torch.testing.assert_close(out.cpu(), ref, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(state.cpu(), ref_state, atol=1e-3, rtol=1e-3)


class _Chunked(torch.nn.Module):
    def forward(self, q, k, v, g, beta, s0):
        return gated_delta_rule_chunked(q, k, v, g, beta, s0, 4)


@pytest.mark.slow
def test_exported_chunk_scan_serves_other_lengths() -> None:
    """Exported, the chunks run as one ``scan`` (no loop unrolled per chunk count): the program traced at
    13 steps serves 22, and outputs and final state equal the recurrent form."""
    time = torch.export.Dim.DYNAMIC
    program = torch.export.export(_Chunked(), inputs(length=13, seed=13),
                                  dynamic_shapes=({2: time}, {2: time}, {2: time}, {2: time}, {2: time}, None))
    for length in (13, 22):
        q, k, v, g, beta, s0 = inputs(length=length, seed=length)
        out_c, state_c = program.module()(q, k, v, g, beta, s0)
        out_r, state_r = gated_delta_rule_recurrent(q, k, v, g, beta, s0)
        torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state_c, state_r, atol=1e-5, rtol=1e-5)


def test_chunk_recurrence_operators_pass_opcheck() -> None:
    """The opaque operators that ``torch.compile`` sees: fake shapes, autograd registration, AOT dispatch."""
    g = torch.Generator().manual_seed(0)
    b, h, n, c, d_k, d_v = 2, 3, 4, 5, 6, 7
    chunks = [torch.randn(b, h, n, c, d_v, generator=g), torch.randn(b, h, n, c, d_k, generator=g) * 0.1,
              torch.randn(b, h, n, c, d_k, generator=g), torch.randn(b, h, n, c, c, generator=g).tril(),
              torch.randn(b, h, n, c, d_k, generator=g), torch.rand(b, h, n, generator=g)]
    state = torch.randn(b, h, d_k, d_v, generator=g)
    torch.library.opcheck(torch.ops.omnikit.chunk_recurrence, [t.clone().requires_grad_() for t in (state, *chunks)])
    entering = torch.randn(b, h, n, d_k, d_v, generator=g)
    torch.library.opcheck(torch.ops.omnikit.chunk_recurrence_backward,
                          [entering, *chunks, torch.randn_like(chunks[0]), torch.randn_like(state)])


@pytest.mark.slow
def test_compiled_chunks_serve_every_length_with_gradients() -> None:
    """Compiled (plain ``torch.compile``, graph breaks allowed: the case where Inductor cannot lower a
    ``scan``), the chunk recurrence is one opaque operator: other lengths and chunk counts reuse the
    graph, and outputs, final state and every gradient equal the recurrent form."""
    torch._dynamo.reset()
    chunked = torch.compile(gated_delta_rule_chunked, dynamic=True)  # Inductor
    for n, length in enumerate((13, 22, 6)):
        tensors = [t.requires_grad_() for t in inputs(length=length, seed=length)]
        with torch._dynamo.config.patch(error_on_recompile=n > 0):
            out_c, state_c = chunked(*tensors, 4)
        out_r, state_r = gated_delta_rule_recurrent(*tensors)
        torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state_c, state_r, atol=1e-5, rtol=1e-5)
        w_out, w_state = torch.randn_like(out_r), torch.randn_like(state_r)
        grads = [torch.autograd.grad((o * w_out).sum() + (s * w_state).sum(), tensors)
                 for o, s in ((out_c, state_c), (out_r, state_r))]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_packed_sequences_restart_the_state_in_both_forms(chunk_size: int) -> None:
    """``resets`` at sample starts (mid-chunk, on a chunk's first step, two in one chunk): each form of
    a packed row equals its samples run alone, outputs and gradients; the final state is the last sample's."""
    lengths = (5, 3, 1, 8, 6)
    tensors = [t[:1].requires_grad_() for t in inputs(length=sum(lengths), seed=4)]
    q, k, v, g, beta, _ = tensors
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    resets = torch.zeros(1, sum(lengths), dtype=torch.bool)
    resets[0, cu_seqlens[:-1]] = True
    packed_r = gated_delta_rule_recurrent(q, k, v, g, beta, resets=resets)
    packed_c = gated_delta_rule_chunked(q, k, v, g, beta, chunk_size=chunk_size, resets=resets)
    pieces = [gated_delta_rule_recurrent(*(t[:, :, a:b] for t in (q, k, v, g, beta)))
              for a, b in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())]
    alone = torch.cat([o for o, _ in pieces], dim=2)
    w = torch.randn_like(alone)
    grads = [torch.autograd.grad((out * w).sum(), (q, k, v, g, beta)) for out in (alone, packed_r[0], packed_c[0])]
    for out, state in (packed_r, packed_c):
        torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(state, pieces[-1][1], atol=1e-5, rtol=1e-5)
    for got in grads[1:]:
        for a, b in zip(got, grads[0]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu_seqlens, backend="torch")[0], alone,
                               atol=1e-5, rtol=1e-5)


def test_layer_packed_row_equals_samples_alone_and_padding_is_zeroed() -> None:
    """The layer's short convolution restarts with the state; a left-padded item equals it unpadded."""
    torch.manual_seed(0)
    for projection in ("split", "fused"):
        layer = GatedDeltaNet(16, 2, 8, num_v_heads=4, chunk_size=4, projection=projection).eval()
        x = torch.randn(1, 13, 16)
        cu_seqlens = torch.tensor([0, 2, 9, 13])
        with torch.no_grad():
            packed = layer(x, cu_seqlens=cu_seqlens)
            alone = torch.cat([layer(x[:, a:b]) for a, b in ((0, 2), (2, 9), (9, 13))], dim=1)
            padded = layer(torch.cat([torch.randn(1, 3, 16), x], dim=1),
                           key_padding_mask=torch.arange(16)[None] >= 3)[:, 3:]
        torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(padded, layer(x).detach(), atol=1e-5, rtol=1e-5)
