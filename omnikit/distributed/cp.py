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

Each rank then holds the keys/values of the whole sequence in one layer at a time (activations and
everything else scale with ``T / cp``). The gradient of a gathered key/value reaches its rank by an
all-reduce (gloo has no reduce-scatter). The Gated DeltaNet layers of the hybrid stack gather their
input and run the exact recurrence over the whole sequence on every rank, keeping their own
positions (simple and exact; a state passed rank to rank, which would split that layer's work too,
is not implemented). Not supported: padding masks, packed sequences and sliding windows under cp.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from omnikit.layers.attention import Attention
from omnikit.layers.decoder import Decoder
from omnikit.layers.hybrid import HybridDecoder
from omnikit.layers.linear_attention import GatedDeltaNet
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


class _GatherSequence(torch.autograd.Function):
    """All-gather along dim 2 (``(B, H, T, D)`` -> ``(B, H, cp * T, D)``, rank order); backward:
    all-reduce the gathered gradient and keep this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.length = group, dist.get_rank(group), x.shape[2]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad.narrow(2, ctx.rank * ctx.length, ctx.length), None


class ContextParallel:
    """An :class:`~omnikit.layers.Attention` hook: gathers every cp rank's keys and values and masks
    them by global position (set as ``attention.context_parallel`` by :func:`apply_context_parallel`)."""

    def __init__(self, mesh: DeviceMesh) -> None:
        self.group, self.rank, self.size = mesh.get_group(), mesh.get_local_rank(), mesh.size()

    def local_positions(self, length: int) -> torch.Tensor:
        """This rank's global positions when each rank holds ``length``."""
        return cp_positions(length * self.size, (self.rank, self.size))

    def gather_sequence(self, module: nn.Module, args: tuple) -> tuple:
        """Forward pre-hook of a linear-attention layer: its input ``(B, T, dim)`` becomes every rank's,
        in global order, so each rank runs the exact recurrence over the whole sequence."""
        x, *rest = args
        gathered = _GatherSequence.apply(x.unsqueeze(1), self.group).squeeze(1)
        total = x.shape[1] * self.size
        order = torch.cat([cp_positions(total, (r, self.size)) for r in range(self.size)]).argsort()
        return (gathered[:, order.to(x.device)], *rest)

    def keep_local(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        """Forward hook after :meth:`gather_sequence`: this rank's positions of the output."""
        return out[:, self.local_positions(out.shape[1] // self.size).to(out.device)]

    def gather(
        self, k: torch.Tensor, v: torch.Tensor, causal: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Local ``k``/``v`` ``(B, H_kv, T, D)`` -> all ranks' ``(B, H_kv, cp * T, D)`` and the mask
        ``(1, 1, T, cp * T)`` of which keys each local query sees (None when not causal)."""
        length = k.shape[2]
        keys, values = _GatherSequence.apply(k, self.group), _GatherSequence.apply(v, self.group)
        if not causal:
            return keys, values, None
        q_pos = self.local_positions(length).to(k.device)
        k_pos = torch.cat([cp_positions(length * self.size, (r, self.size)) for r in range(self.size)]).to(k.device)
        return keys, values, (q_pos[:, None] >= k_pos[None, :])[None, None]


def apply_context_parallel(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Hook every attention layer of every :class:`~omnikit.layers.Decoder` and
    :class:`~omnikit.layers.hybrid.HybridDecoder` in ``model`` to the ``cp`` mesh (encoder towers keep
    attending within their own inputs); a Gated DeltaNet layer gathers its input and keeps its own
    positions of the output. Returns ``model``."""
    decoders = [m for m in model.modules() if isinstance(m, (Decoder, HybridDecoder))]
    if not decoders:
        raise OmnikitTypeError(f"`model` ({type(model).__name__}) has no decoder whose attention 'cp' could split")
    hook = ContextParallel(mesh)
    for decoder in decoders:
        for module in decoder.modules():
            if isinstance(module, Attention):
                module.context_parallel = hook
            elif isinstance(module, GatedDeltaNet):
                module.register_forward_pre_hook(hook.gather_sequence)
                module.register_forward_hook(hook.keep_local)
    return model
