"""Expert parallel: each rank of the ``"ep"`` mesh dimension holds ``E / ep`` experts and runs them on
the tokens every rank routes to them.

The expert weights become DTensors ``Shard(0)`` (the expert dimension of the 3-D grouped weights).
One MoE forward on a rank, after its (replicated) router has built the usual
:class:`~omnikit.moe.dispatch.DispatchPlan`:

1. the per-expert row counts are exchanged (``all_to_all_single`` of ``E`` integers);
2. the routed rows (sorted by expert, hence by owning rank) go to their experts' rank with
   ``all_to_all_single`` and uneven splits; a rank may receive none;
3. the received rows, sorted by local expert, run through the same grouped SwiGLU kernel
   (:func:`~omnikit.moe.grouped.grouped_swiglu`) with the local expert shards;
4. the results return by the reverse ``all_to_all_single`` and are summed per token with the
   routing weights, on the rank that routed them (so the router's gradient stays local).

Both transfers are autograd functions (``all_to_all_single_autograd``), which gloo serves on the
CPU. Each rank's loss is its own batch's mean, so the expert gradients, which gather every rank's
contribution, are scaled by ``1 / ep`` to be the data-parallel mean like every other gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from omnikit.distributed.grad import map_grad
from omnikit.moe.dispatch import DispatchPlan
from omnikit.moe.experts import SwiGLUExperts
from omnikit.moe.grouped import RowLayout, TokenBags, grouped_mm_native, grouped_swiglu
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["ExpertParallelExperts", "apply_expert_parallel"]


class ExpertParallelExperts(SwiGLUExperts):
    """:class:`SwiGLUExperts` whose weights are ``Shard(0)`` DTensors over an expert-parallel group.

    ``forward(x: (N, dim), plan) -> (N, dim)`` gives what the unsharded experts give on ``x``; made
    by :func:`apply_expert_parallel`, which turns a built :class:`SwiGLUExperts` into one in place.
    """

    ep_group: dist.ProcessGroup

    def forward(self, x: torch.Tensor, plan: DispatchPlan) -> torch.Tensor:
        ranks = dist.get_world_size(self.ep_group)
        local = self.num_experts // ranks
        # 1. row counts: send_counts[e] to the owner of e; recv_counts[s, j] from rank s for local expert j
        send_counts = plan.rows_per_expert
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.ep_group)
        recv_counts = recv_counts.view(ranks, local)
        in_splits = send_counts.view(ranks, local).sum(1).tolist()
        out_splits = recv_counts.sum(1).tolist()
        # 2. rows to their experts' ranks
        received = all_to_all_single_autograd(
            x.index_select(0, plan.token_index), out_splits, in_splits, self.ep_group
        )
        # 3. local experts on the received rows (grouped by source rank, then by local expert)
        expert_of_row = torch.repeat_interleave(
            torch.arange(local, device=x.device).repeat(ranks), recv_counts.reshape(-1), output_size=sum(out_splits)
        )
        order = torch.argsort(expert_of_row, stable=True)
        rows_per_expert = recv_counts.sum(0)
        gate_up, down = (map_grad(w.to_local(), lambda g: g / ranks) for w in (self.gate_up, self.down))
        outputs = grouped_swiglu(received, gate_up, down, *_local_layout(received, gate_up, order, rows_per_expert),
                                 self.activation)
        # 4. back to the routing rank, weighted and summed per token
        returned = all_to_all_single_autograd(outputs, in_splits, out_splits, self.ep_group)
        weighted = returned * plan.weight.to(returned.dtype)[:, None]
        return x.new_zeros(x.shape).index_add(0, plan.token_index, weighted)


def _local_layout(
    rows: torch.Tensor, gate_up: torch.Tensor, order: torch.Tensor, rows_per_expert: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list, TokenBags]:
    """``(row_weight, token_index, chunks, bags)`` for :func:`grouped_swiglu` running every received
    row once (weight 1) through its local expert; output ``i`` is row ``i``'s."""
    num_experts = gate_up.shape[0]
    ones = rows.new_ones(rows.shape[0])
    if grouped_mm_native(rows, gate_up) and rows.shape[0]:
        layout = RowLayout(num_experts, offsets=rows_per_expert.cumsum(0).to(torch.int32))
        return ones, order, layout.chunks(None), TokenBags.from_token_index(order, rows.shape[0])
    plan = DispatchPlan(order, ones, rows_per_expert, rows_per_expert, rows_per_expert.new_zeros(()))
    capacity = int(rows_per_expert.max())
    token_index, weight, slot = plan.padded(capacity)
    bags = TokenBags.from_token_index(order, rows.shape[0])
    layout = RowLayout(num_experts, capacity=capacity)
    return weight, token_index, layout.chunks(None), TokenBags(slot[bags.rows], bags.starts)


def apply_expert_parallel(experts: nn.Module, mesh: DeviceMesh) -> ExpertParallelExperts:
    """Shard ``experts`` (a :class:`SwiGLUExperts`) over the 1-D ``mesh`` in place: weights become
    ``Shard(0)`` DTensors and the forward dispatches tokens to their experts' ranks."""
    if not isinstance(experts, SwiGLUExperts):
        raise OmnikitTypeError(f"`experts` expected a SwiGLUExperts but got {type(experts).__name__}")
    if experts.num_experts % mesh.size():
        raise OmnikitValueError(
            f"`mesh['ep']` size {mesh.size()} must divide the number of experts, got {experts.num_experts}"
        )
    for name in ("gate_up", "down"):
        weight = getattr(experts, name)
        if not isinstance(weight, DTensor):
            setattr(experts, name, nn.Parameter(distribute_tensor(weight.data, mesh, [Shard(0)])))
    experts.__class__ = ExpertParallelExperts
    experts.ep_group = mesh.get_group()
    return experts
