"""Head-split tensor parallel for a fused grouped-query q/k/v projection.

The fused projection (:class:`~omnikit.layers.attention.Attention`'s ``qkv``) stacks its rows as
``[q: H * hd | k: H_kv * hd | v: H_kv * hd]``, so a plain ``Shard(0)`` of it would hand a rank a
slice that mixes sections, not whole heads. :class:`HeadParallelQKV` reorders the rows once,
before sharding, to ``[q_0 k_0 v_0 | q_1 k_1 v_1 | ...]`` where ``q_r`` are the query heads
``[r H / n, (r + 1) H / n)`` and ``k_r``, ``v_r`` their key/value groups
``[r H_kv / n, (r + 1) H_kv / n)``; a plain ``Shard(0)`` of the reordered weight then gives rank
``r`` exactly its heads. The attention output projection's input columns are already ordered by
query head, so a plain row-parallel split of it matches: per attention layer, one all-reduce in
the forward (after the output projection) and one in the backward (of the projection's input),
plus, with q/k norms (:class:`HeadShardedNorm`), the all-reduce of their weights' gradients.

The reordering stays inside the parallelized model (:mod:`omnikit.distributed.reorder`): the
projection's ``state_dict`` hook puts the rows back in the unwrapped order and its
``load_state_dict`` pre-hook reorders what it loads, so checkpoints hold the unwrapped layout.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import ColwiseParallel, SequenceParallel

from omnikit.distributed.reorder import rank_major_order, reorder_parameters
from omnikit.utils.checks import OmnikitValueError

__all__ = ["HeadParallelQKV", "HeadShardedNorm", "head_split_order"]


def head_split_order(num_heads: int, num_kv_heads: int, head_dim: int, ranks: int,
                     query_width: int | None = None) -> torch.Tensor:
    """``(H * qw + 2 H_kv * hd,)`` int64: the unwrapped row of each tensor-parallel row, rank by rank
    ``[q_r | k_r | v_r]``; refuses a ``ranks`` that does not divide the key/value heads. ``query_width``
    ``qw``: rows per query head (default ``hd``; ``2 hd`` for an output-gated attention, whose query
    head's rows are its query then its gate)."""
    if num_kv_heads % ranks:
        raise OmnikitValueError(
            f"`mesh['tp']` size {ranks} must divide the attention's key/value heads ({num_kv_heads}) "
            f"and query heads ({num_heads}) to split attention by heads"
        )
    query_width = head_dim if query_width is None else query_width
    return rank_major_order([num_heads * query_width, num_kv_heads * head_dim, num_kv_heads * head_dim], ranks)


class HeadParallelQKV(ColwiseParallel):
    """``ColwiseParallel`` of a fused ``nn.Linear(dim, (H + 2 H_kv) * hd)`` q/k/v projection that
    splits it by heads: rank ``r``'s output ``(B, T, (H + 2 H_kv) * hd / n)`` is its ``[q_r | k_r | v_r]``
    (see the module docstring). The tensor-parallel degree ``n`` must divide ``H_kv``. ``query_width``:
    rows per query head (``2 * head_dim`` with an output gate, which then travels with its head)."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, query_width: int | None = None) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.query_width = query_width

    def check(self, mesh: DeviceMesh) -> None:
        """Raise before anything is sharded when ``mesh`` cannot split these heads."""
        head_split_order(self.num_heads, self.num_kv_heads, self.head_dim, mesh.size(), self.query_width)

    def _partition_linear_fn(self, name: str, module: nn.Module, device_mesh: DeviceMesh) -> None:
        order = head_split_order(self.num_heads, self.num_kv_heads, self.head_dim, device_mesh.size(),
                                 self.query_width)
        reorder_parameters(module, {param: (0, order) for param, _ in module.named_parameters(recurse=False)})
        super()._partition_linear_fn(name, module, device_mesh)


def _reduce_partial_grad(param: nn.Parameter) -> None:
    if isinstance(param.grad, DTensor) and param.grad.placements != param.placements:
        param.grad = param.grad.redistribute(param.device_mesh, param.placements)


class HeadShardedNorm(SequenceParallel):
    """A per-head norm (the q/k norm, on ``(B, T, local heads, hd)``) after :class:`HeadParallelQKV`:
    its input is sharded on the heads dimension and its weight replicated. Each rank's weight
    gradient is a partial sum over its heads; DTensor leaves it ``Partial``, so a post-accumulate
    hook all-reduces it into the parameter's ``Replicate`` placement (under FSDP2, which replaces
    the parameters, FSDP2 does that reduction itself)."""

    def __init__(self) -> None:
        super().__init__(sequence_dim=2, use_local_output=True)

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        module = super()._apply(module, device_mesh)
        for param in module.parameters(recurse=False):
            param.register_post_accumulate_grad_hook(_reduce_partial_grad)
        return module
