"""Patch grids ``(t, h, w)`` of packed visual items, read as host ints.

A Qwen-VL processor describes the items it packs into ``pixel_values`` by an ``(n, 3)`` int tensor
of patch grids (``image_grid_thw``, ``video_grid_thw``). The grids decide tensor shapes: the patch
count of each item, its windows, its position tables. The vision towers therefore take them as
host ints, either as that tensor (read once: one host synchronisation, and a graph break when
traced) or as a sequence of ``(t, h, w)`` ints, which costs no read and which ``torch.compile``
specialises on like on shapes::

    grids = image_grid_thw.tolist()        # once, in the data pipeline
    tokens = tower.forward_patches(pixel_values, grids)

:func:`host_grids` does that for a processor batch (the keywords of the omni Thinkers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any, Union

import torch

from omnikit.utils.checks import OmnikitTypeError, OmnikitValueError, check_tensor

__all__ = ["GRID_KEYS", "Grid", "PatchGrids", "check_grids", "grid_list", "host_grids"]

Grid = tuple[int, int, int]
#: An ``(n, 3)`` int tensor or a sequence of ``(t, h, w)`` ints.
PatchGrids = Union[torch.Tensor, Sequence[Sequence[int]]]  # noqa: UP007  (a runtime alias)
#: The processor's keywords that hold patch grids.
GRID_KEYS = ("image_grid_thw", "video_grid_thw")


def grid_list(grid_thw: PatchGrids, name: str = "grid_thw") -> tuple[Grid, ...]:
    """The grids as a tuple of ``(t, h, w)`` Python ints (a tensor is read once; NumPy arrays and ints of
    any integral type are taken too)."""
    if isinstance(grid_thw, torch.Tensor):
        check_tensor(grid_thw, name, shape=("n", 3), floating=False)
        return tuple((t, h, w) for t, h, w in grid_thw.tolist())
    if hasattr(grid_thw, "tolist"):  # a NumPy array
        grid_thw = grid_thw.tolist()
    if isinstance(grid_thw, (str, bytes)) or not isinstance(grid_thw, Sequence):
        raise OmnikitTypeError(
            f"`{name}` expected an (n, 3) int tensor or a sequence of (t, h, w) ints but got {type(grid_thw).__name__}"
        )
    rows = tuple(tuple(row) if isinstance(row, Sequence) else (row,) for row in grid_thw)
    if any(len(row) != 3 or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in row) for row in rows):
        raise OmnikitTypeError(f"`{name}` expected (t, h, w) ints per item but got {list(grid_thw)!r}")
    return tuple((int(t), int(h), int(w)) for t, h, w in rows)


def check_grids(grids: Sequence[Grid], *, merge_size: int, rows: int, name: str = "grid_thw") -> None:
    """Positive grids whose ``h`` and ``w`` are multiples of ``merge_size`` and whose patches add up to ``rows``
    (the ``pixel_values`` rows)."""
    if any(v < 1 for grid in grids for v in grid) or any(h % merge_size or w % merge_size for _, h, w in grids):
        raise OmnikitValueError(
            f"`{name}` expected positive (t, h, w) with h and w multiples of merge_size={merge_size} but got "
            f"{[list(g) for g in grids]}"
        )
    total = sum(t * h * w for t, h, w in grids)
    if total != rows:
        raise OmnikitValueError(
            f"`pixel_values` expected {total} rows (sum of t*h*w over `{name}`) but got {rows}"
        )


def host_grids(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a processor batch (``pixel_values``, ``image_grid_thw``, ...) whose grids (:data:`GRID_KEYS`)
    are tuples of ``(t, h, w)`` ints: read here once (in a data loader, say), they cost the model no host
    read, and ``torch.compile(model, fullgraph=True)`` specialises on them like on shapes."""
    return {key: grid_list(value, key) if key in GRID_KEYS and value is not None else value
            for key, value in inputs.items()}
