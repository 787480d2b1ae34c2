"""A Perceiver-style resampler: a fixed number of learned latents cross-attend to a variable number of tokens.

``(N, M, dim)`` media tokens (with an optional ``(N, M)`` validity mask) -> ``(N, num_latents,
dim)``, so a cross-attention decoder sees the same number of tokens per media item whatever
its length. Each layer: ``latents += attn(norm(latents), norm(cat(media, latents)))`` then
``latents += mlp(norm(latents))`` (Flamingo's resampler, latents also attend to themselves).
"""

from __future__ import annotations

import torch
from torch import nn

from omnikit.layers.attention_backends import scaled_dot_product
from omnikit.layers.mlp import GeluMLP
from omnikit.layers.norm import LayerNorm
from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["LatentResampler"]


class _ResamplerLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise OmnikitValueError(f"`num_heads` ({num_heads}) must divide `dim` ({dim})")
        self.num_heads = num_heads
        self.norm_media, self.norm_latents, self.norm_mlp = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.mlp = GeluMLP(dim, 4 * dim, bias=False)

    def forward(self, latents: torch.Tensor, media: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, r, d = latents.shape
        heads = lambda t: t.view(n, t.shape[1], self.num_heads, -1).transpose(1, 2)
        normed = self.norm_latents(latents)
        context = torch.cat((self.norm_media(media), normed), dim=1)
        k, v = self.kv(context).chunk(2, dim=-1)
        if mask is not None:
            mask = torch.cat((mask, mask.new_ones(n, r)), dim=1)
        out = scaled_dot_product(heads(self.q(normed)), heads(k), heads(v), key_padding_mask=mask)
        latents = latents + self.out(out.transpose(1, 2).reshape(n, r, d))
        return latents + self.mlp(self.norm_mlp(latents))


class LatentResampler(nn.Module):
    """``media (N, M, dim)``, ``mask (N, M)`` bool (True: valid) -> ``(N, num_latents, dim)``."""

    def __init__(self, dim: int, *, num_latents: int = 8, depth: int = 1, num_heads: int = 4) -> None:
        super().__init__()
        check_positive(num_latents, "num_latents")
        check_positive(depth, "depth")
        self.dim, self.num_latents = dim, num_latents
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.layers = nn.ModuleList(_ResamplerLayer(dim, num_heads) for _ in range(depth))
        self.norm = LayerNorm(dim)

    def forward(self, media: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor(media, "media", shape=("N", "M", self.dim), floating=True)
        if mask is not None:
            check_tensor(mask, "mask", shape=tuple(media.shape[:2]), dtype=torch.bool)
        latents = self.latents.to(media.dtype).expand(media.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(latents, media, mask)
        return self.norm(latents)
