"""Feed-forward blocks: SwiGLU and GELU MLPs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import check_choice, check_positive
from omnikit.utils.parallel import COLWISE, ROWWISE, ParallelPlan

__all__ = ["GeluMLP", "MLPKind", "SwiGLU", "build_mlp"]

MLPKind = Literal["swiglu", "gelu"]


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``. Shapes: ``(..., dim) -> (..., dim)``.

    Gate and up stay two matmuls: fusing them into one saves little on the forward but makes
    the backward assemble a strided gradient, which measured slower on the CPU.
    """

    def __init__(self, dim: int, hidden: int, *, bias: bool = False) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(hidden, "hidden")
        self.hidden = hidden
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def parallel_plan(self) -> ParallelPlan:
        """Gate and up column-parallel, down row-parallel (no communication between them)."""
        return ParallelPlan(tp={"gate": COLWISE, "up": COLWISE, "down": ROWWISE})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


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
