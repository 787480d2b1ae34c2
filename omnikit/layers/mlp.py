"""Feed-forward blocks: SwiGLU and GELU MLPs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.linear import Linear
from omnikit.utils.checks import check_choice, check_positive
from omnikit.utils.parallel import COLWISE, ROWWISE, ParallelPlan

__all__ = ["GATE_ACTIVATIONS", "GeluMLP", "MLPKind", "SwiGLU", "build_mlp", "gate_activation"]

MLPKind = Literal["swiglu", "swiglu_fused", "gelu"]


#: Gate activations of the gated MLPs: ``"silu"`` (SwiGLU) or ``"gelu_tanh"`` (GeGLU with the tanh
#: approximation of GELU, Gemma's ``gelu_pytorch_tanh``).
GATE_ACTIVATIONS: tuple[str, ...] = ("silu", "gelu_tanh")


def gate_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """``silu(x)`` or ``gelu(x, approximate="tanh")``."""
    return F.silu(x) if activation == "silu" else F.gelu(x, approximate="tanh")


class SwiGLU(nn.Module):
    """``down(act(gate(x)) * up(x))``, ``act`` silu (SwiGLU) or ``activation="gelu_tanh"`` (GeGLU).
    Shapes: ``(..., dim) -> (..., dim)``.

    Gate and up stay two matmuls by default: fusing them into one saves little on the forward but
    makes the backward assemble a strided gradient, which measured slower on the CPU. ``fused=True``
    holds them as one ``gate_up`` linear (gate rows, then up rows), the layout of checkpoints that
    store them so (Moshi's ``fc1``).
    """

    def __init__(self, dim: int, hidden: int, *, bias: bool = False, fused: bool = False,
                 activation: str = "silu") -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(hidden, "hidden")
        check_choice(activation, "activation", GATE_ACTIVATIONS)
        self.hidden, self.activation = hidden, activation
        if fused:
            self.gate_up = Linear(dim, 2 * hidden, bias=bias)
        else:
            self.gate = Linear(dim, hidden, bias=bias)
            self.up = Linear(dim, hidden, bias=bias)
        self.down = Linear(hidden, dim, bias=bias)

    def parallel_plan(self) -> ParallelPlan:
        """Gate and up column-parallel, down row-parallel (no communication between them); a fused
        ``gate_up`` cannot be split column-wise and stays whole."""
        if hasattr(self, "gate_up"):
            return ParallelPlan(tp={})
        return ParallelPlan(tp={"gate": COLWISE, "up": COLWISE, "down": ROWWISE})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "gate_up"):
            gate, up = self.gate_up(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate(x), self.up(x)
        return self.down(gate_activation(gate, self.activation) * up)


class GeluMLP(nn.Module):
    """``fc2(gelu(fc1(x)))`` (Whisper / ViT style). Shapes: ``(..., dim) -> (..., dim)``."""

    def __init__(self, dim: int, hidden: int, *, bias: bool = True, approximate: str = "none") -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(hidden, "hidden")
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.fc2 = Linear(hidden, dim, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


def build_mlp(kind: MLPKind, dim: int, hidden: int, *, bias: bool = False) -> nn.Module:
    """``"swiglu"`` -> :class:`SwiGLU` (``"swiglu_fused"``: one ``gate_up`` linear), ``"gelu"`` -> :class:`GeluMLP`."""
    check_choice(kind, "mlp", ("swiglu", "swiglu_fused", "gelu"))
    if kind == "gelu":
        return GeluMLP(dim, hidden, bias=bias)
    return SwiGLU(dim, hidden, bias=bias, fused=kind == "swiglu_fused")
