"""Context parallel: the sequence split over the ``"cp"`` ranks, all-gather attention, causal load balance.

The sequence of ``T`` positions is cut into ``2 * cp`` equal chunks and rank ``r`` holds chunks ``r``
and ``2 * cp - 1 - r`` (:func:`cp_positions`): under a causal mask an early chunk is cheap and a
late one expensive, so every rank gets the same work. Each rank runs the whole model on its
``T / cp`` positions, with the rotary ids of their global positions; in every full-attention layer
of a :class:`~omnikit.layers.Decoder` the keys and values of all ranks are gathered (differentiably:
the backward sums each rank's key/value gradients back to it) and the causal mask compares global
positions, so outputs, loss and gradients equal one process::

    mesh = build_mesh(dp_shard=2, cp=2)
    parallelize(model, mesh)                       # FSDP over dp_shard x cp, attention over cp
    ids = data_shard(batch, mesh)                  # cp ranks read the same items ...
    index = cp_positions(ids.shape[1], mesh["cp"])  # ... and their own positions of them
    logits = model(ids[:, index], positions=index)

On the CPU the gathered keys are put in position order and each of the rank's two pieces attends
with no mask (:mod:`omnikit.layers.attention_blockwise`: the keys before the piece in one unmasked
call, the piece itself by the kernel's causal path, merged by log-sum-exp); elsewhere a
``(T / cp, T)`` causal mask over global positions.

Each rank then holds the keys/values of the whole sequence in one layer at a time (activations and
everything else scale with ``T / cp``). The gradient of a gathered key/value reaches its rank by an
all-reduce (gloo has no reduce-scatter).

The Gated DeltaNet layers of the hybrid stack pass their state instead. Rank ``r``'s input is two
pieces of the sequence, ``r`` and ``2 * cp - 1 - r`` of the ``2 * cp``, each already in natural order
(the load balance reorders whole pieces, never the tokens inside one), so the layer runs them as
two batch items. Each piece's recurrence is affine in the state entering it (``S_out = P S_in + B``,
:func:`~omnikit.layers.linear_attention.gated_delta_rule_transition`): every rank computes ``(P, B)``
of its pieces from a zero state in parallel, the ``(d_k, d_k + d_v)`` pairs are all-gathered, every
rank combines them in natural order (``2 * cp`` small products) into the states entering its own
pieces and corrects its outputs (``o = o0 + basis @ S_in``). The short causal convolution reads the
last ``conv_size - 1`` inputs of the pieces before, gathered the same way. Both gathers are
differentiable, so each layer's work, activations and gradients split over the ranks.

An omni Thinker (a model declaring ``context_parallel_entry``) takes the whole prompt on every rank: its
media towers encode a round-robin share of the items and gather the tokens back (:meth:`ContextParallel.gather_rows`,
:mod:`omnikit.fusion.media_share`), and :meth:`ContextParallel.shard_fused` keeps this rank's positions, media
tokens and deepstack features. Not supported:
padding masks, packed sequences and sliding windows under cp.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from omnikit.layers.attention import Attention
from omnikit.layers.decoder import Decoder
from omnikit.layers.hybrid import HybridDecoder
from omnikit.layers.linear_attention import GatedDeltaNet, gated_delta_rule_transition
from omnikit.outputs import EncoderOutput
from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError

__all__ = ["ContextParallel", "apply_context_parallel", "cp_media_rows", "cp_positions"]


def cp_positions(length: int, mesh: DeviceMesh | tuple[int, int]) -> torch.Tensor:
    """Global position ids ``(length / cp,)`` of this rank's shard of a ``length``-long sequence:
    chunks ``r`` and ``2 * cp - 1 - r`` of ``2 * cp`` equal chunks. ``mesh``: the ``"cp"`` mesh, or
    ``(rank, cp)``."""
    rank, size = (mesh.get_local_rank(), mesh.size()) if isinstance(mesh, DeviceMesh) else mesh
    if not isinstance(length, int) or length < 1 or length % (2 * size):
        raise OmnikitValueError(
            f"`length` expected a positive multiple of 2 * cp = {2 * size} (load-balanced chunks) but got {length}"
        )
    chunk = length // (2 * size)
    first, last = rank * chunk, (2 * size - 1 - rank) * chunk
    return torch.cat((torch.arange(first, first + chunk), torch.arange(last, last + chunk)))


def cp_media_rows(placeholders: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of a packed media tensor ``(N, D)`` (rows in the order of their placeholders, row-major
    over the batch, as :func:`~omnikit.fusion.early.scatter_media` reads them) whose placeholders
    fall on this rank's positions ``index``: ``placeholders (B, T)`` bool over the whole sequence.
    An item crossing a shard boundary is split between the ranks holding its positions."""
    if placeholders.dtype != torch.bool or placeholders.ndim != 2:
        raise OmnikitValueError(
            f"`placeholders` expected a (B, T) bool tensor but got {placeholders.dtype} {tuple(placeholders.shape)}"
        )
    row = placeholders.flatten().long().cumsum(0).view_as(placeholders) - 1
    return row[:, index][placeholders[:, index]]


def _media_share(value: object, modality: str, rows: torch.Tensor) -> torch.Tensor | EncoderOutput:
    """The media tokens ``rows`` (indices into the ``(N, D)`` rows, item after item) of ``value``: ``(N, D)``
    tokens, or an :class:`~omnikit.outputs.EncoderOutput` (its padding dropped). One that carries per-token
    ``deepstack`` features (a :class:`~omnikit.vision.DeepstackOutput`) keeps the same rows of every level,
    as one item ``(1, n, D)``, so the features follow their placeholders into the shard."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if not isinstance(value, EncoderOutput):
        raise OmnikitTypeError(
            f"context parallel splits media given as (N, D) tokens or an EncoderOutput but `{modality}` is a "
            f"{type(value).__name__}"
        )
    valid = value.mask.to(value.hidden_states.device)
    tokens = value.hidden_states[valid][rows]
    if not getattr(value, "deepstack", None):
        return tokens
    return dataclasses.replace(value, hidden_states=tokens[None], lengths=value.lengths.new_tensor([len(rows)]),
                               deepstack=[level[valid][rows][None] for level in value.deepstack])


def _tensors(share: torch.Tensor | EncoderOutput) -> list[torch.Tensor]:
    """The tensors of a media share (:func:`_media_share`): its tokens and any deepstack features."""
    return [share] if isinstance(share, torch.Tensor) else [share.hidden_states, *share.deepstack]


class _Gather(torch.autograd.Function):
    """All-gather along ``dim`` (rank order: ``(..., T, ...)`` -> ``(..., cp * T, ...)``); backward:
    all-reduce the gathered gradient and keep this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup, dim: int) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.dim, ctx.length = group, dist.get_rank(group), dim, x.shape[dim]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad.narrow(ctx.dim, ctx.rank * ctx.length, ctx.length), None, None


class ContextParallel:
    """The ``context_parallel`` hook :func:`apply_context_parallel` sets: an :class:`~omnikit.layers.Attention`
    gathers every cp rank's keys and values and masks them by global position (:meth:`gather`), a
    :class:`~omnikit.layers.linear_attention.GatedDeltaNet` passes its state (:meth:`conv_history`,
    :meth:`delta_rule`), an :class:`~omnikit.fusion.OmniThinker` encodes its share of the media items
    (:meth:`gather_rows`) and keeps this rank's share of its prompt (:meth:`shard_fused`)."""

    def __init__(self, mesh: DeviceMesh) -> None:
        self.group, self.rank, self.size = mesh.get_group(), mesh.get_local_rank(), mesh.size()

    def local_positions(self, length: int) -> torch.Tensor:
        """This rank's global positions when each rank holds ``length``."""
        return cp_positions(length * self.size, (self.rank, self.size))

    def shard_fused(
        self, input_ids: torch.Tensor, fused: Any, placeholders: dict[str, int]
    ) -> tuple[torch.Tensor, Any]:
        """An :class:`~omnikit.fusion.OmniThinker`'s whole prompt ``input_ids (B, T)`` and its ``fused`` inputs (a
        :class:`~omnikit.fusion.FusedInputs`; the strategy floor does not import the fusion floor) ->
        this rank's positions of both: ids, TMRoPE ids and the media tokens (with their deepstack features)
        whose ``placeholders`` (id per modality) fall there (:func:`cp_media_rows`)."""
        index = cp_positions(input_ids.shape[1], (self.rank, self.size)).to(input_ids.device)
        media, absent = {}, fused.absent
        for name, value in fused.media.items():
            rows = cp_media_rows(input_ids == placeholders[name], index)
            share = _media_share(value, name, rows)
            if rows.numel():
                media[name] = share
            else:  # no placeholder of it here: its (empty) share joins the output times zero, so that every rank's
                # tower gets a gradient (zero on this rank) and the data-parallel reductions stay in step
                zero = sum(t.sum() for t in _tensors(share)) * 0
                absent = zero if absent is None else absent + zero
        padding = None if fused.key_padding_mask is None else fused.key_padding_mask[:, index]
        return input_ids[:, index], dataclasses.replace(fused, media=media, positions=fused.positions[..., index],
                                                        key_padding_mask=padding, absent=absent)

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x (n_r, ...)`` (``n_r`` may differ between ranks) in rank order, ``(sum n_r, ...)``;
        differentiable (the backward gives each rank the summed gradient of its own rows). The media towers'
        shares come back this way (:func:`~omnikit.fusion.media_share.encode_share`)."""
        count = torch.tensor([x.shape[0]], device=x.device)
        counts = [torch.empty_like(count) for _ in range(self.size)]
        dist.all_gather(counts, count, group=self.group)
        sizes = [int(c) for c in counts]
        padded = torch.cat((x, x.new_zeros(max(*sizes, 1) - x.shape[0], *x.shape[1:])))
        every = _Gather.apply(padded[None], self.group, 0)  # (cp, max rows, ...)
        return torch.cat([every[r, :n] for r, n in enumerate(sizes)])

    def _pieces(self, local: torch.Tensor) -> list[torch.Tensor]:
        """``local (2B, ...)`` (this rank's two pieces of each of ``B`` sequences, rows ``2b, 2b + 1``) ->
        every rank's pieces, gathered, as ``2 * cp`` tensors ``(B, ...)`` in natural order."""
        pairs = local.unflatten(0, (-1, 2))
        every = _Gather.apply(pairs.unsqueeze(0), self.group, 0)  # (cp, B, 2, ...)
        return [every[j, :, 0] if j < self.size else every[2 * self.size - 1 - j, :, 1] for j in range(2 * self.size)]

    def _mine(self, per_piece: list[torch.Tensor]) -> torch.Tensor:
        """Natural-order per-piece values ``(B, ...)`` -> this rank's two, as ``(2B, ...)``."""
        return torch.stack((per_piece[self.rank], per_piece[2 * self.size - 1 - self.rank]), dim=1).flatten(0, 1)

    def conv_history(self, u: torch.Tensor, width: int) -> torch.Tensor:
        """The ``width`` inputs ``(2B, C, width)`` before each of this rank's pieces ``u (2B, C, L)`` of
        the short causal convolution (zeros before the sequence), from the pieces before them."""
        tail = min(width, u.shape[-1])
        pieces = self._pieces(u[..., u.shape[-1] - tail:])
        seen = [u.new_zeros(*pieces[0].shape[:-1], width)]
        histories = []
        for piece in pieces:
            histories.append(torch.cat(seen, dim=-1)[..., -width:] if width else seen[0])
            seen.append(piece)
        return self._mine(histories)

    def delta_rule(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                   *, chunk_size: int, backend: str) -> torch.Tensor:
        """The gated delta rule over this rank's pieces (rows ``(2B, H, L, ...)``, arguments of
        :func:`~omnikit.layers.linear_attention.gated_delta_rule`) continuing the state from the pieces
        before each: outputs ``(2B, H, L, d_v)``."""
        o0, basis, final, transition = gated_delta_rule_transition(q, k, v, g, beta, chunk_size=chunk_size,
                                                                   backend=backend)
        d_v = final.shape[-1]
        pieces = self._pieces(torch.cat((final, transition), dim=-1))
        state = pieces[0].new_zeros(*pieces[0].shape[:-1], d_v)
        entering = []
        for piece in pieces:
            entering.append(state)
            add, linear = piece.split([d_v, piece.shape[-1] - d_v], dim=-1)
            state = linear @ state + add
        return (o0 + basis @ self._mine(entering)).to(v.dtype)

    def gather_in_order(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Local ``k``/``v`` ``(B, H_kv, T, D)`` -> all ranks' ``(B, H_kv, cp * T, D)`` in position order and
        this rank's two query pieces ``(first position, length)``, for the mask-free causal attention
        (:func:`~omnikit.layers.attention_blockwise.causal_block_attention`)."""
        piece = k.shape[2] // 2
        keys, values = _Gather.apply(k, self.group, 2), _Gather.apply(v, self.group, 2)
        # natural piece j: rank j's first piece, or rank 2 cp - 1 - j's second
        starts = [(j if j < self.size else 2 * self.size - 1 - j) * 2 * piece + (j >= self.size) * piece
                  for j in range(2 * self.size)]
        keys, values = (torch.cat([t.narrow(2, s, piece) for s in starts], dim=2) for t in (keys, values))
        mine = (self.rank * piece, piece), ((2 * self.size - 1 - self.rank) * piece, piece)
        return keys, values, list(mine)

    def gather(
        self, k: torch.Tensor, v: torch.Tensor, causal: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Local ``k``/``v`` ``(B, H_kv, T, D)`` -> all ranks' ``(B, H_kv, cp * T, D)`` and the mask
        ``(1, 1, T, cp * T)`` of which keys each local query sees (None when not causal)."""
        length = k.shape[2]
        keys, values = _Gather.apply(k, self.group, 2), _Gather.apply(v, self.group, 2)
        if not causal:
            return keys, values, None
        q_pos = self.local_positions(length).to(k.device)
        k_pos = torch.cat([cp_positions(length * self.size, (r, self.size)) for r in range(self.size)]).to(k.device)
        return keys, values, (q_pos[:, None] >= k_pos[None, :])[None, None]


def apply_context_parallel(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Hook every attention layer of every :class:`~omnikit.layers.Decoder` and
    :class:`~omnikit.layers.hybrid.HybridDecoder` in ``model`` to the ``cp`` mesh (encoder towers keep
    attending within their own inputs) and every Gated DeltaNet layer, which then passes its state
    across the ranks; an :class:`~omnikit.fusion.OmniThinker` in ``model`` then takes whole prompts and
    returns this rank's positions. Returns ``model``."""
    decoders = [m for m in model.modules() if isinstance(m, (Decoder, HybridDecoder))]
    if not decoders:
        raise OmnikitTypeError(f"`model` ({type(model).__name__}) has no decoder whose attention 'cp' could split")
    hook = ContextParallel(mesh)
    for decoder in decoders:
        for module in decoder.modules():
            if isinstance(module, (Attention, GatedDeltaNet)):
                module.context_parallel = hook
    for module in model.modules():  # an omni Thinker: whole prompts in, this rank's positions out
        if getattr(type(module), "context_parallel_entry", False):
            module.context_parallel = hook
    return model
