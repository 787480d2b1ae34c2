"""Expert GEMMs over expert-sorted rows, and the fused SwiGLU-experts autograd function.

Rows reach the experts in one of two layouts (:class:`RowLayout`):

- **ragged**: rows sorted by expert, expert ``e`` owning rows ``offsets[e-1]:offsets[e]``; each GEMM
  is one ``torch._grouped_mm`` call (the fast path on CUDA);
- **padded**: every expert owns exactly ``capacity`` rows (unused rows read token 0 with weight 0)
  and each GEMM is one ``torch.bmm``: the fallback where the grouped kernel cannot serve (CUDA
  float32, unaligned widths).

:class:`GroupedSwiGLU` runs gather -> gate/up GEMM -> SiLU*up -> routing weight -> down GEMM ->
per-token sum as one autograd node whose backward is batched the same way (four expert GEMMs,
one gather, one per-token sum) and keeps only the gate/up activations for backward.

Either layout's products run instead as one oneDNN matmul per expert for float32 CPU operands with
enough rows and multiply-adds per expert (:data:`ONEDNN_MIN_ROWS`, :data:`ONEDNN_MIN_MACS`), the
kernel :mod:`omnikit.layers.linear` uses for the dense layers (about twice MKL's there).

It can run the rows as consecutive **chunks** (:class:`RowChunk`), each with a layout of its own,
the per-token sums then accumulating chunk by chunk and the weight gradients written into one
preallocated tensor. The CPU uses two kinds:

- :meth:`RowLayout.chunks`: whole experts, a few thousand rows per chunk. Every temporary then
  stays a few MiB, below glibc's mmap threshold, so it is recycled from the heap instead of being
  mapped, page-faulted and zeroed by the kernel on every call (on a 2-core CPU that cost was a
  third of the whole MoE forward);
- :func:`pair_experts`: pairs of experts of near-equal load, each pair padded to its busier
  expert and run as a ``torch.bmm`` of two, which MKL splits one expert per core; a 256-row
  expert GEMM split across cores is about 7% slower. Its weight gradients are written by ``bmm``
  straight into the parameter-shaped gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from omnikit.layers.linear import onednn_linear, onednn_serves
from omnikit.layers.mlp import gate_activation

__all__ = [
    "ONEDNN_MIN_MACS", "ONEDNN_MIN_ROWS", "GroupedSwiGLU", "RowChunk",
    "RowLayout", "TokenBags", "grouped_mm_native", "grouped_swiglu", "pair_experts",
]

#: The CPU's float32 expert products run on oneDNN (one matmul per expert, about twice MKL's ``bmm`` /
#: grouped GEMM on this project's AMD EPYC) from this many rows per expert on average: with fewer, the
#: weight gradient's reduction is too short for oneDNN (32 rows x 1024 x 1024 measured 1.5x slower) ...
ONEDNN_MIN_ROWS = 64
#: ... and from this many multiply-adds per expert (64 x 128 -> 256, 2M, was level; 4M and more faster).
ONEDNN_MIN_MACS = 1 << 22

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
class RowChunk:
    """Experts ``experts`` (a slice of ``E``) and the rows ``rows`` (a slice of ``R``) they own, with
    the :class:`RowLayout` of those rows alone."""

    experts: slice
    rows: slice
    layout: RowLayout


@dataclass(frozen=True)
class RowLayout:
    """How ``R`` expert rows are arranged: ragged (``offsets``) or padded (``capacity`` per expert)."""

    num_experts: int
    offsets: torch.Tensor | None = None
    capacity: int | None = None

    def mm(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``rows (R, K)`` times their expert's ``weight[e] (K, N)`` -> ``(R, N)``; ``weight`` is ``(E, K, N)``."""
        if self._onednn(rows, weight):
            return torch.cat([onednn_linear(rows[a:b], weight[e].t()) for e, a, b in self._bounds() if b > a])
        if self.capacity is None:
            return _NATIVE(rows, weight, offs=self.offsets)
        return torch.bmm(self._per_expert(rows), weight).view(rows.shape[0], weight.shape[-1])

    def outer(self, left: torch.Tensor, right: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Per-expert ``left_e^T @ right_e`` over each expert's rows: ``(R, K), (R, N) -> (E, K, N)``,
        written into ``out`` when given (the padded layout's ``bmm`` writes there directly)."""
        if self._onednn(left, right):
            out = left.new_empty(self.num_experts, left.shape[-1], right.shape[-1]) if out is None else out
            for e, a, b in self._bounds():
                if b > a:
                    out[e].copy_(onednn_linear(left[a:b].t(), right[a:b].t()))
                else:
                    out[e].zero_()
            return out
        if self.capacity is not None:
            return torch.bmm(self._per_expert(left).transpose(1, 2), self._per_expert(right), out=out)
        result = _NATIVE(left.t(), right, offs=self.offsets)
        return result if out is None else out.copy_(result)

    def _onednn(self, rows: torch.Tensor, other: torch.Tensor) -> bool:
        """Whether the per-expert products of ``rows (R, K)`` with ``other`` (``(E, K, N)`` weights or
        ``(R, N)`` rows) run as one oneDNN matmul per expert: float32 CPU operands
        (:func:`~omnikit.layers.linear.onednn_serves`), at least :data:`ONEDNN_MIN_ROWS` rows and
        :data:`ONEDNN_MIN_MACS` multiply-adds per expert on average."""
        if not onednn_serves(rows, other):
            return False
        per_expert = rows.shape[0] // max(1, self.num_experts)
        return per_expert >= ONEDNN_MIN_ROWS and per_expert * rows.shape[-1] * other.shape[-1] >= ONEDNN_MIN_MACS

    def _bounds(self) -> list[tuple[int, int, int]]:
        """``(expert, first row, end row)`` of every expert (host integers; a sync for ragged offsets)."""
        if self.capacity is not None:
            return [(e, e * self.capacity, (e + 1) * self.capacity) for e in range(self.num_experts)]
        ends = self.offsets.tolist()
        return [(e, ends[e - 1] if e else 0, end) for e, end in enumerate(ends)]

    def _per_expert(self, rows: torch.Tensor) -> torch.Tensor:
        """Padded ``(E * capacity, K)`` rows as ``(E, capacity, K)``."""
        return rows.view(self.num_experts, self.capacity, rows.shape[-1])

    def chunks(self, max_rows: int | None) -> list[RowChunk]:
        """Consecutive groups of whole experts holding at most ``max_rows`` rows each (an expert with
        more rows gets a chunk of its own); ``None``: one chunk of everything, with no host sync."""
        if max_rows is None:
            return [RowChunk(slice(0, self.num_experts), slice(None), self)]
        if self.capacity is not None:
            step = max(1, max_rows // max(1, self.capacity))
            cap = self.capacity
            bounds = [(e, min(e + step, self.num_experts)) for e in range(0, self.num_experts, step)]
            return [
                RowChunk(slice(a, b), slice(a * cap, b * cap), RowLayout(b - a, capacity=cap))
                for a, b in bounds
            ]
        ends = self.offsets.tolist()
        chunks, first, start = [], 0, 0
        for expert, end in enumerate(ends):
            if expert + 1 == len(ends) or ends[expert + 1] - start > max_rows:
                local = RowLayout(expert + 1 - first, self.offsets[first : expert + 1] - start)
                chunks.append(RowChunk(slice(first, expert + 1), slice(start, end), local))
                first, start = expert + 1, end
        return chunks


def pair_experts(rows_per_expert: list[int]) -> tuple[list[RowChunk], list[int]]:
    """Experts in pairs of near-equal load, each pair one chunk padded to its busier expert.

    Experts are sorted by load and neighbours paired, so padding costs a row or two per pair
    instead of the busiest expert's excess over every expert. A pair ``a < b`` takes the
    weights ``w[a : b + 1 : b - a]``, a view, and runs its GEMMs as one ``torch.bmm`` of two
    (on the CPU, one expert per core). With an odd count the least loaded expert runs alone.

    Returns the chunks, in slot order, and each expert's first slot (for
    :meth:`omnikit.moe.dispatch.DispatchPlan.in_slots`; the slots number ``chunks[-1].rows.stop``).
    """
    order = sorted(range(len(rows_per_expert)), key=lambda e: (-rows_per_expert[e], e))
    chunks: list[RowChunk] = []
    first_slot = [0] * len(order)
    start = 0
    for i in range(0, len(order), 2):
        pair = sorted(order[i : i + 2])
        capacity = rows_per_expert[order[i]]
        for j, expert in enumerate(pair):
            first_slot[expert] = start + j * capacity
        experts = slice(pair[0], pair[-1] + 1, max(1, pair[-1] - pair[0]))
        stop = start + len(pair) * capacity
        chunks.append(RowChunk(experts, slice(start, stop), RowLayout(len(pair), capacity=capacity)))
        start = stop
    return chunks, first_slot


def _gate_grad(grad: torch.Tensor, gate: torch.Tensor, activation: str, out: torch.Tensor) -> torch.Tensor:
    """``grad * act'(gate)`` written into ``out``: the fused kernel autograd runs for ``F.silu`` /
    ``F.gelu(approximate="tanh")`` (one pass instead of a dozen elementwise temporaries)."""
    if activation == "silu":
        return torch.ops.aten.silu_backward.grad_input(grad, gate, grad_input=out)
    return torch.ops.aten.gelu_backward.grad_input(grad, gate, approximate="tanh", grad_input=out)


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


class _RowSum:
    """Per-token sums of rows that arrive chunk by chunk: ``index_add_`` into ``(N, D)`` zeros, or
    :meth:`TokenBags.sum` when the rows come as one chunk (deterministic on CUDA, where
    ``index_add_`` uses atomics)."""

    def __init__(self, bags: TokenBags | None, num_tokens: int, like: torch.Tensor) -> None:
        self.bags = bags
        self.total = None if bags is not None else like.new_zeros(num_tokens, like.shape[-1])

    def add(self, token_index: torch.Tensor, rows: torch.Tensor) -> None:
        if self.total is None:
            self.total = self.bags.sum(rows)
        else:
            self.total.index_add_(0, token_index, rows)


def _into(
    full: torch.Tensor | None, index: slice, compute: Callable[..., torch.Tensor], *args: torch.Tensor
) -> torch.Tensor:
    """One chunk's part of a gradient, ``compute(*args, out=full[index])``, written in place; returns
    ``full``. Where there is no ``full`` (one chunk) the part ``compute(*args)`` is the gradient."""
    if full is None:
        return compute(*args)
    compute(*args, out=full[index])
    return full


class GroupedSwiGLU(torch.autograd.Function):
    """``out[t] = sum_r w_r * down_e(silu(gate_e x_t) * up_e x_t)`` over the rows ``r`` of token ``t``.

    Forward args (``N`` tokens, ``R`` rows in ``layout``, ``E`` experts, ``H`` hidden):
        x: ``(N, D)`` tokens.
        gate_up: ``(E, 2H, D)`` stacked gate (first ``H`` rows) and up projections.
        down: ``(E, D, H)``.
        row_weight: ``(R,)`` routing weight of each row, in ``x``'s dtype.
        token_index: ``(R,)`` int64, the token each row reads.
        chunks: the :class:`RowChunk` s covering all ``R`` rows, run one after the other.
        bags: the :class:`TokenBags` of all rows when ``chunks`` is a single chunk, else ``None``
            (per-token sums then go through ``index_add_``).

        activation: the gate activation, ``"silu"`` or ``"gelu_tanh"`` (GeGLU experts).

    Returns ``(N, D)``; tokens with no row get zeros.
    """

    @staticmethod
    def forward(ctx, x, gate_up, down, row_weight, token_index, chunks, bags, activation="silu"):  # type: ignore[override]
        hidden = down.shape[-1]
        out = _RowSum(bags, x.shape[0], x)
        saved = []
        for chunk in chunks:
            rows = token_index[chunk.rows]
            gate_up_out = chunk.layout.mm(x.index_select(0, rows), gate_up[chunk.experts].transpose(1, 2))
            act = gate_activation(gate_up_out[:, :hidden], activation)
            act.mul_(gate_up_out[:, hidden:]).mul_(row_weight[chunk.rows, None])
            out.add(rows, chunk.layout.mm(act, down[chunk.experts].transpose(1, 2)))
            saved.append(gate_up_out)
        ctx.chunks, ctx.bags, ctx.activation = chunks, bags, activation
        ctx.save_for_backward(x, gate_up, down, row_weight, token_index, *saved)
        return out.total

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, gate_up, down, row_weight, token_index, *saved = ctx.saved_tensors
        need_x, need_gate_up, need_down, need_weight = ctx.needs_input_grad[:4]
        single = len(ctx.chunks) == 1
        hidden = down.shape[-1]
        grad_out = grad_out.contiguous()
        grad_x = _RowSum(ctx.bags, x.shape[0], x) if need_x else None
        grad_gate_up = None if single or not need_gate_up else torch.empty_like(gate_up)
        grad_down = None if single or not need_down else torch.empty_like(down)
        grad_weight = None if single or not need_weight else torch.empty_like(row_weight)
        for chunk, gate_up_out in zip(ctx.chunks, saved):
            rows, layout, weight = token_index[chunk.rows], chunk.layout, row_weight[chunk.rows, None]
            gate, up = gate_up_out[:, :hidden], gate_up_out[:, hidden:]
            grad_y = grad_out.index_select(0, rows)
            grad_act = layout.mm(grad_y, down[chunk.experts])  # d loss / d (weighted activation)
            silu = gate_activation(gate, ctx.activation)
            act = silu * up
            if need_weight:
                grad_weight = _into(grad_weight, chunk.rows, torch.linalg.vecdot, grad_act, act)
            if need_down:
                grad_down = _into(grad_down, chunk.experts, layout.outer, grad_y, act.mul_(weight))
            del grad_y, act
            grad_act.mul_(weight)
            grad_gate_up_out = torch.empty_like(gate_up_out)
            torch.mul(grad_act, silu, out=grad_gate_up_out[:, hidden:])
            _gate_grad(grad_act.mul_(up), gate, ctx.activation, grad_gate_up_out[:, :hidden])
            del grad_act, silu
            if need_gate_up:
                rows_x = x.index_select(0, rows)
                grad_gate_up = _into(grad_gate_up, chunk.experts, layout.outer, grad_gate_up_out, rows_x)
            if need_x:
                grad_x.add(rows, layout.mm(grad_gate_up_out, gate_up[chunk.experts]))
        grad_x = grad_x.total if grad_x is not None else None
        return grad_x, grad_gate_up, grad_down, grad_weight, None, None, None, None


def grouped_swiglu(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    row_weight: torch.Tensor,
    token_index: torch.Tensor,
    chunks: list[RowChunk],
    bags: TokenBags | None,
    activation: str = "silu",
) -> torch.Tensor:
    """Functional entry to :class:`GroupedSwiGLU` (same arguments; ``row_weight`` is cast to ``x``'s dtype)."""
    return GroupedSwiGLU.apply(x, gate_up, down, row_weight.to(x.dtype), token_index, chunks, bags, activation)
