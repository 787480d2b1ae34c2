"""The SwiGLU experts as a traceable graph, for ``torch.compile(fullgraph=True)`` and ``torch.export``.

Eager runs keep the chunked, paired or padded layouts of :mod:`omnikit.moe.grouped`: they pick
their chunks from the routed counts on the host. Under tracing every shape must be known without
the values, so the rows stay ragged (sorted by expert, ``offsets`` marking each expert's end) and
each expert GEMM is one opaque operator, ``omnikit::grouped_mm``: ``(R, K) x (E, K, N) -> (R, N)``,
whose output shape depends only on the input shapes. Inside, it runs ``torch._grouped_mm`` where
the fused kernel serves the operands (float32/bfloat16 on the CPU; in torch 2.14 its tracing rule
accepts only bfloat16 and float16, hence the wrapper), else one GEMM per expert.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omnikit.layers.mlp import gate_activation
from omnikit.moe.grouped import grouped_mm_native

__all__ = ["grouped_mm", "ragged_swiglu"]

_NATIVE = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def _bounds(offsets: torch.Tensor) -> list[tuple[int, int]]:
    ends = offsets.tolist()  # inside the opaque operator: the tracer never sees this sync
    return list(zip([0, *ends[:-1]], ends))


@torch.library.custom_op("omnikit::grouped_mm", mutates_args=())
def grouped_mm(rows: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``rows (R, K)`` sorted by expert times their expert's ``weight[e] (K, N)`` -> ``(R, N)``;
    expert ``e`` owns rows ``offsets[e-1]:offsets[e]`` (``offsets (E,)`` int32, cumulative)."""
    if grouped_mm_native(rows, weight):
        return _NATIVE(rows, weight, offs=offsets)
    out = rows.new_empty(rows.shape[0], weight.shape[-1])
    for expert, (start, end) in enumerate(_bounds(offsets)):
        torch.mm(rows[start:end], weight[expert], out=out[start:end])
    return out


@grouped_mm.register_fake
def _(rows: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], weight.shape[-1])


@torch.library.custom_op("omnikit::grouped_outer", mutates_args=())
def grouped_outer(left: torch.Tensor, right: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Per expert ``left_e^T @ right_e`` over its rows: ``(R, K), (R, N) -> (E, K, N)`` (the weight gradient)."""
    out = left.new_zeros(offsets.shape[0], left.shape[-1], right.shape[-1])
    for expert, (start, end) in enumerate(_bounds(offsets)):
        torch.mm(left[start:end].t(), right[start:end], out=out[expert])
    return out


@grouped_outer.register_fake
def _(left: torch.Tensor, right: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return left.new_empty(offsets.shape[0], left.shape[-1], right.shape[-1])


def _setup(ctx, inputs, output) -> None:  # torch.library passes (ctx, inputs, output)
    rows, weight, offsets = inputs
    ctx.save_for_backward(rows, weight, offsets)


def _backward(ctx, grad):
    rows, weight, offsets = ctx.saved_tensors
    grad_rows = grouped_mm(grad, weight.transpose(1, 2), offsets) if ctx.needs_input_grad[0] else None
    grad_weight = grouped_outer(rows, grad, offsets) if ctx.needs_input_grad[1] else None
    return grad_rows, grad_weight, None


grouped_mm.register_autograd(_backward, setup_context=_setup)


def ragged_swiglu(
    x: torch.Tensor,
    gate_up: torch.Tensor,
    down: torch.Tensor,
    row_weight: torch.Tensor,
    token_index: torch.Tensor,
    offsets: torch.Tensor,
    activation: str = "silu",
) -> torch.Tensor:
    """``out[t] = sum_r w_r * down_e(act(gate_e x_t) * up_e x_t)`` (``act``: ``activation``, silu by
    default), traceable (same maths as :class:`~omnikit.moe.grouped.GroupedSwiGLU`).

    Args: ``x (N, D)``, ``gate_up (E, 2H, D)``, ``down (E, D, H)``, ``row_weight (R,)``,
    ``token_index (R,)`` int64 sorted by expert, ``offsets (E,)`` int32 cumulative rows per expert.
    Returns ``(N, D)``; tokens with no row get zeros.
    """
    hidden = down.shape[-1]
    gate_up_out = grouped_mm(x.index_select(0, token_index), gate_up.transpose(1, 2), offsets)  # (R, 2H)
    act = gate_activation(gate_up_out[:, :hidden], activation) * gate_up_out[:, hidden:]
    act = act * row_weight.to(x.dtype)[:, None]
    rows_out = grouped_mm(act, down.transpose(1, 2), offsets)  # (R, D)
    return x.new_zeros(x.shape).index_add(0, token_index, rows_out)
