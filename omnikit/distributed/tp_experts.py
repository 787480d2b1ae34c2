"""Tensor-parallel routed experts: each ``"tp"`` rank holds ``hidden / n`` of every expert's width.

The stacked weights ``gate_up (E, 2 * hidden, dim)`` (gate rows, then up rows) and
``down (E, dim, hidden)`` split like a SwiGLU MLP's: ``gate_up`` column-parallel on its rows,
``down`` row-parallel on its columns. The gate and up rows a rank needs are two separate chunks of
``gate_up``, so its rows are reordered once to ``[gate_0 up_0 | gate_1 up_1 | ...]`` before a plain
``Shard(1)`` (:mod:`omnikit.distributed.reorder` keeps checkpoints in the unwrapped layout);
``down`` is a plain ``Shard(2)``.

The ranks along ``tp`` see the same tokens and route them alike (the router is replicated). Each
runs the usual grouped SwiGLU on its slice of every expert; the routing-weighted partial outputs
are summed by one all-reduce. In the backward, the gradients of the expert input and of the
routing weights are partial sums over the slices, so both are all-reduced where they enter the
experts; the router and everything before it then get the full gradient on every rank.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Shard, distribute_tensor
from torch.distributed.tensor.parallel import ParallelStyle

from omnikit.distributed.grad import map_grad
from omnikit.distributed.reorder import rank_major_order, reorder_parameters
from omnikit.moe.dispatch import DispatchPlan
from omnikit.moe.experts import SwiGLUExperts
from omnikit.moe.grouped import grouped_swiglu
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["ExpertTensorParallel", "TensorParallelExperts"]


def _all_reduced(grad: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    grad = grad.contiguous()
    dist.all_reduce(grad, group=group)
    return grad


class _ReduceOutput(torch.autograd.Function):
    """Partial outputs all-reduced over ``group``; the gradient passes unchanged."""

    @staticmethod
    def forward(ctx, x, group):  # type: ignore[override]
        out = x.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


class TensorParallelExperts(SwiGLUExperts):
    """:class:`SwiGLUExperts` whose width is split over a tensor-parallel group (module docstring).

    ``forward(x: (N, dim), plan) -> (N, dim)`` gives what the unsharded experts give on ``x``; made
    by :class:`ExpertTensorParallel`.
    """

    tp_group: dist.ProcessGroup

    def forward(self, x: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
        reduce = partial(_all_reduced, group=self.tp_group)  # gradients partial over the width slices
        x = map_grad(x, reduce)
        plan = dataclasses.replace(plan, weight=map_grad(plan.weight, reduce))
        gate_up, down = self.gate_up.to_local(), self.down.to_local()
        partial_sum = grouped_swiglu(x, gate_up, down, *self.arrange(x, plan), self.activation)
        return _ReduceOutput.apply(partial_sum, self.tp_group)


class ExpertTensorParallel(ParallelStyle):
    """The tensor-parallel style of a :class:`SwiGLUExperts` of width ``hidden`` (``parallelize_module``
    applies it to the experts module; the tensor-parallel degree must divide ``hidden``)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden

    def check(self, mesh: DeviceMesh) -> None:
        """Raise before anything is sharded when ``mesh`` cannot split this width."""
        if self.hidden % mesh.size():
            raise OmnikitValueError(
                f"`mesh['tp']` size {mesh.size()} must divide the experts' hidden width, got {self.hidden}"
            )

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        if not isinstance(module, SwiGLUExperts):
            raise OmnikitTypeError(f"`module` expected a SwiGLUExperts but got {type(module).__name__}")
        self.check(device_mesh)
        ranks = device_mesh.size()
        reorder_parameters(module, {"gate_up": (1, rank_major_order([module.hidden, module.hidden], ranks))})
        for name, dim in (("gate_up", 1), ("down", 2)):
            weight = getattr(module, name)
            setattr(module, name, nn.Parameter(distribute_tensor(weight.data, device_mesh, [Shard(dim)])))
        module.__class__ = TensorParallelExperts
        module.tp_group = device_mesh.get_group()
        return module
