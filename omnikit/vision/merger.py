"""Qwen2-VL style patch merger: each ``m x m`` block of neighbouring patch tokens becomes one token."""

from __future__ import annotations

import torch
from torch import nn

from omnikit.layers.norm import build_norm
from omnikit.utils.checks import OmnikitValueError, check_positive, check_tensor

__all__ = ["PatchMerger", "group_patches"]


def group_patches(x: torch.Tensor, merge_size: int) -> torch.Tensor:
    """``(N, h, w, D) -> (N, h/m * w/m, m*m*D)``: each ``m x m`` block concatenated, row-major."""
    n, h, w, d = x.shape
    if h % merge_size or w % merge_size:
        raise OmnikitValueError(
            f"the patch grid {h}x{w} must be divisible by merge_size={merge_size}; "
            f"use frames whose sides are multiples of {merge_size} patches"
        )
    x = x.view(n, h // merge_size, merge_size, w // merge_size, merge_size, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, (h // merge_size) * (w // merge_size), merge_size**2 * d)


class PatchMerger(nn.Module):
    """Normalise each patch, concatenate ``merge_size x merge_size`` neighbours, then an MLP.

    ``(N, h, w, dim) -> (N, h/m * w/m, out_dim)``, as the merger of Qwen2-VL (``norm="layernorm"``)
    and Qwen2.5-VL / Qwen2.5-Omni (``norm="rmsnorm"``): ``ln_q`` then
    ``Linear(m*m*dim, m*m*dim) -> GELU -> Linear(m*m*dim, out_dim)``.
    """

    def __init__(
        self, dim: int, out_dim: int, merge_size: int = 2, *, eps: float = 1e-6, norm: str = "layernorm"
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(out_dim, "out_dim")
        check_positive(merge_size, "merge_size")
        self.dim, self.out_dim, self.merge_size = dim, out_dim, merge_size
        hidden = dim * merge_size**2
        self.norm = build_norm(norm, dim, eps)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", shape=("N", "h", "w", self.dim), floating=True)
        return self.mlp(group_patches(self.norm(x), self.merge_size))

    def merge_groups(self, x: torch.Tensor) -> torch.Tensor:
        """``(G * m*m, dim) -> (G, out_dim)``: rows already listed group by group (each ``m x m`` block
        contiguous, the order of :func:`~omnikit.vision.grid_positions` with ``merge_size``)."""
        check_tensor(x, "x", shape=("N", self.dim), floating=True)
        if x.shape[0] % self.merge_size**2:
            raise OmnikitValueError(
                f"`x` expected a multiple of {self.merge_size**2} rows (whole merge groups) but got {x.shape[0]}"
            )
        return self.mlp(self.norm(x).reshape(-1, self.merge_size**2 * self.dim))
