"""Key/value caches, the streaming state of an attention layer: growable (:class:`KVCache`) or
preallocated with fixed shapes for compiled decoding (:class:`StaticKVCache`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.streaming import StreamingModule, StreamingState
from omnikit.utils.checks import OmnikitValueError, check_positive

__all__ = ["KVCache", "StaticKVCache", "rewind_static_caches"]


@dataclass
class KVCache(StreamingState):
    """Keys and values seen so far, ``(B, H_kv, capacity, D)``, the first ``length`` valid.

    Capacity doubles when full, so appending one token at a time costs amortised O(1) copies.
    With autograd recording (training through a stream) it concatenates instead.
    """

    batch_size: int
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    length: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``/``v`` ``(B, H_kv, T, D)``; return all keys/values so far ``(B, H_kv, length, D)``."""
        self.check_batch(k.shape[0], "x")
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # differentiable path: no in-place writes into tensors autograd may have saved
            self.keys = k if self.keys is None else torch.cat((self.keys[:, :, : self.length], k), dim=2)
            self.values = v if self.values is None else torch.cat((self.values[:, :, : self.length], v), dim=2)
            self.length = self.keys.shape[2]
            return self.keys, self.values
        steps = k.shape[2]
        new_len = self.length + steps
        if self.keys is None or new_len > self.keys.shape[2]:
            capacity = max(new_len, 2 * (0 if self.keys is None else self.keys.shape[2]), 16)
            keys = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            values = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            if self.keys is not None:
                keys.narrow(2, 0, self.length).copy_(self.keys.narrow(2, 0, self.length))
                values.narrow(2, 0, self.length).copy_(self.values.narrow(2, 0, self.length))
            self.keys, self.values = keys, values
        # narrow + copy_: the same writes as slice assignment, with fewer operator calls per decoding step
        self.keys.narrow(2, self.length, steps).copy_(k)
        self.values.narrow(2, self.length, steps).copy_(v)
        self.length = new_len
        return self.keys.narrow(2, 0, new_len), self.values.narrow(2, 0, new_len)


@dataclass
class StaticKVCache(StreamingState):
    """Preallocated keys and values ``(B, H_kv, max_len, D)`` and the write position, a 0-dim tensor.

    Every call writes its keys and values in place at ``position .. position + T - 1`` and advances
    ``position`` in place, so a decoding step sees the same shapes and the same tensors at every
    position: ``torch.compile`` traces it once, and the buffers are marked as static addresses, so
    a compiled step can run as a CUDA graph (``mode="reduce-overhead"``). Slots past the position
    hold zeros and are masked out. Inference only: writes into the buffers are not differentiable.
    """

    batch_size: int
    keys: torch.Tensor
    values: torch.Tensor
    position: torch.Tensor

    @classmethod
    def allocate(
        cls, batch_size: int, num_kv_heads: int, max_len: int, head_dim: int, *,
        dtype: torch.dtype, device: torch.device,
    ) -> StaticKVCache:
        """Zeroed buffers ``(batch_size, num_kv_heads, max_len, head_dim)`` and position 0."""
        check_positive(max_len, "max_len")
        keys, values = (
            torch.zeros(batch_size, num_kv_heads, max_len, head_dim, dtype=dtype, device=device) for _ in "kv"
        )
        position = torch.zeros((), dtype=torch.long, device=device)
        for buffer in (keys, values, position):
            torch._dynamo.mark_static_address(buffer)
        return cls(batch_size, keys, values, position)

    @property
    def max_len(self) -> int:
        """Positions the cache holds."""
        return self.keys.shape[2]

    @property
    def length(self) -> int:
        """Positions written so far (reads the position tensor: a host sync, for eager code)."""
        return int(self.position)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write ``k``/``v`` ``(B, H_kv, T, D)`` at the position; return the whole buffers
        ``(B, H_kv, max_len, D)`` and the position of the first written slot (a 0-dim tensor)."""
        self.check_batch(k.shape[0], "x")
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            raise OmnikitValueError("a static KV cache is for inference: run it under torch.no_grad()")
        steps = k.shape[2]
        if not torch.compiler.is_compiling() and self.position.device.type == "cpu":
            start = int(self.position)  # no device sync on the CPU; on a GPU the entry points check the budget
            if start + steps > self.max_len:
                raise OmnikitValueError(
                    f"the static KV cache holds max_len={self.max_len} positions but {start} are written and "
                    f"{steps} more came"
                )
        offset = self.position.clone()
        index = offset + torch.arange(steps, device=k.device)
        self.keys.index_copy_(2, index, k.to(self.keys.dtype))
        self.values.index_copy_(2, index, v.to(self.values.dtype))
        self.position.add_(steps)
        return self.keys, self.values, offset

    def widen_mask(self, mask: torch.Tensor | None, fill: bool) -> torch.Tensor | None:
        """A mask over the keys seen so far ``(..., S)`` padded with ``fill`` to ``(..., max_len)``
        (a mask already ``max_len`` wide is returned as it is)."""
        if mask is None or mask.shape[-1] == self.max_len:
            return mask
        if mask.shape[-1] > self.max_len:
            raise OmnikitValueError(
                f"a mask over the keys expected at most max_len={self.max_len} columns but got {mask.shape[-1]}"
            )
        return F.pad(mask, (0, self.max_len - mask.shape[-1]), value=fill)


def rewind_static_caches(module: nn.Module) -> None:
    """Set every open static KV cache inside ``module`` back to position 0 (in place: the buffers stay
    where they are, so compiled steps and CUDA graphs keep using them); older keys become empty slots."""
    for m in module.modules():
        if isinstance(m, StreamingModule) and isinstance(m.streaming_state, StaticKVCache):
            m.streaming_state.position.zero_()
