"""Multi-head cross-attention: queries from one sequence, keys and values from another."""

from __future__ import annotations

import torch
from torch import nn

from omnikit.layers.attention_backends import BACKENDS, scaled_dot_product
from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive, check_tensor

__all__ = ["CrossAttention"]


class CrossAttention(nn.Module):
    """``(B, L, dim), context (B, S, context_dim) -> (B, L, dim)``.

    Args:
        dim: query (and output) width.
        num_heads: attention heads.
        context_dim: key/value source width (default ``dim``).
        head_dim: per-head width (default ``dim // num_heads``).
        backend: attention kernel (see :func:`omnikit.layers.scaled_dot_product`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        head_dim: int | None = None,
        bias: bool = False,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_heads, "num_heads")
        check_choice(backend, "backend", BACKENDS)
        if head_dim is None:
            if dim % num_heads:
                raise OmnikitValueError(f"`num_heads` ({num_heads}) must divide `dim` ({dim}) without a head_dim")
            head_dim = dim // num_heads
        self.dim, self.context_dim = dim, context_dim or dim
        self.num_heads, self.head_dim, self.backend = num_heads, head_dim, backend
        self.q = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.kv = nn.Linear(self.context_dim, 2 * num_heads * head_dim, bias=bias)
        self.out = nn.Linear(num_heads * head_dim, dim, bias=bias)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args:
        x: ``(B, L, dim)`` queries.
        context: ``(B, S, context_dim)`` keys/values.
        key_padding_mask: ``(B, S)`` bool, False on padded context positions.
        """
        check_tensor(x, "x", shape=("B", "L", self.dim), floating=True)
        check_tensor(context, "context", shape=(x.shape[0], "S", self.context_dim), floating=True)
        if key_padding_mask is not None:
            check_tensor(key_padding_mask, "key_padding_mask", shape=context.shape[:2], dtype=torch.bool)
        batch, length, _ = x.shape
        q = self.q(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(context).view(batch, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = scaled_dot_product(q, k, v, backend=self.backend, key_padding_mask=key_padding_mask)
        return self.out(out.transpose(1, 2).reshape(batch, length, -1))
