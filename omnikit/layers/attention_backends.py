"""Attention kernels behind one function, :func:`scaled_dot_product`.

Backends:

- ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``; pure causal
  attention takes its built-in causal path (flash kernel on CUDA and on the CPU). On the CPU,
  causal attention of several queries with a KV-cache offset, a sliding window or key padding
  (and no other mask) runs mask-free in segments merged by log-sum-exp
  (:mod:`omnikit.layers.attention_blockwise`: memory bounded by the queries, not the keys);
  anything else a boolean mask.
- ``"flash"``: the ``flash_attn`` package on CUDA with fp16/bf16 inputs, including the
  variable-length packed path (``cu_seqlens``); raises when unavailable.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with a block mask built from the same
  rules (causal, sliding window, padding, packed segments, any bool mask). Sparse masks skip
  whole blocks; compile the model for speed.
- ``"eager"``: explicit softmax in float32, the numerical reference for tests.
- ``"auto"``: ``"flash"`` when it can serve the call, otherwise ``"sdpa"``.

Shapes: ``q`` is ``(B, H, T, D)``; ``k`` and ``v`` are ``(B, H_kv, S, D)`` with ``H % H_kv == 0``
(grouped-query attention). The result is ``(B, H, T, D)``.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F

from omnikit.layers.attention_blockwise import block_attention_serves, causal_block_attention
from omnikit.layers.masks import build_attention_mask, positions_in_segments, segment_ids_from_cu_seqlens
from omnikit.utils.checks import OmnikitValueError, check_choice

__all__ = ["BACKENDS", "flash_attn_available", "scaled_dot_product"]

BACKENDS: tuple[str, ...] = ("auto", "sdpa", "flash", "flex", "eager")


@functools.cache
def _flash_attn_module():
    try:
        import flash_attn
    except ImportError:
        return None
    return flash_attn


def flash_attn_available(device: torch.device) -> bool:
    """True when the ``flash_attn`` package is importable and ``device`` is CUDA."""
    return device.type == "cuda" and _flash_attn_module() is not None


def _flash_can_serve(q: torch.Tensor, key_padding_mask, attention_mask, segment_ids) -> bool:
    return (
        flash_attn_available(q.device)
        and q.dtype in (torch.float16, torch.bfloat16)
        and key_padding_mask is None
        and attention_mask is None
        and segment_ids is None
    )


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _masked_softmax_attention(
    q, k, v, mask, scale, dropout_p, *, eager: bool, sync: bool = True, rows_visible: bool = False
) -> torch.Tensor:
    """SDPA or float32 math with a bool mask; rows with no visible key give zeros (never NaN).
    ``sync=False``: never read the mask on the host (always apply the empty-row fix);
    ``rows_visible``: every query is known to see a key (no fix needed)."""
    row_visible = None
    if mask is not None and not rows_visible:
        row_visible = mask.any(dim=-1, keepdim=True)
        if not sync or torch.compiler.is_compiling() or not bool(row_visible.all()):  # traced: always mask
            mask = mask | ~row_visible
        else:
            row_visible = None
    groups = q.shape[1] // k.shape[1]
    if eager:
        k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.softmax(dim=-1)
        if dropout_p:
            probs = F.dropout(probs, p=dropout_p)
        out = torch.matmul(probs, v.float()).to(q.dtype)
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale, enable_gqa=groups > 1
        )
    return out if row_visible is None else out * row_visible


def _flex(q, k, v, *, scale, q_offset, causal, sliding_window, chunk_size, key_padding_mask, segment_ids,
          attention_mask):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    seg = None if segment_ids is None else (segment_ids if segment_ids.ndim == 2 else segment_ids[None])
    local = None if seg is None or chunk_size is None else positions_in_segments(seg)

    def mask_mod(b, h, q_idx, kv_idx):
        q_pos = q_idx + q_offset
        ok = kv_idx >= 0
        if causal:
            ok = ok & (kv_idx <= q_pos)
        if sliding_window is not None:
            ok = ok & (kv_idx > q_pos - sliding_window)
        if local is not None:  # chunks restart with every packed sequence
            sb = b if local.shape[0] > 1 else 0
            ok = ok & (local[sb, kv_idx] // chunk_size == local[sb, q_idx] // chunk_size)
        elif chunk_size is not None:
            ok = ok & (kv_idx // chunk_size == q_pos // chunk_size)
        if key_padding_mask is not None:
            ok = ok & key_padding_mask[b, kv_idx]
        if seg is not None:
            sb = b if seg.shape[0] > 1 else 0
            ok = ok & (seg[sb, q_idx] == seg[sb, kv_idx])
        if attention_mask is not None:
            mb = b if attention_mask.shape[0] > 1 else 0
            mh = h if attention_mask.shape[1] > 1 else 0
            ok = ok & attention_mask[mb, mh, q_idx, kv_idx]
        return ok

    batch = q.shape[0] if (key_padding_mask is not None or (seg is not None and seg.shape[0] > 1)
                           or (attention_mask is not None and attention_mask.shape[0] > 1)) else None
    heads = q.shape[1] if attention_mask is not None and attention_mask.shape[1] > 1 else None
    block_mask = create_block_mask(mask_mod, batch, heads, q.shape[2], k.shape[2], device=q.device)
    return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def _flash(q, k, v, *, scale, causal, sliding_window, cu_seqlens, max_seqlen, dropout_p):
    fa = _flash_attn_module()
    window = (-1, -1) if sliding_window is None else (sliding_window - 1, 0 if causal else sliding_window - 1)
    if cu_seqlens is not None:
        qp, kp, vp = (t[0].transpose(0, 1) for t in (q, k, v))  # (total, H, D)
        cu = cu_seqlens.to(torch.int32)
        out = fa.flash_attn_varlen_func(
            qp, kp, vp, cu, cu, max_seqlen, max_seqlen, dropout_p=dropout_p, softmax_scale=scale,
            causal=causal, window_size=window,
        )
        return out.transpose(0, 1)[None]
    out = fa.flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p, softmax_scale=scale,
        causal=causal, window_size=window,
    )
    return out.transpose(1, 2)


def _segment_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: list[int], *, causal: bool, scale: float,
    dropout_p: float,
) -> torch.Tensor:
    """Packed sequences ``(1, H, T, D)`` with boundaries ``bounds`` (``cu_seqlens`` read on the host)
    attended sequence by sequence: the sequences of one length gathered into one unmasked SDPA call
    ``(n, H, L, D)``, so the work grows with the sum of the squared lengths, not with ``T ** 2`` as a
    block-diagonal mask would (short windows packed by the audio encoders, packed training rows)."""
    groups: dict[int, list[int]] = {}
    for start, end in itertools.pairwise(bounds):
        if end > start:
            groups.setdefault(end - start, []).append(start)
    steps = torch.arange(q.shape[2], device=q.device)
    outs, places, in_place = [], [], True
    for length, starts in groups.items():
        count = len(starts)
        if starts == list(range(starts[0], starts[0] + count * length, length)):  # side by side: a view
            index = steps[starts[0]: starts[0] + count * length]
            parts = [t[0].narrow(1, starts[0], count * length) for t in (q, k, v)]
        else:
            index = (torch.tensor(starts, device=q.device)[:, None] + steps[:length]).flatten()
            parts = [t[0].index_select(1, index) for t in (q, k, v)]
            in_place = False
        q_g, k_g, v_g = (part.unflatten(1, (count, length)).transpose(0, 1) for part in parts)  # (n, H, L, D)
        out = F.scaled_dot_product_attention(q_g, k_g, v_g, is_causal=causal, dropout_p=dropout_p, scale=scale,
                                             enable_gqa=q.shape[1] != k.shape[1])
        outs.append(out.transpose(0, 1).flatten(1, 2))  # (H, n * L, D)
        places.append(index)
    if len(outs) == 1 and in_place:  # the sequences of one length, side by side: already in order
        return outs[0][None]
    return torch.cat(outs, dim=1).index_select(1, torch.cat(places).argsort())[None]


def scaled_dot_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "sdpa",
    causal: bool = False,
    q_offset: int | torch.Tensor = 0,
    sliding_window: int | None = None,
    chunk_size: int | None = None,
    key_padding_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of ``q`` over ``k``/``v`` under every masking rule given (see module docstring).

    Args:
        q_offset: absolute position of the first query (the KV-cache length when decoding). A 0-dim
            tensor means ``k``/``v`` are a static cache's slots: keys at ``q_offset + T`` and later are
            empty and masked out, and the call makes no host sync (SDPA or eager, with a mask).
        chunk_size: chunked attention: a query sees only keys in its own block of ``chunk_size``
            positions (Llama 4); not served by ``"flash"``.
        cu_seqlens: ``(N+1,)`` cumulative lengths of sequences packed along T (batch must be 1).
    """
    check_choice(backend, "backend", BACKENDS)
    static = isinstance(q_offset, torch.Tensor)  # a static KV cache: keys from q_offset + T on are empty slots
    if static and backend != "eager":
        if backend == "flash":
            raise OmnikitValueError("backend='flash' cannot attend over a static KV cache; use 'sdpa'")
        backend = "sdpa"  # flex and auto too: a mask over the slots, no host sync
    if q.shape[1] % k.shape[1]:
        raise OmnikitValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    segment_ids = None
    if cu_seqlens is not None:
        if q.shape[0] != 1:
            raise OmnikitValueError(f"packed sequences (`cu_seqlens`) expect batch 1 but got {q.shape[0]}")
        segment_ids = segment_ids_from_cu_seqlens(cu_seqlens, k.shape[2])
    flash_ok = chunk_size is None and _flash_can_serve(q, key_padding_mask, attention_mask, None)
    if backend == "auto":
        backend = "flash" if flash_ok else "sdpa"
    if backend == "flash":
        if not flash_ok:
            raise OmnikitValueError(
                "backend='flash' needs the flash_attn package, a CUDA device, fp16/bf16 inputs and no "
                "key_padding_mask/attention_mask/chunk_size (use cu_seqlens for padding-free batches)"
            )
        max_seqlen = None if cu_seqlens is None else int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        return _flash(q, k, v, scale=scale, causal=causal, sliding_window=sliding_window,
                      cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, dropout_p=dropout_p)
    if backend == "flex":
        return _flex(q, k, v, scale=scale, q_offset=q_offset, causal=causal, sliding_window=sliding_window,
                     chunk_size=chunk_size, key_padding_mask=key_padding_mask, segment_ids=segment_ids,
                     attention_mask=attention_mask)
    if (segment_ids is not None and backend == "sdpa" and not static and not torch.compiler.is_compiling()
            and sliding_window is None and chunk_size is None and key_padding_mask is None and attention_mask is None
            and q.shape[2] == k.shape[2]):
        return _segment_sdpa(q, k, v, cu_seqlens.tolist(), causal=causal, scale=scale, dropout_p=dropout_p)
    plain_causal = False  # a Python bool even when traced (SDPA's is_causal takes no SymBool): the `if` guards
    if causal and not static and q_offset == 0 and q.shape[2] == k.shape[2]:
        plain_causal = True
    simple = (not static and sliding_window is None and chunk_size is None and key_padding_mask is None
              and segment_ids is None and attention_mask is None)
    if simple and backend == "sdpa" and (plain_causal or (not causal) or q.shape[2] == 1):
        # fast paths: built-in causal, no mask at all, or one decoding step that sees every cached key
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=plain_causal, dropout_p=dropout_p, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
    if (backend == "sdpa" and causal and q.shape[2] > 1 and chunk_size is None and segment_ids is None
            and attention_mask is None and block_attention_serves(q, dropout_p)):
        end = int(q_offset) + q.shape[2]  # a static cache's slots past the queries hold no keys yet
        padding = None if key_padding_mask is None else key_padding_mask[:, :end]
        return causal_block_attention(q, k[:, :, :end], v[:, :, :end], [(end - q.shape[2], q.shape[2])], scale=scale,
                                      sliding_window=sliding_window, key_padding_mask=padding)
    mask = build_attention_mask(
        q_len=q.shape[2], kv_len=k.shape[2], q_offset=q_offset, causal=causal, sliding_window=sliding_window,
        chunk_size=chunk_size, key_padding_mask=key_padding_mask, segment_ids=segment_ids,
        attention_mask=attention_mask, device=q.device,
    )
    # causal with no padding or extra mask: every query sees at least its own key
    rows_visible = causal and key_padding_mask is None and attention_mask is None
    return _masked_softmax_attention(q, k, v, mask, scale, dropout_p, eager=backend == "eager", sync=not static,
                                     rows_visible=rows_visible)
