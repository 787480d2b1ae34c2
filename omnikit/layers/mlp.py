"""Feed-forward blocks: SwiGLU (gate and up projections fused into one matmul) and GELU."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import check_choice, check_positive

__all__ = ["GeluMLP", "MLPKind", "SwiGLU", "build_mlp"]

MLPKind = Literal["swiglu", "gelu"]


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with gate and up stored as one ``(2*hidden, dim)`` weight.

    Shapes: ``(..., dim) -> (..., dim)``. ``gate_up.weight[:hidden]`` is the gate projection,
    ``gate_up.weight[hidden:]`` the up projection.
    """

    def __init__(self, dim: int, hidden: int, *, bias: bool = False) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(hidden, "hidden")
        self.hidden = hidden
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class GeluMLP(nn.Module):
    """``fc2(gelu(fc1(x)))`` (Whisper / ViT style). Shapes: ``(..., dim) -> (..., dim)``."""

    def __init__(self, dim: int, hidden: int, *, bias: bool = True, approximate: str = "none") -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(hidden, "hidden")
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


def build_mlp(kind: MLPKind, dim: int, hidden: int, *, bias: bool = False) -> nn.Module:
    """``"swiglu"`` -> :class:`SwiGLU`, ``"gelu"`` -> :class:`GeluMLP`."""
    check_choice(kind, "mlp", ("swiglu", "gelu"))
    return SwiGLU(dim, hidden, bias=bias) if kind == "swiglu" else GeluMLP(dim, hidden, bias=bias)
