"""Expert GEMMs over expert-sorted rows, and the fused SwiGLU-experts autograd function.

Rows reach the experts in one of two layouts (:class:`RowLayout`):

- **ragged**: rows sorted by expert, expert ``e`` owning rows ``offsets[e-1]:offsets[e]``; each GEMM
  is one ``torch._grouped_mm`` call (the fast path on CUDA);
- **padded**: every expert owns exactly ``capacity`` rows (unused rows read token 0 with weight 0)
  and each GEMM is one ``torch.bmm``: the fallback where the grouped kernel cannot serve (CUDA
  float32, unaligned widths). Per-expert GEMM speed measured equal to the ragged form on the CPU,
  so the padding rows are pure overhead.

:class:`GroupedSwiGLU` runs gather -> gate/up GEMM -> SiLU*up -> routing weight -> down GEMM ->
per-token sum as one autograd node whose backward is batched the same way (four expert GEMMs,
one gather, one per-token sum) and keeps only the gate/up activations for backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["GroupedSwiGLU", "RowLayout", "TokenBags", "grouped_mm_native", "grouped_swiglu"]

_NATIVE = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def _aligned(t: torch.Tensor) -> bool:
    """Every non-unit stride and the data pointer on a 16-byte boundary (the kernels' requirement)."""
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and all(s == 1 or (s * size) % 16 == 0 for s in t.stride())


def grouped_mm_native(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether torch's fused grouped GEMM kernel serves these operands.

    It needs 16-byte aligned strides, and covers float32 and bfloat16 on the CPU and bfloat16 on
    CUDA devices of compute capability >= 8.0; under ``torch.compile`` only bfloat16.
    """
    if _NATIVE is None or a.dtype != b.dtype:
        return False
    if torch.compiler.is_compiling():
        return a.dtype == torch.bfloat16 and a.device.type == "cuda"
    if not (_aligned(a) and _aligned(b)):
        return False
    if a.device.type == "cpu":
        return a.dtype in (torch.float32, torch.bfloat16)
    if a.device.type == "cuda":
        return a.dtype == torch.bfloat16 and torch.cuda.get_device_capability(a.device) >= (8, 0)
    return False


@dataclass(frozen=True)
class RowLayout:
    """How ``R`` expert rows are arranged: ragged (``offsets``) or padded (``capacity`` per expert)."""

    num_experts: int
    offsets: torch.Tensor | None = None
    capacity: int | None = None

    def mm(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``rows (R, K)`` times their expert's ``weight[e] (K, N)`` -> ``(R, N)``; ``weight`` is ``(E, K, N)``."""
        if self.capacity is None:
            return _NATIVE(rows, weight, offs=self.offsets)
        return torch.bmm(rows.view(self.num_experts, self.capacity, -1), weight).view(rows.shape[0], -1)

    def outer(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Per-expert ``left_e^T @ right_e`` over each expert's rows: ``(R, K), (R, N) -> (E, K, N)``."""
        if self.capacity is None:
            return _NATIVE(left.t(), right, offs=self.offsets)
        left = left.view(self.num_experts, self.capacity, -1)
        return torch.bmm(left.transpose(1, 2), right.view(self.num_experts, self.capacity, -1))


def _silu_and_grad(gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``silu(g)`` and its derivative ``sigmoid(g) * (1 - silu(g)) + silu(g)``."""
    sig = torch.sigmoid(gate)
    silu = gate * sig
    return silu, silu.neg().add_(1).mul_(sig).add_(silu)


@dataclass(frozen=True)
class TokenBags:
    """Which rows sum into each token: ``rows`` ``(R',)`` grouped by token, token ``t`` owning
    ``rows[starts[t]:starts[t+1]]`` (``starts`` is ``(N,)``). Padding rows appear in no bag."""

    rows: torch.Tensor
    starts: torch.Tensor

    @classmethod
    def from_token_index(cls, token_index: torch.Tensor, num_tokens: int) -> TokenBags:
        """The bags of rows reading ``token_index`` ``(R,)``: every row sums into its own token."""
        counts = torch.bincount(token_index, minlength=num_tokens)
        return cls(torch.argsort(token_index, stable=True), counts.cumsum(0) - counts)

    def sum(self, rows: torch.Tensor) -> torch.Tensor:
        """``(R, D)`` rows -> ``(N, D)`` per-token sums (one fused gather-reduce, ``embedding_bag``)."""
        return F.embedding_bag(self.rows, rows, self.starts, mode="sum")


class GroupedSwiGLU(torch.autograd.Function):
    """``out[t] = sum_r w_r * down_e(silu(gate_e x_t) * up_e x_t)`` over the rows ``r`` of token ``t``.

    Forward args (``N`` tokens, ``R`` rows in ``layout``, ``E`` experts, ``H`` hidden):
        x: ``(N, D)`` tokens.
        gate_up: ``(E, 2H, D)`` stacked gate (first ``H`` rows) and up projections.
        down: ``(E, D, H)``.
        row_weight: ``(R,)`` routing weight of each row, in ``x``'s dtype.
        token_index: ``(R,)`` int64, the token each row reads.
        bags: the :class:`TokenBags` each token's output sums (the rows it wrote).
        layout: the :class:`RowLayout` of the rows.

    Returns ``(N, D)``; tokens with no row get zeros.
    """

    @staticmethod
    def forward(ctx, x, gate_up, down, row_weight, token_index, bags, layout):  # type: ignore[override]
        hidden = down.shape[-1]
        gate_up_out = layout.mm(x.index_select(0, token_index), gate_up.transpose(1, 2))
        act = F.silu(gate_up_out[:, :hidden])
        act.mul_(gate_up_out[:, hidden:]).mul_(row_weight[:, None])
        y = layout.mm(act, down.transpose(1, 2))
        ctx.layout, ctx.bags = layout, bags
        ctx.save_for_backward(x, gate_up, down, row_weight, token_index, gate_up_out)
        return bags.sum(y)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, gate_up, down, row_weight, token_index, gate_up_out = ctx.saved_tensors
        layout: RowLayout = ctx.layout
        need_x, need_gate_up, need_down, need_weight = ctx.needs_input_grad[:4]
        hidden = down.shape[-1]
        gate, up = gate_up_out[:, :hidden], gate_up_out[:, hidden:]
        grad_y = grad_out.contiguous().index_select(0, token_index)
        grad_act = layout.mm(grad_y, down)  # d loss / d (weighted activation)
        silu, silu_grad = _silu_and_grad(gate)
        act = silu * up
        grad_weight = torch.linalg.vecdot(grad_act, act) if need_weight else None
        grad_down = layout.outer(grad_y, act.mul_(row_weight[:, None])) if need_down else None
        del grad_y, act
        grad_act.mul_(row_weight[:, None])
        grad_gate_up_out = torch.empty_like(gate_up_out)
        torch.mul(grad_act, silu, out=grad_gate_up_out[:, hidden:])
        torch.mul(grad_act.mul_(up), silu_grad, out=grad_gate_up_out[:, :hidden])
        del grad_act, silu, silu_grad
        grad_gate_up = None
        if need_gate_up:
            grad_gate_up = layout.outer(grad_gate_up_out, x.index_select(0, token_index))
        grad_x = None
        if need_x:
            grad_x = ctx.bags.sum(layout.mm(grad_gate_up_out, gate_up))
        return grad_x, grad_gate_up, grad_down, grad_weight, None, None, None


def grouped_swiglu(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    row_weight: torch.Tensor,
    token_index: torch.Tensor,
    bags: TokenBags,
    layout: RowLayout,
) -> torch.Tensor:
    """Functional entry to :class:`GroupedSwiGLU` (same arguments; ``row_weight`` is cast to ``x``'s dtype)."""
    return GroupedSwiGLU.apply(x, gate_up, down, row_weight.to(x.dtype), token_index, bags, layout)
