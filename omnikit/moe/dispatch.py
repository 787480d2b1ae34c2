"""Dispatch plans: which token each expert-sorted row reads, with what weight, and what was dropped.

A plan is built once per forward with one sort; the grouped expert GEMMs consume it as is
(:class:`omnikit.moe.grouped.GroupedSwiGLU`). Rows of expert ``e`` are
``offsets[e-1]:offsets[e]`` (``offsets`` is int32, as the grouped kernels want it);
:meth:`DispatchPlan.padded` lays them out with a fixed number of rows per expert instead, and
:meth:`DispatchPlan.in_slots` at any per-expert starting slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from omnikit.utils.checks import OmnikitValueError

__all__ = ["DispatchPlan", "capacity", "expert_choice_plan", "token_choice_plan"]


@dataclass
class DispatchPlan:
    """Expert-sorted rows.

    Attributes:
        token_index: ``(S,)`` int64, the token each row belongs to.
        weight: ``(S,)`` routing weight of each row (differentiable, router dtype).
        rows_per_expert: ``(E,)`` int64 rows each expert keeps.
        offsets: ``(E,)`` int32 cumulative ``rows_per_expert``; ``offsets[-1] == S``.
        tokens_per_expert: ``(E,)`` int64 rows each expert was *asked* to take (before capacity).
        dropped: ``()`` int64 routed (token, expert) pairs discarded by the capacity limit.
    """

    token_index: torch.Tensor
    weight: torch.Tensor
    rows_per_expert: torch.Tensor
    tokens_per_expert: torch.Tensor
    dropped: torch.Tensor

    @property
    def offsets(self) -> torch.Tensor:
        return self.rows_per_expert.cumsum(0).to(torch.int32)

    def padded(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows laid out as ``capacity`` per expert: ``(E * capacity,)`` token index and weight,
        and the ``(S,)`` padded position of every row.

        ``capacity`` must be at least ``rows_per_expert.max()``.
        """
        starts = torch.arange(self.rows_per_expert.numel(), device=self.token_index.device) * capacity
        return self.in_slots(starts, self.rows_per_expert.numel() * capacity)

    def in_slots(self, slot_starts: torch.Tensor, num_slots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows copied into ``num_slots`` slots, expert ``e``'s at ``slot_starts[e]`` onwards:
        ``(num_slots,)`` token index and weight, and the ``(S,)`` slot of every row.

        Unused slots read token 0 with weight 0, so they add nothing and receive no gradient. The
        caller leaves each expert room for its ``rows_per_expert``.
        """
        num_experts, rows = self.rows_per_expert.numel(), self.token_index.numel()
        expert = torch.repeat_interleave(
            torch.arange(num_experts, device=self.token_index.device), self.rows_per_expert, output_size=rows
        )
        starts = self.rows_per_expert.cumsum(0) - self.rows_per_expert
        slot = slot_starts[expert] + torch.arange(rows, device=expert.device) - starts[expert]
        token_index = self.token_index.new_zeros(num_slots).index_copy_(0, slot, self.token_index)
        weight = self.weight.new_zeros(num_slots).index_put((slot,), self.weight)
        return token_index, weight, slot


def capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Rows per expert under a capacity factor: ``ceil(factor * tokens * top_k / experts)``, at most tokens."""
    if not capacity_factor > 0:
        raise OmnikitValueError(f"`capacity_factor` expected a float > 0 but got {capacity_factor!r}")
    return min(num_tokens, math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def token_choice_plan(
    expert_index: torch.Tensor,
    weight: torch.Tensor,
    num_experts: int,
    capacity_factor: float | None = None,
) -> DispatchPlan:
    """Sort ``(N, k)`` token choices by expert; drop overflow beyond the capacity when one is given.

    Within an expert, earlier tokens win (first come, first served, as in Switch Transformer); a
    dropped pair contributes nothing to its token's output.
    """
    num_tokens, top_k = expert_index.shape
    flat = expert_index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    weight = weight.reshape(-1)
    if capacity_factor is None:
        return DispatchPlan(order // top_k, weight[order], counts, counts, counts.new_zeros(()))
    cap = capacity(num_tokens, num_experts, top_k, capacity_factor)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[flat[order]]
    kept_counts = counts.clamp(max=cap)
    dropped = (counts - kept_counts).sum()
    if torch.compiler.is_compiling():  # a fixed row count: overflow rows stay, with weight 0
        kept_weight = torch.where(rank < cap, weight[order], torch.zeros_like(weight[order]))
        return DispatchPlan(order // top_k, kept_weight, counts, counts, dropped)
    kept = order[rank < cap]
    return DispatchPlan(kept // top_k, weight[kept], kept_counts, counts, dropped)


def expert_choice_plan(scores: torch.Tensor, top_k: int, capacity_factor: float = 1.0) -> DispatchPlan:
    """Each expert takes its ``capacity`` highest-scoring tokens (Zhou et al., 2022).

    ``scores`` is ``(N, E)``; rows come out sorted by expert already. ``dropped`` counts tokens no
    expert chose. The choice looks at the whole batch, so a token's output depends on the others:
    not for causal decoding.
    """
    num_tokens, num_experts = scores.shape
    cap = capacity(num_tokens, num_experts, top_k, capacity_factor)
    weight, token_index = scores.t().topk(cap, dim=-1)  # (E, cap)
    token_index = token_index.reshape(-1)
    chosen = torch.zeros(num_tokens, dtype=torch.bool, device=scores.device)
    chosen[token_index] = True
    per_expert = torch.full((num_experts,), cap, dtype=torch.int64, device=scores.device)
    return DispatchPlan(token_index, weight.reshape(-1), per_expert, per_expert, (~chosen).sum())
