"""Count the collectives of a step, and their bytes: ``CommDebugMode`` with a byte tally.

::

    with CommBytesMode() as comm:
        loss_fn(model(batch)).backward()
    comm.get_comm_counts()   # {op: count}, as CommDebugMode
    comm.bytes_by_op         # {op name: bytes}: the full buffer of every call
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.debug import CommDebugMode
from torch.distributed.tensor.debug._comm_mode import NATIVE_TO_PY_MAPPING, c10d_collective_ops
from torch.utils._pytree import tree_leaves

__all__ = ["CommBytesMode"]


class CommBytesMode(CommDebugMode):
    """:class:`~torch.distributed.tensor.debug.CommDebugMode` that also adds up, per collective op,
    the bytes of each call's full buffer: the gathered output of an all-gather, the reduced input of
    a reduce-scatter or all-reduce, the sent buffer of an all-to-all (what one rank sends)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_by_op: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        packet = getattr(func, "_overloadpacket", None)
        counted = packet in self.comm_registry or packet in c10d_collective_ops
        if counted and out is not NotImplemented and not any(t is DTensor for t in types):
            packet = NATIVE_TO_PY_MAPPING.get(packet, packet)
            leaves = tree_leaves((args, kwargs))
            sizes = [t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor)]
            full = max(sizes, default=0)
            if "all_gather" in str(packet) and len(sizes) == 1:  # functional form: (shard, ..., group_size, ...)
                full *= [a for a in leaves if isinstance(a, int)][-1]
            self.bytes_by_op[str(packet)] += full
        return out

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_op.values())
