"""Causal attention of query pieces over a longer key range with no ``(queries x keys)`` mask.

A chunk of ``L`` queries at positions ``p .. p + L - 1`` (chunked prefill through a KV cache, or one
of the two load-balanced pieces a context-parallel rank holds) attends over keys ``0 .. p + L - 1``.
The keys split into segments, each attended by one call of the CPU flash kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``, which tiles the scores internally and returns
the log-sum-exp of every row):

- ``"full"``: keys every query of the piece sees (the prefix before ``p``): no mask;
- ``"causal"``: the diagonal block ``p .. p + L - 1``, equal lengths: the kernel's own causal path;
- ``"masked"``: what a sliding window cuts or key padding hides, in blocks of at most
  ``max(L, 128)`` keys, each with a small additive mask ``(B or 1, 1, L, block)``.

The segments' outputs are merged by their log-sum-exp (online softmax), so the largest tensor any
call allocates is bounded by the piece (``L x D`` per head, or ``L x block`` for a masked block),
never by the context. Rows that see no key give zeros (never NaN), as everywhere in omnikit.

Differentiable (:class:`_BlockAttention`): the backward runs the kernel's backward once per
segment with the merged output and log-sum-exp, so each segment's probabilities are the global ones
and the gradients add up to those of one softmax over all keys (context-parallel training). The
kernel's own autograd cannot serve: its log-sum-exp output carries no gradient, so merging under
autograd would drop the terms through the merge weights.
Grouped-query attention is native to the kernel (no key/value copies). CPU only; other devices,
``torch.compile`` and attention dropout keep the masked path of
:func:`~omnikit.layers.attention_backends.scaled_dot_product` (:func:`block_attention_serves`).

Shapes: ``q`` ``(B, H, T, D)`` with its rows split into ``pieces``; ``k``/``v`` ``(B, H_kv, S, D)``,
key ``j`` at position ``j``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from omnikit.utils.checks import OmnikitValueError

__all__ = ["block_attention_serves", "causal_block_attention"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
#: the fewest keys of a masked block (blocks are ``max(L, MIN_BLOCK)`` wide for a piece of ``L`` queries)
MIN_BLOCK = 128


def block_attention_serves(q: torch.Tensor, dropout_p: float = 0.0) -> bool:
    """True when :func:`causal_block_attention` can run: a CPU tensor of a kernel dtype, no
    dropout, not traced by ``torch.compile`` (the plan reads positions and padding on the host)."""
    return (q.device.type == "cpu" and q.dtype in _DTYPES and not dropout_p
            and not torch.compiler.is_compiling())


@dataclass(frozen=True)
class _Segment:
    """Query rows ``row .. row + length - 1`` (positions from ``start``) against keys ``keys``."""

    row: int
    start: int
    length: int
    keys: slice
    kind: str  # "full", "causal" or "masked"


def _plan(pieces: Sequence[tuple[int, int]], window: int | None, padded: torch.Tensor | None) -> list[_Segment]:
    """Segments of every piece ``(start, length)``; ``padded``: ``(S + 1,)`` running count of key
    columns where some batch row is padding (None: no padding)."""

    def clean(a: int, b: int) -> bool:
        return padded is None or int(padded[b]) == int(padded[a])

    segments, row = [], 0
    for start, length in pieces:
        block, end = max(length, MIN_BLOCK), start + length
        low = 0 if window is None else max(0, start - window + 1)
        for a in range(low, start, block):
            b = min(a + block, start)
            sees_all = (window is None or a > end - 1 - window) and clean(a, b)
            last = segments[-1] if segments else None
            if sees_all and last is not None and last.row == row and last.kind == "full" and last.keys.stop == a:
                segments[-1] = _Segment(row, start, length, slice(last.keys.start, b), "full")
            else:
                segments.append(_Segment(row, start, length, slice(a, b), "full" if sees_all else "masked"))
        if (window is None or window >= length) and clean(start, end):
            segments.append(_Segment(row, start, length, slice(start, end), "causal"))
        else:
            segments += [_Segment(row, start, length, slice(a, min(a + block, end)), "masked")
                         for a in range(start, end, block)]
        row += length
    return segments


def _mask(seg: _Segment, window: int | None, padding: torch.Tensor | None,
          dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A masked segment's additive mask ``(B or 1, 1, L, keys)`` and which rows see a key ``(B or 1, 1, L)``."""
    q_pos = torch.arange(seg.start, seg.start + seg.length)[:, None]
    k_pos = torch.arange(seg.keys.start, seg.keys.stop)[None, :]
    ok = k_pos <= q_pos
    if window is not None:
        ok = ok & (k_pos > q_pos - window)
    ok = ok[None, None]
    if padding is not None:
        ok = ok & padding[:, None, None, seg.keys]
    return torch.zeros(ok.shape, dtype=dtype).masked_fill_(~ok, float("-inf")), ok.any(dim=-1)


def _rows(x: torch.Tensor, seg: _Segment) -> torch.Tensor:
    return x[:, :, seg.row : seg.row + seg.length]


class _BlockAttention(torch.autograd.Function):
    """Forward: every segment's ``(out, lse)`` merged per piece; backward: the kernel's backward per
    segment against the merged ``out`` and ``lse``."""

    @staticmethod
    def forward(ctx, q, k, v, padding, segments, window, scale):
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32  # the kernel's log-sum-exp dtype
        out = torch.zeros(q.shape, dtype=acc)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=acc)
        for seg in segments:
            mask, visible = (None, None) if seg.kind != "masked" else _mask(seg, window, padding, q.dtype)
            part, part_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                _rows(q, seg), k[:, :, seg.keys], v[:, :, seg.keys], 0.0, seg.kind == "causal", attn_mask=mask,
                scale=scale)
            if visible is not None:  # the kernel reports 0 for a row that sees no key here
                part_lse = part_lse.masked_fill(~visible, float("-inf"))
            rows = slice(seg.row, seg.row + seg.length)
            old = lse[:, :, rows]
            new = torch.logaddexp(old, part_lse)
            keep, take = _weight(old, new), _weight(part_lse, new)
            out[:, :, rows] = out[:, :, rows] * keep[..., None] + part.to(acc) * take[..., None]
            lse[:, :, rows] = new
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, padding, out, lse)
        ctx.segments, ctx.window, ctx.scale = segments, window, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, padding, out, lse = ctx.saved_tensors
        lse = lse.masked_fill(lse == float("-inf"), float("inf"))  # rows that see nothing: probabilities 0
        grad_q, grad_k, grad_v = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        grad = grad.contiguous()
        for seg in ctx.segments:
            mask = None if seg.kind != "masked" else _mask(seg, ctx.window, padding, q.dtype)[0]
            gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                _rows(grad, seg), _rows(q, seg), k[:, :, seg.keys], v[:, :, seg.keys], _rows(out, seg),
                _rows(lse, seg), 0.0, seg.kind == "causal", attn_mask=mask, scale=ctx.scale)
            _rows(grad_q, seg).add_(gq)
            grad_k[:, :, seg.keys] += gk
            grad_v[:, :, seg.keys] += gv
        return grad_q, grad_k, grad_v, None, None, None, None


def _weight(part_lse: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``exp(part - total)``, 0 where nothing is visible yet (both ``-inf``)."""
    return torch.where(total == float("-inf"), 0.0, (part_lse - total).exp())


def causal_block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pieces: Sequence[tuple[int, int]],
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention ``(B, H, T, D)`` of ``q``'s rows, split into ``pieces`` ``(first position,
    length)`` in row order, over ``k``/``v`` ``(B, H_kv, S, D)`` (keys past a piece's end unseen);
    ``sliding_window``: a query sees at most that many most recent keys; ``key_padding_mask``:
    ``(B, S)`` bool, False on padded keys."""
    if sum(length for _, length in pieces) != q.shape[2]:
        raise OmnikitValueError(f"`pieces` expected lengths adding up to the {q.shape[2]} queries but got {pieces}")
    if max(start + length for start, length in pieces) > k.shape[2]:
        raise OmnikitValueError(f"`pieces` {list(pieces)} reach past the {k.shape[2]} keys")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    padded = None
    if key_padding_mask is not None and not bool(key_padding_mask.all()):
        padded = torch.nn.functional.pad((~key_padding_mask.bool()).any(dim=0).long().cumsum(0), (1, 0))
    else:
        key_padding_mask = None
    segments = _plan(pieces, sliding_window, padded)
    return _BlockAttention.apply(q, k, v, key_padding_mask, segments, sliding_window, scale)
