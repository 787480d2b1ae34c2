"""Normalisation layers computed in float32 whatever the input dtype."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import check_choice

__all__ = ["LayerNorm", "NormKind", "RMSNorm", "build_norm"]

NormKind = Literal["rmsnorm", "layernorm"]


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``x / rms(x) * weight`` over the last dim, computed in fp32.

    ``scale=False``: no weight, ``x / rms(x)`` only (Gemma 4's value and router norms).

    Shapes: ``(..., dim) -> (..., dim)``, output in the input's dtype.
    """

    keep_fp32 = True

    def __init__(self, dim: int, eps: float = 1e-6, *, scale: bool = True) -> None:
        super().__init__()
        self.eps, self.dim = eps, dim
        self.weight = nn.Parameter(torch.ones(dim)) if scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if x.dtype == torch.float32:
            return F.rms_norm(x, (self.dim,), weight, self.eps)
        return F.rms_norm(x.float(), (self.dim,), None if weight is None else weight.float(), self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}{'' if self.weight is not None else ', scale=False'}"


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in fp32 and returned in the input's dtype."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return super().forward(x)
        return super().forward(x.float()).to(x.dtype)


def build_norm(kind: NormKind, dim: int, eps: float = 1e-6) -> nn.Module:
    """``"rmsnorm"`` -> :class:`RMSNorm`, ``"layernorm"`` -> :class:`LayerNorm`."""
    check_choice(kind, "norm", ("rmsnorm", "layernorm"))
    return RMSNorm(dim, eps) if kind == "rmsnorm" else LayerNorm(dim, eps=eps)
