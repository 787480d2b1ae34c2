"""Multi-head self-attention with grouped-query heads, qk-norm, rotary positions, masks and a KV cache."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.attention_backends import BACKENDS, scaled_dot_product
from omnikit.layers.attention_blockwise import block_attention_serves, causal_block_attention
from omnikit.layers.kv_cache import KVCache, StaticKVCache
from omnikit.layers.linear import Linear
from omnikit.layers.norm import RMSNorm, rms_norm_rows
from omnikit.layers.rotary import apply_rotary
from omnikit.streaming import StreamingModule
from omnikit.utils.checks import OmnikitValueError, check_choice, check_int_in_range, check_positive, check_tensor
from omnikit.utils.parallel import HEAD_NORM, ROWWISE, ParallelPlan, head_qkv

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
        scale: softmax scale (default ``1 / sqrt(head_dim)``; Gemma 4 uses 1 after its qk-norm).
        k_eq_v: values are the key projection (before the key norm and rotary): no v rows (Gemma 4).
        v_norm: RMS-normalise values per head without a weight (Gemma 4).
        kv_store: with ``shared_kv`` given to ``forward``, also leave this layer's keys and values
            (the whole cache when streaming) in ``shared_kv[kv_store]`` for later layers.
        kv_reuse: the layer has no key/value projections and attends over ``shared_kv[kv_reuse]``,
            what an earlier layer stored in the same forward (KV sharing, Gemma 3n / 4).
        rotary_parts: the head is rotated in this many independent chunks (2: Gemma 4's 2-D
            vision rotary; see :func:`apply_rotary`).
        output_gate: scale each head's output by ``sigmoid(gate)`` before the output projection,
            the gate projected with the query (Qwen3-Next, Qwen3.5).
        zero_centered_qk_norm: the q/k norms scale by ``1 + weight`` (see :class:`RMSNorm`).
        rope_heads: rotary positions on the first ``rope_heads`` heads only (default: all).
        rope_interleaved: rotary pairs are adjacent entries of a head (see :func:`apply_rotary`).

    Weights: ``qkv.weight`` stacks the q, k, v projections as ``(H + 2*H_kv) * head_dim`` rows
    (``H + H_kv`` with ``k_eq_v``, ``H`` with ``kv_reuse``); with ``output_gate`` the query rows are
    ``H * 2 * head_dim``, each head's query then its gate.

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
        scale: float | None = None,
        k_eq_v: bool = False,
        v_norm: bool = False,
        kv_store: str | None = None,
        kv_reuse: str | None = None,
        rotary_parts: int = 1,
        output_gate: bool = False,
        zero_centered_qk_norm: bool = False,
        rope_heads: int | None = None,
        rope_interleaved: bool = False,
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
        if rope_heads is not None:
            check_int_in_range(rope_heads, "rope_heads", 1, num_heads + 1)
        self.chunk_size = chunk_size
        self.rope_heads, self.rope_interleaved = rope_heads, rope_interleaved
        #: how ``apply_rotary`` lays the rotation over the heads (all heads, rotate-half, by default)
        self._rope_layout = {"heads": rope_heads, "interleaved": rope_interleaved}
        self.dim, self.num_heads, self.num_kv_heads, self.head_dim = dim, num_heads, num_kv_heads, head_dim
        self.causal, self.sliding_window, self.backend, self.dropout = causal, sliding_window, backend, dropout
        self.scale, self.kv_store, self.kv_reuse, self.rotary_parts = scale, kv_store, kv_reuse, rotary_parts
        #: key/value projections in ``qkv``: 2 (k, v), 1 (k = v) or 0 (reused from an earlier layer)
        self.kv_projections = 0 if kv_reuse is not None else 1 if k_eq_v else 2
        self.output_gate = output_gate
        self.query_width = 2 * head_dim if output_gate else head_dim  # per head: query (and gate)
        self.qkv = Linear(dim, num_heads * self.query_width + self.kv_projections * num_kv_heads * head_dim,
                             bias=qkv_bias)
        self.out = Linear(num_heads * head_dim, dim, bias=out_bias)
        self.q_norm = RMSNorm(head_dim, norm_eps, zero_centered=zero_centered_qk_norm) if qk_norm else None
        self.k_norm = (RMSNorm(head_dim, norm_eps, zero_centered=zero_centered_qk_norm)
                       if qk_norm and self.kv_projections else None)
        self.v_norm = RMSNorm(head_dim, norm_eps, scale=False) if v_norm and self.kv_projections else None

        #: set by ``parallelize`` on a ``"cp"`` mesh (:class:`omnikit.distributed.cp.ContextParallel`)
        self.context_parallel: Any = None

    def parallel_plan(self) -> ParallelPlan:
        """Split by heads: the fused q/k/v column-parallel with its rows reordered so that each rank holds
        its query heads and their key/value groups, the output row-parallel, q/k norms replicated."""
        if self.kv_projections != 2 or self.kv_store is not None:
            return ParallelPlan()  # K = V and KV-shared layers (Gemma 4) stay whole: a shared cache holds every head
        norms = {name: HEAD_NORM for name in ("q_norm", "k_norm") if getattr(self, name) is not None}
        qkv = head_qkv(self.num_heads, self.num_kv_heads, self.head_dim, self.query_width)
        return ParallelPlan(tp={"qkv": qkv, "out": ROWWISE, **norms})

    def init_streaming_state(self, batch_size: int) -> KVCache:
        return KVCache(batch_size)

    def init_static_state(self, batch_size: int, max_len: int) -> KVCache | StaticKVCache:
        if self.kv_reuse is not None:  # attends over another layer's cache: nothing of its own to hold
            return KVCache(batch_size)
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
        shared_kv: dict[str, tuple[torch.Tensor, torch.Tensor, int | torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(B, T, dim)``.
            rope: ``(cos, sin)`` each ``(B or 1, T, R)``, from :class:`RotaryEmbedding`; ``R <= head_dim``
                (partial rotary: the first ``R`` dims of each head are rotated).
            key_padding_mask: ``(B, S)`` bool, False on padded keys (S = cached + T when streaming;
                with a static cache also ``max_len``).
            attention_mask: bool mask broadcastable to ``(B, H, T, S)``, True where attention is allowed.
            cu_seqlens: ``(N+1,)`` int, sequences packed along T of a batch-1 input; they never
                attend to one another.
            causal: override the module's default causality.
            shared_kv: the keys, values and first query position that layers with ``kv_store`` leave
                for layers with ``kv_reuse``, one dict per forward of the stack (required by those).

        Returns:
            ``(B, T, dim)``.
        """
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        batch, length, _ = x.shape
        causal = self.causal if causal is None else causal
        if (self.kv_store or self.kv_reuse) and shared_kv is None:
            raise OmnikitValueError("`shared_kv` expected a dict for a layer that shares keys/values but got None")
        qkv = self.qkv(x)
        # a head-split projection (omnikit.distributed's tensor parallel) yields this rank's share of the heads
        per_query = self.query_width // self.head_dim  # head_dim-wide rows per query head: query (and gate)
        share = (self.num_heads * per_query + self.kv_projections * self.num_kv_heads) * self.head_dim // qkv.shape[-1]
        heads, kv_heads = self.num_heads // share, self.num_kv_heads // share
        rows = qkv.view(batch, length, heads * per_query + self.kv_projections * kv_heads, self.head_dim)
        if rope is not None:
            cos = rope[0]
            if cos.shape[-2] != length or cos.shape[-1] > self.head_dim or cos.shape[-1] % 2:
                raise OmnikitValueError(
                    f"`rope` tables expected shape (B, {length}, R) with an even R <= {self.head_dim} "
                    f"but got {tuple(cos.shape)}"
                )
        q, gate, k, v = self._heads(rows, heads, kv_heads, rope)
        if self.kv_reuse is not None:
            k, v, q_offset = shared_kv[self.kv_reuse]
            key_padding_mask, attention_mask = _widen(key_padding_mask, k.shape[2], True), _widen(
                attention_mask, k.shape[2], False)
        else:
            k, v, q_offset, key_padding_mask, attention_mask = self._own_keys(
                k, v, key_padding_mask, attention_mask, cu_seqlens)
        pieces = None  # context parallel, mask-free: this rank's query pieces (first position, length)
        if self.context_parallel is not None:
            masks = (key_padding_mask, attention_mask, cu_seqlens)
            k, v, attention_mask, causal, pieces = self._gather_context(q, k, v, causal, *masks)
        if self.kv_store is not None:
            shared_kv[self.kv_store] = (k, v, q_offset)
        if key_padding_mask is not None:
            check_tensor(key_padding_mask, "key_padding_mask", shape=(batch, k.shape[2]), dtype=torch.bool)
        if pieces is not None:
            out = causal_block_attention(q, k, v, pieces, scale=self.scale)
        else:
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
                scale=self.scale,
            )
        out = out.transpose(1, 2).reshape(batch, length, heads * self.head_dim)
        return self.out(out if gate is None else out * gate.sigmoid())

    def _heads(
        self, rows: torch.Tensor, heads: int, kv_heads: int, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The fused projection's rows ``(B, T, rows, D)`` -> queries ``(B, H, T, D)`` (normed, rotated), the
        output gate ``(B, T, H * D)`` (or None) and this layer's keys and values ``(B, H_kv, T, D)`` (normed,
        keys rotated; None with ``kv_reuse``). Queries and keys that lie side by side in the rows (no
        output gate, every head rotated, norms without hooks such as tensor parallel's) are normed and
        rotated in one pass each, the same operations as one by one: fewer small operator calls per
        decoding step."""
        batch, length = rows.shape[:2]
        sizes = [heads * self.query_width // self.head_dim] + [kv_heads] * self.kv_projections
        q, *kv = rows.split_with_sizes(sizes, dim=2)
        gate = None
        if self.output_gate:  # each head's query rows, then its gate rows
            q, gate = q[:, :, 0::2], q[:, :, 1::2].reshape(batch, length, heads * self.head_dim)
        if not kv:
            return self._rotated(_normed(q, self.q_norm).transpose(1, 2), rope), gate, None, None
        v = _normed(kv[-1], self.v_norm).transpose(1, 2)  # with k_eq_v the key rows before norm and rotary
        if gate is None and self.rope_heads is None and _hookless(self.q_norm, self.k_norm):
            qk = rows[:, :, : heads + kv_heads]
            if self.q_norm is not None:
                qk = rms_norm_rows(qk, (self.q_norm, self.k_norm), (heads, kv_heads))
            qk = self._rotated(qk.transpose(1, 2), rope)
            return qk[:, :heads], gate, qk[:, heads:], v
        q = self._rotated(_normed(q, self.q_norm).transpose(1, 2), rope)
        return q, gate, self._rotated(_normed(kv[0], self.k_norm).transpose(1, 2), rope), v

    def _rotated(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """``x (B, H, T, D)`` rotated by ``rope`` in this layer's layout (unchanged without ``rope``)."""
        return x if rope is None else apply_rotary(x, *rope, self.rotary_parts, **self._rope_layout)

    def _own_keys(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """This layer's keys and values ``(B, H_kv, T, D)`` appended to the cache when streaming: all
        keys/values ``(B, H_kv, S, D)``, the first query's position and the masks widened over a static
        cache's slots."""
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
        return k, v, q_offset, key_padding_mask, attention_mask

    def _gather_context(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, *masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool, list[tuple[int, int]] | None]:
        """Context parallel: every rank's keys/values and either this rank's query pieces in global positions
        (causal on the CPU: mask-free attention) or the global-position causal mask."""
        if any(m is not None for m in masks) or self.streaming_state is not None or self.sliding_window \
                or self.chunk_size:
            raise OmnikitValueError(
                "context parallel attention takes no padding/attention mask, packed sequences, stream, sliding "
                "window or attention chunks"
            )
        if causal and block_attention_serves(q, self.dropout if self.training else 0.0):
            keys, values, pieces = self.context_parallel.gather_in_order(k, v)
            return keys, values, None, False, pieces
        k, v, mask = self.context_parallel.gather(k, v, causal)
        return k, v, mask, False, None

    def extra_repr(self) -> str:
        sharing = "".join(f", {n}={getattr(self, n)!r}" for n in ("kv_store", "kv_reuse") if getattr(self, n))
        return (
            f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, causal={self.causal}, "
            f"window={self.sliding_window}, chunk={self.chunk_size}, backend={self.backend!r}{sharing}"
        )


def _normed(x: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
    return x if norm is None else norm(x)


def _hookless(*modules: nn.Module | None) -> bool:
    """No forward hooks on any of ``modules`` (calling their functions directly skips nothing)."""
    return not any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in modules)


def _widen(mask: torch.Tensor | None, width: int, fill: bool) -> torch.Tensor | None:
    """A mask over keys ``(..., S)`` padded with ``fill`` to ``width`` columns (a static cache's slots)."""
    if mask is None or mask.shape[-1] >= width:
        return mask
    return F.pad(mask, (0, width - mask.shape[-1]), value=fill)
