"""Boolean attention masks. Convention everywhere: ``True`` means "may attend".

Masks are built lazily and only when needed: plain causal self-attention uses the kernels'
built-in causal path and never materialises a ``(T, S)`` mask.
"""

from __future__ import annotations

import torch

from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = [
    "build_attention_mask",
    "lengths_to_mask",
    "masked_mean",
    "positions_from_cu_seqlens",
    "positions_in_segments",
    "segment_ids_from_cu_seqlens",
]


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B,)`` valid lengths -> ``(B, max_len)`` bool, True on valid (left-aligned) positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``values`` over ``dim`` (all dims when None) where ``mask`` (broadcastable) is True.

    Masked-out entries never contribute, even NaN or inf ones (they are replaced, not multiplied
    by zero); where nothing is valid the mean is 0.
    """
    mask = mask.expand(values.shape)
    total = values.masked_fill(~mask, 0).sum(dim) if dim is not None else values.masked_fill(~mask, 0).sum()
    count = mask.sum(dim) if dim is not None else mask.sum()
    return total / count.clamp_min(1).to(total.dtype)


def segment_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Cumulative sequence starts ``(N+1,)`` -> segment id of every packed position ``(total,)``."""
    check_tensor(cu_seqlens, "cu_seqlens", ndim=1, floating=False)
    if cu_seqlens.numel() < 2 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != total:
        raise OmnikitValueError(
            f"`cu_seqlens` expected to start at 0 and end at the packed length {total} but got "
            f"{cu_seqlens.tolist()}"
        )
    if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        raise OmnikitValueError(f"`cu_seqlens` expected non-decreasing values but got {cu_seqlens.tolist()}")
    sizes = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(sizes.numel(), device=cu_seqlens.device), sizes)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of every packed token inside its own sequence ``(total,)``: ``0..n-1`` per sequence."""
    segments = segment_ids_from_cu_seqlens(cu_seqlens, total)
    return torch.arange(total, device=cu_seqlens.device) - cu_seqlens.long()[segments]


def positions_in_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position of every token inside its run of equal segment ids, along the last dim."""
    index = torch.arange(segment_ids.shape[-1], device=segment_ids.device).expand_as(segment_ids)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[..., 1:] = segment_ids[..., 1:] != segment_ids[..., :-1]
    return index - torch.where(starts, index, 0).cummax(dim=-1).values


def build_attention_mask(
    *,
    q_len: int,
    kv_len: int,
    q_offset: int | torch.Tensor = 0,
    causal: bool = False,
    sliding_window: int | None = None,
    chunk_size: int | None = None,
    key_padding_mask: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Combine every masking rule into one bool mask of shape ``(B or 1, H or 1, q_len, kv_len)``.

    Query ``i`` sits at absolute position ``q_offset + i``; key ``j`` at position ``j``. A 0-dim tensor
    ``q_offset`` (a static KV cache's position) also hides keys ``j >= q_offset + q_len`` (empty slots).

    Args:
        causal: key ``j`` visible iff ``j <= q_offset + i``.
        sliding_window: additionally ``j > q_offset + i - sliding_window``.
        chunk_size: chunked attention (Llama 4): additionally ``j // chunk_size == (q_offset + i) // chunk_size``,
            positions counted from the start of each packed sequence when ``segment_ids`` is given.
        key_padding_mask: ``(B, kv_len)`` bool, False on padded keys.
        segment_ids: ``(B, kv_len)`` or ``(kv_len,)`` int: packed samples attend within their segment
            (requires ``q_len == kv_len``).
        attention_mask: an arbitrary bool mask broadcastable to ``(B, H, q_len, kv_len)``.

    Returns ``None`` when no rule applies.
    """
    parts: list[torch.Tensor] = []
    if isinstance(q_offset, torch.Tensor) and not causal:  # static cache: only the slots written hold keys
        parts.append((torch.arange(kv_len, device=device) < q_offset + q_len)[None, None, None, :])
    if causal or sliding_window is not None or chunk_size is not None:
        q_pos = torch.arange(q_len, device=device)[:, None] + q_offset
        k_pos = torch.arange(kv_len, device=device)[None, :]
        rule = k_pos <= q_pos if causal else torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
        if sliding_window is not None:
            rule = rule & (k_pos > q_pos - sliding_window)
        rule = rule[None, None]
        if chunk_size is not None:
            if segment_ids is not None:  # chunks restart with every packed sequence
                k_pos = positions_in_segments(segment_ids if segment_ids.ndim == 2 else segment_ids[None])
                q_pos = k_pos[:, None, :, None]
                k_pos = k_pos[:, None, None, :]
            rule = rule & (k_pos // chunk_size == q_pos // chunk_size)
        parts.append(rule)
    if key_padding_mask is not None:
        parts.append(key_padding_mask[:, None, None, :].bool())
    if segment_ids is not None:
        if q_len != kv_len:
            raise OmnikitValueError("`segment_ids` (packed sequences) need q_len == kv_len (no KV cache)")
        seg = segment_ids if segment_ids.ndim == 2 else segment_ids[None]
        parts.append((seg[:, :, None] == seg[:, None, :])[:, None])
    if attention_mask is not None:
        check_tensor(attention_mask, "attention_mask", ndim=4, dtype=torch.bool)
        parts.append(attention_mask)
    if not parts:
        return None
    mask = parts[0]
    for part in parts[1:]:
        mask = mask & part
    return mask
