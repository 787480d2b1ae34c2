"""Multi-head self-attention with grouped-query heads, qk-norm, rotary positions, masks and a KV cache."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnikit.layers.attention_backends import BACKENDS, scaled_dot_product
from omnikit.layers.kv_cache import KVCache, StaticKVCache
from omnikit.layers.norm import RMSNorm
from omnikit.layers.rotary import apply_rotary
from omnikit.streaming import StreamingModule
from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive, check_tensor

__all__ = ["Attention"]


class Attention(StreamingModule[KVCache | StaticKVCache]):
    """Self-attention ``(B, T, dim) -> (B, T, dim)``.

    Args:
        dim: model width.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention); defaults to ``num_heads``.
        head_dim: per-head width; defaults to ``dim // num_heads``.
        qk_norm: RMS-normalise queries and keys per head before rotary (Qwen3, OLMo2).
        qkv_bias: bias on the fused q/k/v projection.
        out_bias: bias on the output projection.
        causal: default causality of ``forward`` (overridable per call).
        sliding_window: each query sees at most this many most recent keys (itself included).
        chunk_size: chunked attention (Llama 4): each query sees only keys in its own block of
            ``chunk_size`` positions.
        backend: one of ``"sdpa"``, ``"flash"``, ``"flex"``, ``"eager"``, ``"auto"``.
        dropout: attention-probability dropout in training.

    Weights: ``qkv.weight`` stacks the q, k, v projections as ``(H + 2*H_kv) * head_dim`` rows.

    Inside ``with attn.streaming(B):`` keys and values are cached and every call continues the
    sequence (positions and causality offset by what was seen). ``streaming(B, max_len=N)``
    preallocates the cache instead (:class:`StaticKVCache`): every call then attends over all ``N``
    slots through a mask (SDPA or eager; not ``"flash"``), with the same shapes at every position.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        qkv_bias: bool = False,
        out_bias: bool = False,
        causal: bool = False,
        sliding_window: int | None = None,
        chunk_size: int | None = None,
        backend: str = "sdpa",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_heads, "num_heads")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        check_positive(num_kv_heads, "num_kv_heads")
        if head_dim is None:
            if dim % num_heads:
                raise OmnikitValueError(
                    f"`num_heads` ({num_heads}) must divide `dim` ({dim}) when head_dim is not given"
                )
            head_dim = dim // num_heads
        check_positive(head_dim, "head_dim")
        if num_heads % num_kv_heads:
            raise OmnikitValueError(
                f"`num_kv_heads` ({num_kv_heads}) must divide `num_heads` ({num_heads}) for grouped-query attention"
            )
        check_choice(backend, "backend", BACKENDS)
        if sliding_window is not None:
            check_positive(sliding_window, "sliding_window")
        if chunk_size is not None:
            check_positive(chunk_size, "chunk_size")
        self.chunk_size = chunk_size
        self.dim, self.num_heads, self.num_kv_heads, self.head_dim = dim, num_heads, num_kv_heads, head_dim
        self.causal, self.sliding_window, self.backend, self.dropout = causal, sliding_window, backend, dropout
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * head_dim, bias=qkv_bias)
        self.out = nn.Linear(num_heads * head_dim, dim, bias=out_bias)
        self.q_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        #: set by ``parallelize`` on a ``"cp"`` mesh (:class:`omnikit.distributed.cp.ContextParallel`)
        self.context_parallel: Any = None

    def init_streaming_state(self, batch_size: int) -> KVCache:
        return KVCache(batch_size)

    def init_static_state(self, batch_size: int, max_len: int) -> StaticKVCache:
        weight = self.qkv.weight
        return StaticKVCache.allocate(
            batch_size, self.num_kv_heads, max_len, self.head_dim, dtype=weight.dtype, device=weight.device
        )

    @property
    def cache_length(self) -> int:
        """Positions already cached by the open stream (0 when not streaming; a host sync for a static cache)."""
        state = self.streaming_state
        return 0 if state is None else state.length

    @property
    def cache_position(self) -> int | torch.Tensor:
        """Position of the next key: :attr:`cache_length`, or for a static cache its position tensor
        (0-dim; read without a host sync, so traced code stays shape-static)."""
        state = self.streaming_state
        return state.position if isinstance(state, StaticKVCache) else self.cache_length

    def forward(
        self,
        x: torch.Tensor,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, T, dim)``.
            rope: ``(cos, sin)`` each ``(B or 1, T, head_dim)``, from :class:`RotaryEmbedding`.
            key_padding_mask: ``(B, S)`` bool, False on padded keys (S = cached + T when streaming;
                with a static cache also ``max_len``).
            attention_mask: bool mask broadcastable to ``(B, H, T, S)``, True where attention is allowed.
            cu_seqlens: ``(N+1,)`` int, sequences packed along T of a batch-1 input; they never
                attend to one another.
            causal: override the module's default causality.

        Returns:
            ``(B, T, dim)``.
        """
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        batch, length, _ = x.shape
        causal = self.causal if causal is None else causal
        qkv = self.qkv(x)
        # a head-split projection (omnikit.distributed's tensor parallel) yields this rank's share of the heads
        share = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim // qkv.shape[-1]
        heads, kv_heads = self.num_heads // share, self.num_kv_heads // share
        q, k, v = qkv.view(batch, length, heads + 2 * kv_heads, self.head_dim).split([heads, kv_heads, kv_heads], dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            if cos.shape[-2] != length or cos.shape[-1] != self.head_dim:
                raise OmnikitValueError(
                    f"`rope` tables expected shape (B, {length}, {self.head_dim}) but got {tuple(cos.shape)}"
                )
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.context_parallel is not None:
            masks = (key_padding_mask, attention_mask, cu_seqlens)
            k, v, attention_mask, causal = self._gather_context(k, v, causal, *masks)
        q_offset: int | torch.Tensor = 0
        state = self.streaming_state
        if state is not None:
            if cu_seqlens is not None:
                raise OmnikitValueError("`cu_seqlens` (packed sequences) cannot be used while streaming")
            if isinstance(state, StaticKVCache):  # masks over the keys seen so far widen to every slot
                k, v, q_offset = state.append(k, v)
                key_padding_mask = state.widen_mask(key_padding_mask, True)
                attention_mask = state.widen_mask(attention_mask, False)
            else:
                q_offset = state.length
                k, v = state.append(k, v)
        if key_padding_mask is not None:
            check_tensor(key_padding_mask, "key_padding_mask", shape=(batch, k.shape[2]), dtype=torch.bool)
        out = scaled_dot_product(
            q, k, v,
            backend=self.backend,
            causal=causal,
            q_offset=q_offset,
            sliding_window=self.sliding_window,
            chunk_size=self.chunk_size,
            key_padding_mask=key_padding_mask,
            cu_seqlens=cu_seqlens,
            attention_mask=attention_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(out.transpose(1, 2).reshape(batch, length, heads * self.head_dim))

    def _gather_context(
        self, k: torch.Tensor, v: torch.Tensor, causal: bool, *masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Context parallel: every rank's keys/values and the global-position causal mask."""
        if any(m is not None for m in masks) or self.streaming_state is not None or self.sliding_window \
                or self.chunk_size:
            raise OmnikitValueError(
                "context parallel attention takes no padding/attention mask, packed sequences, stream, sliding "
                "window or attention chunks"
            )
        k, v, mask = self.context_parallel.gather(k, v, causal)
        return k, v, mask, False

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, causal={self.causal}, "
            f"window={self.sliding_window}, chunk={self.chunk_size}, backend={self.backend!r}"
        )
