"""SwiGLU experts stored as stacked weights and run as batched expert GEMMs."""

from __future__ import annotations

import math

import torch
from torch import nn

from omnikit.layers.mlp import GATE_ACTIVATIONS
from omnikit.moe.dispatch import DispatchPlan
from omnikit.moe.grouped import RowChunk, RowLayout, TokenBags, grouped_mm_native, grouped_swiglu, pair_experts
from omnikit.moe.traced import ragged_swiglu
from omnikit.utils.checks import check_choice, check_positive

__all__ = ["CPU_CHUNK_BYTES", "EXPERT_GEMMS", "SwiGLUExperts"]

#: ``"auto"``, ``"ragged"`` (``torch._grouped_mm``), ``"padded"`` (one ``torch.bmm``) or ``"paired"``
#: (a ``torch.bmm`` per pair of experts); see :mod:`omnikit.moe.grouped`.
EXPERT_GEMMS: tuple[str, ...] = ("auto", "ragged", "padded", "paired")

#: On the CPU, experts run in chunks whose widest temporary (rows x max(2 * hidden, dim)) stays
#: within this many bytes, so that glibc recycles it from the heap instead of mapping fresh,
#: page-faulting memory (see :mod:`omnikit.moe.grouped`); more rows than one such chunk holds run
#: in pairs of experts under ``expert_gemm="auto"``. ``None`` runs all rows as one chunk.
CPU_CHUNK_BYTES: int | None = 4 * 2**20


class SwiGLUExperts(nn.Module):
    """``E`` SwiGLU MLPs ``down_e(silu(gate_e x) * up_e x)`` applied to the rows of a dispatch plan.

    Weights (the per-expert ``nn.Linear`` layout, stacked; same as transformers' fused experts):
        gate_up: ``(E, 2 * hidden, dim)``, gate rows first, then up rows.
        down: ``(E, dim, hidden)``.

    Args:
        gemm: row layout of the expert GEMMs: ``"ragged"`` (one ``torch._grouped_mm`` over rows
            sorted by expert), ``"padded"`` (one ``torch.bmm`` with every expert padded to the
            busiest one), ``"paired"`` (experts paired by load, a ``torch.bmm`` of two per pair,
            each pair padded to its busier expert) or ``"auto"``: on the CPU paired once the rows
            fill more than one :data:`CPU_CHUNK_BYTES` chunk; otherwise ragged wherever the
            grouped kernel serves the operands (CPU float32/bfloat16, CUDA bfloat16 on sm80+,
            aligned widths), padded elsewhere (padding to the busiest expert costs extra rows:
            17% under a random router at 64 experts, top-8).

        activation: gate activation, ``"silu"`` (SwiGLU) or ``"gelu_tanh"`` (GeGLU experts, Gemma 4).

    ``forward(x: (N, dim), plan) -> (N, dim)``: the routing-weighted sum of each token's experts.
    """

    def __init__(self, num_experts: int, dim: int, hidden: int, *, gemm: str = "auto",
                 activation: str = "silu") -> None:
        super().__init__()
        check_positive(num_experts, "num_experts")
        check_positive(dim, "dim")
        check_positive(hidden, "expert_hidden")
        check_choice(gemm, "expert_gemm", EXPERT_GEMMS)
        check_choice(activation, "activation", GATE_ACTIVATIONS)
        self.num_experts, self.dim, self.hidden, self.gemm = num_experts, dim, hidden, gemm
        self.activation = activation
        self.gate_up = nn.Parameter(torch.empty(num_experts, 2 * hidden, dim))
        self.down = nn.Parameter(torch.empty(num_experts, dim, hidden))
        nn.init.uniform_(self.gate_up, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        nn.init.uniform_(self.down, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def arrange(
        self, x: torch.Tensor, plan: DispatchPlan
    ) -> tuple[torch.Tensor, torch.Tensor, list[RowChunk], TokenBags | None]:
        """Lay out the rows for this call: ``(row_weight, token_index, chunks, bags)`` for :func:`grouped_swiglu`.

        ``"paired"`` runs pairs of experts (:func:`~omnikit.moe.grouped.pair_experts`), and so does
        ``"auto"`` on the CPU once the rows fill more than one chunk. Otherwise, on the CPU, the
        rows run in chunks of whole experts whose widest temporary stays within
        :data:`CPU_CHUNK_BYTES`, and elsewhere as one chunk. ``bags`` is ``None`` unless there is
        one chunk.
        """
        chunk_rows = None
        if x.device.type == "cpu" and CPU_CHUNK_BYTES is not None:
            chunk_rows = max(1, CPU_CHUNK_BYTES // (x.element_size() * max(2 * self.hidden, self.dim)))
        if self.gemm == "paired" or (
            self.gemm == "auto" and chunk_rows is not None and plan.token_index.numel() > chunk_rows
        ):
            chunks, first_slot = pair_experts(plan.rows_per_expert.tolist())
            token_index, weight, _ = plan.in_slots(plan.rows_per_expert.new_tensor(first_slot), chunks[-1].rows.stop)
            return weight, token_index, chunks, None
        native = grouped_mm_native(x, self.gate_up) and grouped_mm_native(x, self.down)
        if native and self.gemm in ("ragged", "auto"):
            weight, token_index = plan.weight, plan.token_index
            layout = RowLayout(self.num_experts, offsets=plan.offsets)
            slot = None
        else:
            capacity = int(plan.rows_per_expert.max()) if plan.token_index.numel() else 0
            token_index, weight, slot = plan.padded(capacity)
            layout = RowLayout(self.num_experts, capacity=capacity)
        chunks = layout.chunks(chunk_rows)
        if len(chunks) > 1:
            return weight, token_index, chunks, None
        bags = TokenBags.from_token_index(plan.token_index, x.shape[0])
        if slot is not None:
            bags = TokenBags(slot[bags.rows], bags.starts)
        return weight, token_index, chunks, bags

    def forward(self, x: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
        if torch.compiler.is_compiling():  # no layout chosen from routed counts: one ragged graph
            return ragged_swiglu(x, self.gate_up, self.down, plan.weight, plan.token_index, plan.offsets,
                                 self.activation)
        return grouped_swiglu(x, self.gate_up, self.down, *self.arrange(x, plan), self.activation)

    def extra_repr(self) -> str:
        act = "" if self.activation == "silu" else f", activation={self.activation!r}"
        return f"experts={self.num_experts}, dim={self.dim}, hidden={self.hidden}, gemm={self.gemm!r}{act}"
