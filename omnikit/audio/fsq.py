"""Finite scalar quantization (FSQ): no codebook to learn, no auxiliary loss.

Each of ``len(levels)`` channels is squashed by a shifted ``tanh`` into ``levels[i]`` integer
values and rounded with a straight-through gradient; the code of a frame is the mixed-radix
number of its channel values, so ``codebook_size = prod(levels)``. With ``dim`` different from
``len(levels)``, linear maps go in and out.

``FSQ(levels=(8, 5, 5, 5), dim=256)(x (B, T, 256)) -> QuantizerOutput`` with codes ``(B, 1, T)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from omnikit.audio.quantize import QuantizerOutput
from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["FSQ"]


class FSQ(nn.Module):
    """Finite scalar quantizer over ``levels`` (each >= 2)."""

    def __init__(self, levels: Sequence[int], dim: int | None = None, *, eps: float = 1e-3) -> None:
        super().__init__()
        levels = tuple(levels)
        if not levels or any(not isinstance(v, int) or v < 2 for v in levels):
            raise OmnikitValueError(f"`levels` expected a non-empty sequence of ints >= 2 but got {levels}")
        self.levels, self.dim, self.eps = levels, dim or len(levels), eps
        self.codebook_size = math.prod(levels)
        self.num_quantizers = 1
        width = len(levels)
        self.project_in = nn.Linear(self.dim, width) if self.dim != width else nn.Identity()
        self.project_out = nn.Linear(width, self.dim) if self.dim != width else nn.Identity()
        radix = [math.prod(levels[:i]) for i in range(width)]
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.long), persistent=False)
        self.register_buffer("_radix", torch.tensor(radix, dtype=torch.long), persistent=False)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash to ``[-(L-1)/2, (L-1)/2]`` shifted so that rounding yields exactly L values."""
        levels = self._levels.to(z.dtype)
        half = (levels - 1) * (1 - self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        return torch.tanh(z + torch.atanh(offset / half)) * half - offset

    def _scaled_to_codes(self, q: torch.Tensor) -> torch.Tensor:
        digits = (q * (self._levels // 2) + self._levels // 2).round().long()
        return (digits * self._radix).sum(-1)

    def _codes_to_scaled(self, codes: torch.Tensor) -> torch.Tensor:
        digits = (codes[..., None] // self._radix) % self._levels
        return (digits - self._levels // 2).float() / (self._levels // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """``x (B, T, dim)`` -> quantized ``(B, T, dim)``, codes ``(B, 1, T)``, zero loss (``mask`` unused)."""
        check_tensor(x, "x", shape=("B", "T", self.dim), floating=True)
        bounded = self._bound(self.project_in(x))
        rounded = bounded + (bounded.round() - bounded).detach()
        q = rounded / (self._levels // 2).to(x.dtype)
        zero = x.new_zeros(())
        return QuantizerOutput(self.project_out(q), self._scaled_to_codes(q.detach())[:, None], zero, zero, zero)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, T, dim) -> codes (B, 1, T)``."""
        return self.forward(x).codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, 1, T) -> (B, T, dim)``."""
        check_tensor(codes, "codes", shape=("B", 1, "T"), floating=False)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise OmnikitValueError(f"`codes` expected values in [0, {self.codebook_size})")
        return self.project_out(self._codes_to_scaled(codes[:, 0]).to(self._dtype()))

    def _dtype(self) -> torch.dtype:
        weight = getattr(self.project_out, "weight", None)
        return torch.float32 if weight is None else weight.dtype
