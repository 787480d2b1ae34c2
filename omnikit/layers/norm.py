"""Normalisation layers computed in float32 or wider whatever the input dtype."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import check_choice

__all__ = ["GroupNorm", "LayerNorm", "NormKind", "RMSNorm", "build_norm"]

NormKind = Literal["rmsnorm", "layernorm"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, the input's own dtype for float32 and float64."""
    return torch.promote_types(x.dtype, torch.float32)


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``x / rms(x) * weight`` over the last dim, computed in fp32.

    Shapes: ``(..., dim) -> (..., dim)``, output in the input's dtype.
    """

    keep_fp32 = True

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = _compute_dtype(x)
        if x.dtype == wide == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return F.rms_norm(x.to(wide), self.weight.shape, self.weight.to(wide), self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class _Float32Norm(nn.Module):
    """Mixin: the torch norm it precedes runs in fp32 (parameters kept fp32), output in the input's dtype."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In the parameters' dtype (float32, or wider when the model was cast so), never narrower than float32."""
        compute = self.weight.dtype if self.weight is not None else _compute_dtype(x)
        if x.dtype == compute:
            return super().forward(x)
        return super().forward(x.to(compute)).to(x.dtype)


class LayerNorm(_Float32Norm, nn.LayerNorm):
    """``nn.LayerNorm`` computed in fp32 and returned in the input's dtype."""


class GroupNorm(_Float32Norm, nn.GroupNorm):
    """``nn.GroupNorm`` ``(B, C, T)`` computed in fp32 and returned in the input's dtype."""


def build_norm(kind: NormKind, dim: int, eps: float = 1e-6) -> nn.Module:
    """``"rmsnorm"`` -> :class:`RMSNorm`, ``"layernorm"`` -> :class:`LayerNorm`."""
    check_choice(kind, "norm", ("rmsnorm", "layernorm"))
    return RMSNorm(dim, eps) if kind == "rmsnorm" else LayerNorm(dim, eps=eps)
