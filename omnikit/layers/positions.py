"""Absolute position embeddings for media tokens: (t, h, w) for video, t for audio.

Rotary positions (TMRoPE) only enter attention scores; the embeddings here are added to the token
values themselves, so "where" and "when" survive into any fusion style (a permutation-invariant
resampler included):

- :func:`grid_sincos`: a 3-D sin-cos table, the width split into a time part and two equal
  spatial parts, each ``[sin(p * f_i), cos(p * f_i)]`` with geometric frequencies from 1 to
  ``1 / base`` (positions may be fractional, e.g. time in TMRoPE ids);
- :class:`GridPositionEmbedding`: adds it (``"sincos"``) or factorised learned tables
  ``e_t[t] + e_h[h] + e_w[w]`` (``"learned"``) to a ``(N, t, h, w, D)`` token grid;
- :class:`TimeEmbedding`: Flamingo's learned per-time-step embedding for a resampler's inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive, check_tensor

__all__ = ["POSITION_KINDS", "GridPositionEmbedding", "TimeEmbedding", "grid_sincos", "sincos"]

#: Kinds of :class:`GridPositionEmbedding`.
POSITION_KINDS = ("sincos", "learned")


def sincos(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``positions (...)`` (int or float) -> ``(..., dim)``: ``[sin(p * f_i), cos(p * f_i)]``,
    ``f_i = base^(-2i/dim)``."""
    if dim % 2:
        raise OmnikitValueError(f"`dim` expected even for sin-cos embeddings but got {dim}")
    freqs = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    angles = positions.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _split(dim: int) -> tuple[int, int, int]:
    """Channels for (t, h, w): two equal even spatial parts, time takes the rest (even)."""
    spatial = (dim // 3) // 2 * 2
    if dim % 2 or spatial == 0:
        raise OmnikitValueError(f"`dim` expected even and >= 6 for a 3-D sin-cos embedding but got {dim}")
    return dim - 2 * spatial, spatial, spatial


def grid_sincos(t: torch.Tensor, h: int, w: int, dim: int) -> torch.Tensor:
    """``t (T,)`` time positions and an ``h x w`` grid -> ``(T, h, w, dim)`` 3-D sin-cos embedding."""
    dt, dh, dw = _split(dim)
    device = t.device
    parts = (
        sincos(t, dt)[:, None, None, :].expand(-1, h, w, -1),
        sincos(torch.arange(h, device=device), dh)[None, :, None, :].expand(t.shape[0], -1, w, -1),
        sincos(torch.arange(w, device=device), dw)[None, None, :, :].expand(t.shape[0], h, -1, -1),
    )
    return torch.cat(parts, dim=-1)


class GridPositionEmbedding(nn.Module):
    """``x (N, t, h, w, D)`` -> ``x + pos(t, h, w)``.

    Args:
        dim: token width ``D``.
        kind: ``"sincos"`` (3-D sin-cos, no parameters) or ``"learned"`` (factorised tables, std 0.02).
        max_grid: largest ``(t, h, w)`` of the learned tables.
    """

    def __init__(self, dim: int, kind: str = "sincos", *, max_grid: tuple[int, int, int] = (64, 64, 64)) -> None:
        super().__init__()
        check_choice(kind, "kind", POSITION_KINDS)
        self.dim, self.kind, self.max_grid = dim, kind, tuple(max_grid)
        if kind == "sincos":
            _split(dim)
            self.tables = None
        else:
            for size, name in zip(self.max_grid, ("t", "h", "w")):
                check_positive(size, f"max_grid[{name}]")
            self.tables = nn.ParameterList(nn.Parameter(torch.randn(size, dim) * 0.02) for size in self.max_grid)

    def forward(self, x: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """``times (t,)``: positions of the time steps (default ``0..t-1``; fractional only for sin-cos)."""
        check_tensor(x, "x", shape=("N", "t", "h", "w", self.dim), floating=True)
        _, t, h, w, _ = x.shape
        if times is None:
            times = torch.arange(t, device=x.device)
        if self.tables is None:
            return x + grid_sincos(times.to(x.device), h, w, self.dim).to(x.dtype)
        if t > self.max_grid[0] or h > self.max_grid[1] or w > self.max_grid[2]:
            raise OmnikitValueError(f"token grid {(t, h, w)} exceeds the learned tables' `max_grid` {self.max_grid}")
        table_t, table_h, table_w = self.tables
        pos = table_t[times.long()][:, None, None] + table_h[:h][None, :, None] + table_w[:w][None, None, :]
        return x + pos.to(x.dtype)


class TimeEmbedding(nn.Module):
    """Flamingo's learned time embedding: ``tokens (B, N, D)``, ``times (B, N)`` or ``(N,)`` -> ``tokens + e[times]``.

    ``num_steps`` time steps of width ``dim`` (normal, std 0.02, as the resampler's latents).
    """

    def __init__(self, num_steps: int, dim: int) -> None:
        super().__init__()
        check_positive(num_steps, "num_steps")
        self.table = nn.Parameter(torch.randn(num_steps, dim) * 0.02)

    def forward(self, tokens: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        check_tensor(times, "times", floating=False)
        if times.shape not in (tokens.shape[1:2], tokens.shape[:2]):
            raise OmnikitValueError(
                f"`times` expected shape {tuple(tokens.shape[:2])} or ({tokens.shape[1]},) but got {tuple(times.shape)}"
            )
        if not torch.compiler.is_compiling() and times.numel():
            low, high = int(times.min()), int(times.max())
            steps = self.table.shape[0]
            if low < 0 or high >= steps:
                raise OmnikitValueError(f"`times` expected values in [0, {steps}) but got [{low}, {high}]")
        return tokens + self.table[times].to(tokens.dtype)
