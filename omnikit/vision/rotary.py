"""2-D and 3-D rotary positions for patch grids (image ``(h, w)`` and video ``(t, h, w)``).

Each axis owns a contiguous block of frequencies, with its own frequency ladder
``base ** (-j / n_axis)``. With two axes of ``head_dim / 4`` frequencies each this is the vision
rotary of Qwen2-VL / Qwen2.5-VL; tables follow the "rotate half" convention of
:func:`omnikit.layers.apply_rotary`.
"""

from __future__ import annotations

import torch
from torch import nn

from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["AxialRotaryEmbedding", "grid_positions"]


def grid_positions(
    grid: tuple[int, ...], *, merge_size: int = 1, device: torch.device | None = None
) -> torch.Tensor:
    """Integer positions ``(len(grid), prod(grid))`` of a row-major ``(h, w)`` or ``(t, h, w)`` grid.

    With ``merge_size > 1`` the tokens are listed block by block (each ``m x m`` spatial block
    contiguous), the order in which :class:`~omnikit.vision.PatchMerger` groups them.
    """
    if len(grid) not in (2, 3) or any(g < 1 for g in grid):
        raise OmnikitValueError(f"`grid` expected (h, w) or (t, h, w) positive sizes but got {grid}")
    axes = torch.meshgrid(*(torch.arange(g, device=device) for g in grid), indexing="ij")
    pos = torch.stack(axes)  # (A, *grid)
    if merge_size > 1:
        *lead, h, w = grid
        if h % merge_size or w % merge_size:
            raise OmnikitValueError(f"`grid` spatial size {h}x{w} is not divisible by merge_size={merge_size}")
        m = merge_size
        pos = pos.view(len(grid), *lead, h // m, m, w // m, m)
        pos = pos.movedim(-3, -2)  # (..., h/m, w/m, m, m)
    return pos.reshape(len(grid), -1)


class AxialRotaryEmbedding(nn.Module):
    """Cos/sin tables for 2-D or 3-D grid positions.

    Args:
        head_dim: per-head width (divisible by 2 * number of axes is not required, only even).
        axes: 2 (``h, w``) or 3 (``t, h, w``).
        sections: frequencies per axis, summing to ``head_dim // 2``; default an even split
            (the temporal axis gets the remainder).
        base: rotary base (theta).

    ``forward(positions)`` takes ``(A, N)`` or ``(A, B, N)`` ints and returns ``(cos, sin)``,
    each ``(B or 1, N, head_dim)`` float32.
    """

    keep_fp32 = True

    def __init__(
        self, head_dim: int, axes: int = 2, *, sections: tuple[int, ...] | None = None, base: float = 10000.0
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise OmnikitValueError(f"`head_dim` expected an even number but got {head_dim}")
        if axes not in (2, 3):
            raise OmnikitValueError(f"`axes` expected 2 or 3 but got {axes}")
        half = head_dim // 2
        if sections is None:
            share = half // axes
            sections = (half - share * (axes - 1), *([share] * (axes - 1)))
        sections = tuple(int(s) for s in sections)
        if len(sections) != axes or sum(sections) != half or min(sections) < 1:
            raise OmnikitValueError(
                f"`sections` expected {axes} positive ints summing to head_dim // 2 = {half} but got {sections}"
            )
        self.head_dim, self.axes, self.sections, self.base = head_dim, axes, sections, base
        inv_freq = torch.cat([base ** (-torch.arange(s, dtype=torch.float64) / s) for s in sections]).float()
        axis = torch.cat([torch.full((s,), a, dtype=torch.long) for a, s in enumerate(sections)])
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("axis_of_frequency", axis, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor(positions, "positions", ndim=(2, 3), floating=False)
        if positions.shape[0] != self.axes:
            raise OmnikitValueError(
                f"`positions` expected {self.axes} position axes first but got shape {tuple(positions.shape)}"
            )
        if positions.ndim == 2:
            positions = positions[:, None]
        with torch.autocast(device_type=positions.device.type, enabled=False):
            chosen = positions.float().index_select(0, self.axis_of_frequency)  # (F, B, N)
            freqs = chosen.permute(1, 2, 0) * self.inv_freq.float()
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos(), angles.sin()

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, axes={self.axes}, sections={self.sections}, base={self.base}"
