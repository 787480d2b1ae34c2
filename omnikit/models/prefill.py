"""Chunked prefill: feed a long prompt to an open stream ``chunk`` positions at a time.

Inside ``with model.streaming(B):`` every attention layer appends to its KV cache and every linear
attention layer (:class:`~omnikit.layers.GatedDeltaNet`) carries its recurrent and convolution
state, so running the prompt in consecutive chunks gives the same outputs as one pass. Activations
(attention scores, MLP hiddens, logits) then scale with the chunk, not with the prompt; what grows
with the prompt is only the cache itself (on the CPU each chunk attends over the cache with no
``chunk x context`` mask: :mod:`omnikit.layers.attention_blockwise`)::

    with lm.streaming(1):
        last_logits = prefill(lm, input_ids, chunk=4096)     # (B, vocab) at the last position

``lm.generate(input_ids, prefill_chunk=4096)`` does the same before decoding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.streaming import is_streaming
from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["chunk_spans", "prefill"]


def chunk_spans(length: int, chunk: int) -> list[slice]:
    """Consecutive slices of at most ``chunk`` positions covering ``0 .. length - 1``."""
    check_positive(chunk, "chunk")
    return [slice(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def prefill(
    module: nn.Module,
    inputs: torch.Tensor,
    *,
    chunk: int,
    positions: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Run ``inputs (B, T, ...)`` through the open stream of ``module`` in chunks of ``chunk``
    positions; return the output at the last position ``(B, ...)``.

    Args:
        module: a streaming model (:class:`~omnikit.models.CausalLM`, :class:`~omnikit.layers.HybridDecoder`,
            a :class:`~omnikit.layers.Decoder` ...) inside ``with module.streaming(B):``.
        inputs: ``(B, T)`` token ids or ``(B, T, dim)`` embeddings; time is dimension 1.
        chunk: positions per call (the last chunk may be shorter).
        positions: ``(B, T)`` / ``(T,)`` / ``(3, B, T)`` ids, sliced along the last dimension per chunk.
        key_padding_mask: ``(B, T)`` bool over the prompt; each chunk gets the columns seen so far.
        kwargs: more keyword arguments passed unchanged to every call.
    """
    if not is_streaming(module):
        raise OmnikitValueError(
            f"`module` ({type(module).__name__}) expected an open stream (`with module.streaming(B):`) "
            "so the chunks share a cache"
        )
    check_tensor(inputs, "inputs", ndim=(2, 3))
    length = inputs.shape[1]
    if length == 0:
        raise OmnikitValueError(f"`inputs` expected at least one position but got shape {tuple(inputs.shape)}")
    if positions is not None and positions.shape[-1] != length:
        raise OmnikitValueError(
            f"`positions` expected {length} positions (last dim) but got shape {tuple(positions.shape)}"
        )
    if key_padding_mask is not None:
        check_tensor(key_padding_mask, "key_padding_mask", shape=(inputs.shape[0], length), dtype=torch.bool)
    out = inputs
    for span in chunk_spans(length, chunk):
        call = dict(kwargs)
        if positions is not None:
            call["positions"] = positions[..., span]
        if key_padding_mask is not None:
            call["key_padding_mask"] = key_padding_mask[:, : span.stop]
        out = module(inputs[:, span], **call)
    return out[:, -1]
