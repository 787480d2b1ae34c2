"""A growable key/value cache: the streaming state of an attention layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omnikit.streaming import StreamingState

__all__ = ["KVCache"]


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
        new_len = self.length + k.shape[2]
        if self.keys is None or new_len > self.keys.shape[2]:
            capacity = max(new_len, 2 * (0 if self.keys is None else self.keys.shape[2]), 16)
            keys = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            values = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            if self.keys is not None:
                keys[:, :, : self.length] = self.keys[:, :, : self.length]
                values[:, :, : self.length] = self.values[:, :, : self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length : new_len] = k
        self.values[:, :, self.length : new_len] = v
        self.length = new_len
        return self.keys[:, :, :new_len], self.values[:, :, :new_len]
