"""Count what operators allocate: a ``TorchDispatchMode`` for memory bounds in tests and benchmarks."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["LargestAllocation"]


class LargestAllocation(TorchDispatchMode):
    """Inside ``with LargestAllocation() as mode:``, ``mode.largest`` is the most elements and
    ``mode.largest_bytes`` the most bytes of any tensor an operator returns in fresh storage (views and
    in-place writes of its inputs are not allocations). Buffers a kernel allocates internally and
    frees before returning (e.g. the tiles of a flash kernel) are not seen."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.largest_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.numel())
                self.largest_bytes = max(self.largest_bytes, t.numel() * t.element_size())
        return out
