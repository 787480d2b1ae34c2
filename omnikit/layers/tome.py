"""Token merging by similarity (ToMe-style) down to a target count.

Rounds repeat until ``target`` tokens remain; similarity is the cosine similarity of ``metric``. Items
without padding merged by bipartite matching follow a schedule fixed by the shapes (no host reads).

- ``matching="bipartite"`` (ToMe): current tokens split alternately into A (even positions) and
  B (odd positions); the A tokens closest to their best B token merge into it. A round can halve
  the count, so ``N -> N/8`` takes three rounds of ``(N/2)^2`` similarities at most.
- ``matching="mutual"``: disjoint pairs of mutual nearest neighbours merge, the closest first,
  at most half the remaining excess per round: slower, but two identical tokens always meet
  (bipartite matching cannot merge two tokens that fall in the same set).

Merged tokens are size-weighted means of the inputs they absorbed and stay in the order of
their members, so temporal order survives compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from omnikit.utils.checks import (
    OmnikitValueError,
    check_choice,
    check_finite,
    check_lengths_or_full,
    check_positive,
    check_tensor,
)

__all__ = ["MergeResult", "merge_by_assignment", "merge_tokens"]


@dataclass
class MergeResult:
    """Output of :func:`merge_tokens`.

    Attributes:
        tokens: ``(B, K, D)`` merged tokens, zero past ``lengths``.
        sizes: ``(B, K)`` total size (input tokens, weighted by input sizes) in each output token.
        lengths: ``(B,)`` int64 output tokens per item: ``min(target, input length)``.
        assignment: ``(B, N)`` int64 output slot of every input token (``-1`` for input padding).
    """

    tokens: torch.Tensor
    sizes: torch.Tensor
    lengths: torch.Tensor
    assignment: torch.Tensor


def merge_by_assignment(
    values: torch.Tensor, assignment: torch.Tensor, weights: torch.Tensor, num_slots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted means of ``values (B, N, ...)`` grouped by ``assignment (B, N)`` into ``num_slots`` slots.

    Returns ``(means (B, num_slots, ...), total weights (B, num_slots))``; ``-1`` assignments are ignored.
    """
    batch = values.shape[0]
    slot = assignment.clamp(min=0)
    w = weights.to(values.dtype) * (assignment >= 0).to(values.dtype)
    total = w.new_zeros(batch, num_slots).scatter_add_(1, slot, w)
    flat = values.reshape(batch, values.shape[1], -1)
    summed = flat.new_zeros(batch, num_slots, flat.shape[-1])
    summed.scatter_add_(1, slot[..., None].expand_as(flat), flat * w[..., None])
    means = summed / total.clamp(min=torch.finfo(total.dtype).tiny)[..., None]
    return means.view(batch, num_slots, *values.shape[2:]), total


def _similarity(metric: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
    normed = F.normalize(metric.float(), dim=-1)
    return normed[:, rows] @ normed[:, cols].transpose(1, 2)


def _bipartite_round(
    metric: torch.Tensor, count: torch.Tensor, target: int, window: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's round on current tokens ``metric (B, M, D)`` with ``count`` valid each: A = even slots,
    B = odd slots; the A tokens most similar to their best B token merge into it (up to all of A).

    Returns the new slot of every current slot ``(B, M)`` (-1 past ``count``) and the new counts.
    """
    width = metric.shape[1]
    slots = torch.arange(width, device=metric.device)
    valid = slots[None, :] < count[:, None]
    scores = _similarity(metric, slice(0, None, 2), slice(1, None, 2))  # (B, |A|, |B|)
    allowed = valid[:, None, 1::2]
    if window is not None:  # A slot 2i may only join B slots 2j+1 with |2i - 2j - 1| <= window
        allowed = allowed & ((slots[0::2, None] - slots[None, 1::2]).abs() <= window)[None]
    best, match = scores.masked_fill(~allowed, float("-inf")).max(dim=-1)  # (B, |A|)
    best = best.masked_fill(~valid[:, 0::2], float("-inf"))
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    steps = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, steps)
    budget = (count - target).clamp(min=0)
    merged_a = (rank < budget[:, None]) & torch.isfinite(best)  # (B, |A|)
    merged = torch.zeros_like(valid)
    merged[:, 0::2] = merged_a
    new_slot = torch.cumsum((valid & ~merged).long(), dim=1) - 1
    into = new_slot[:, 1::2].gather(1, match)  # new slot of each A token's match
    new_slot[:, 0::2] = torch.where(merged_a, into, new_slot[:, 0::2])
    return new_slot.masked_fill(~valid, -1), count - merged_a.sum(dim=1)


def _mutual_round(
    metric: torch.Tensor, count: torch.Tensor, target: int, window: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A round of mutual-nearest-neighbour merging: disjoint pairs of tokens that are each other's most
    similar token merge, the most similar pairs first, at most half the remaining excess per round.

    Returns the new slot of every current slot ``(B, M)`` (-1 past ``count``) and the new counts.
    """
    width = metric.shape[1]
    slots = torch.arange(width, device=metric.device)
    valid = slots[None, :] < count[:, None]
    scores = _similarity(metric, slice(None), slice(None))  # (B, M, M) cosine similarity
    allowed = valid[:, :, None] & valid[:, None, :] & (slots[:, None] != slots[None, :])
    if window is not None:
        allowed = allowed & ((slots[:, None] - slots[None, :]).abs() <= window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    best, partner = scores.max(dim=-1)  # (B, M): each token's nearest neighbour
    mutual = (partner.gather(1, partner) == slots[None, :]) & (slots[None, :] < partner) & torch.isfinite(best)
    excess = (count - target).clamp(min=0)
    budget = torch.minimum((excess + 1) // 2, mutual.sum(dim=1))  # at most half the excess per round
    pair_score = best.masked_fill(~mutual, float("-inf"))
    order = torch.sort(pair_score, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, slots.expand_as(order))
    merging = mutual & (rank < budget[:, None])  # (B, M): the lower slot of each merged pair
    absorbed = torch.zeros_like(partner).scatter_add_(1, partner, merging.long()) > 0  # higher slot joins lower
    keep = valid & ~absorbed
    new_slot = torch.cumsum(keep.long(), dim=1) - 1
    new_slot = torch.where(absorbed, new_slot.gather(1, partner), new_slot)
    return new_slot.masked_fill(~valid, -1), count - merging.sum(dim=1)


_ROUNDS = {"bipartite": _bipartite_round, "mutual": _mutual_round}


def _bipartite_counts(length: int, target: int) -> list[int]:
    """Tokens left after each bipartite round that merges items of ``length`` tokens, none of them padding,
    down to ``target``: a round of ``M >= 2`` tokens merges ``min(M - target, ceil(M / 2))`` (every A token has
    a B neighbour, within any window, and a finite similarity to it)."""
    counts = []
    while length > target:
        length -= min(length - target, (length + 1) // 2)
        counts.append(length)
    return counts


def _merge_round(
    metric: torch.Tensor, assignment: torch.Tensor, sizes: torch.Tensor, count: torch.Tensor, width: int,
    target: int, window: int | None, matching: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One matching round on the ``width`` current tokens: the new counts ``(B,)`` and the new output slot of
    every input token ``(B, N)`` (-1 for padding)."""
    current, _ = merge_by_assignment(metric, assignment, sizes, width)
    new_slot, new_count = _ROUNDS[matching](current, count, target, window)
    return new_count, torch.where(assignment >= 0, new_slot.gather(1, assignment.clamp(min=0)), -1)


def merge_tokens(
    tokens: torch.Tensor,
    target: int,
    *,
    lengths: torch.Tensor | None = None,
    sizes: torch.Tensor | None = None,
    metric: torch.Tensor | None = None,
    window: int | None = None,
    matching: str = "bipartite",
) -> MergeResult:
    """Merge similar tokens of ``tokens (B, N, D)`` until each item has ``target`` (or fewer, if it had fewer).

    Args:
        tokens: features to merge.
        target: tokens to keep per item.
        lengths: ``(B,)`` valid tokens per item (padding at the end); default all ``N``.
        sizes: ``(B, N)`` how many original tokens each input already stands for (default 1).
        metric: ``(B, N, D')`` features whose cosine similarity decides the matches (ToMe uses
            attention keys); default ``tokens``.
        window: only merge tokens at most this many positions apart in the current sequence
            (``1``: neighbours only, so every output token covers a contiguous stretch of the input).
        matching: ``"bipartite"`` (ToMe: fast, up to half the tokens merge per round) or
            ``"mutual"`` (mutual nearest neighbours: identical tokens always meet; ~4x the
            similarity cost per round and more rounds).

    Bipartite matching without ``lengths`` reads no tensor values (traceable by ``torch.compile`` with
    ``fullgraph=True`` and ``torch.export``): its rounds and their counts follow from ``N`` and ``target``,
    given a finite ``metric`` (checked in eager mode). With ``lengths`` or ``"mutual"`` matching the
    rounds repeat while some item has more than ``target`` tokens, a host read per round.
    """
    check_tensor(tokens, "tokens", ndim=3, floating=True)
    check_positive(target, "target")
    check_choice(matching, "matching", tuple(_ROUNDS))
    batch, length, _ = tokens.shape
    static = lengths is None and matching == "bipartite"
    lengths = check_lengths_or_full(lengths, tokens)
    if sizes is None:
        sizes = torch.ones(batch, length, dtype=tokens.dtype, device=tokens.device)
    check_tensor(sizes, "sizes", shape=(batch, length), floating=True)
    if metric is None:
        metric = tokens
    check_tensor(metric, "metric", shape=(batch, length, "D'"), floating=True)
    if static:  # a non-finite similarity would stop a round short of its count
        check_finite(metric, "metric", "token merging compares tokens by cosine similarity")
    if window is not None:
        check_positive(window, "window")
    if not torch.compiler.is_compiling() and bool((sizes < 0).any()):
        raise OmnikitValueError("`sizes` expected non-negative values")
    positions = torch.arange(length, device=tokens.device)[None, :]
    assignment = torch.where(positions < lengths[:, None], positions, -1).expand(batch, length).clone()
    count = lengths.clone()
    if static:  # every round's count follows from the shapes: no host reads
        width = length
        for width_after in _bipartite_counts(length, target):
            count, assignment = _merge_round(metric, assignment, sizes, count, width, target, window, matching)
            width = width_after
    else:
        while bool((count > target).any()):
            new_count, assignment = _merge_round(metric, assignment, sizes, count, int(count.max()), target, window,
                                                 matching)
            if torch.equal(new_count, count):
                raise OmnikitValueError(f"token merging stalled at {count.tolist()} tokens (target {target})")
            count = new_count
        width = int(count.max()) if batch else 0
    merged, total = merge_by_assignment(tokens, assignment, sizes, width)
    return MergeResult(merged, total, count, assignment)
