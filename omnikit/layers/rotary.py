"""Rotary position embeddings: 1-D RoPE and multimodal M-RoPE (time, height, width).

Both use the "rotate half" convention of Llama/Qwen: the head dim is split in two halves and
frequency ``j`` rotates the pair ``(x[j], x[j + head_dim/2])``.

M-RoPE gives each frequency one of three position axes (t, h, w):

- contiguous split (Qwen2-VL / Qwen2.5-Omni): ``sections=(16, 24, 24)`` gives the first 16
  frequencies the temporal id, the next 24 the height id, the last 24 the width id;
- interleaved split (Qwen3-VL / Qwen3-Omni): frequencies cycle t, h, w, t, h, w ... until the
  h and w sections are used up, the rest are temporal.

With identical t, h and w ids, M-RoPE equals 1-D RoPE, so text tokens need nothing special.

Partial rotary (Qwen3-Next, Qwen3.5: a quarter of the head): ``rotary_dim < head_dim`` rotates
only the first ``rotary_dim`` dims of each head (the pairs ``(x[j], x[j + rotary_dim/2])``) and
passes the rest through; M-RoPE sections then split the ``rotary_dim / 2`` frequencies.
"""

from __future__ import annotations

import torch
from torch import nn

from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["RotaryEmbedding", "apply_rotary", "mrope_axis_of_frequency"]


def mrope_axis_of_frequency(sections: tuple[int, int, int], interleaved: bool) -> torch.Tensor:
    """Which position axis (0=t, 1=h, 2=w) drives each of the ``sum(sections)`` frequencies."""
    n = sum(sections)
    if not interleaved:
        return torch.cat([torch.full((s,), axis, dtype=torch.long) for axis, s in enumerate(sections)])
    axis = torch.zeros(n, dtype=torch.long)
    j = torch.arange(n)
    axis[(j % 3 == 1) & (j < 3 * sections[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * sections[2])] = 2
    return axis


class RotaryEmbedding(nn.Module):
    """Cos/sin tables for rotary embeddings, 1-D or multimodal.

    Args:
        head_dim: per-head width (even).
        base: rotary base (theta).
        sections: ``(t, h, w)`` frequency counts for M-RoPE, summing to ``rotary_dim // 2``;
            ``None`` for 1-D RoPE.
        interleaved: M-RoPE frequency split, contiguous (False) or interleaved (True).
        rotary_dim: rotated dims per head (even, at most ``head_dim``; default ``head_dim``).
        fraction: proportional partial rotary (Gemma 4's global layers): only the first
            ``int(fraction * rotary_dim) // 2`` frequencies rotate (their exponents still over the whole
            ``rotary_dim``); the others are zero, so those dims pass unrotated.

    ``forward(positions)`` takes int positions ``(T,)`` or ``(B, T)``, or ``(3, B, T)``
    (t, h, w) ids when ``sections`` is set, and returns ``(cos, sin)``, each ``(B, T, rotary_dim)``
    float32.
    """

    keep_fp32 = True

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        *,
        sections: tuple[int, int, int] | None = None,
        interleaved: bool = False,
        rotary_dim: int | None = None,
        fraction: float = 1.0,
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise OmnikitValueError(f"`head_dim` expected an even number but got {head_dim}")
        if not 0.0 <= fraction <= 1.0:
            raise OmnikitValueError(f"`fraction` expected a float in [0, 1] but got {fraction}")
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
            raise OmnikitValueError(
                f"`rotary_dim` expected an even number in (0, head_dim={head_dim}] but got {rotary_dim}"
            )
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim
        self.base = base
        self.fraction = fraction
        self.sections = tuple(sections) if sections is not None else None
        self.interleaved = interleaved
        inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
        inv_freq[int(fraction * rotary_dim // 2):] = 0.0
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if self.sections is not None:
            if len(self.sections) != 3 or sum(self.sections) != rotary_dim // 2:
                width = "head_dim" if rotary_dim == head_dim else "rotary_dim"
                raise OmnikitValueError(
                    f"`sections` expected three ints summing to {width} // 2 = {rotary_dim // 2} "
                    f"but got {self.sections}"
                )
            axis = mrope_axis_of_frequency(self.sections, interleaved)
            self.register_buffer("axis_of_frequency", axis, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor(positions, "positions", ndim=(1, 2, 3), floating=None)
        if positions.ndim == 3 and self.sections is None:
            raise OmnikitValueError(
                f"`positions` of shape {tuple(positions.shape)} are (3, B, T) M-RoPE ids but this rotary "
                "embedding is 1-D (sections=None)"
            )
        if positions.ndim == 3 and positions.shape[0] != 3:
            raise OmnikitValueError(f"`positions` expected shape (3, B, T) but got {tuple(positions.shape)}")
        if positions.ndim == 1:
            positions = positions[None]
        with torch.autocast(device_type=positions.device.type, enabled=False):
            freqs = positions.float()[..., None] * self.inv_freq.float()  # (B, T, D/2) or (3, B, T, D/2)
            if freqs.ndim == 4:
                index = self.axis_of_frequency.view(1, 1, 1, -1).expand(1, *freqs.shape[1:])
                freqs = freqs.gather(0, index).squeeze(0)
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos(), angles.sin()

    def extra_repr(self) -> str:
        mode = "1-D" if self.sections is None else f"sections={self.sections}, interleaved={self.interleaved}"
        partial = (f", rotary_dim={self.rotary_dim}" if self.rotary_dim != self.head_dim else "") + (
            "" if self.fraction == 1.0 else f", fraction={self.fraction}")
        return f"head_dim={self.head_dim}, base={self.base}, {mode}{partial}"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, parts: int = 1, *, heads: int | None = None,
    interleaved: bool = False,
) -> torch.Tensor:
    """Rotate ``x`` of shape ``(B, H, T, D)`` by tables ``cos``/``sin`` of shape ``(B, T, R)``: the first
    ``R <= D`` dims of each head are rotated, the rest pass through (partial rotary).

    ``parts > 1``: the rotated dims split into ``parts`` equal chunks, each rotated on its own
    ("rotate half" within the chunk): multi-axis rotary such as Gemma 4's 2-D vision rotary, whose
    tables hold one axis's angles per chunk. ``heads``: rotate only the first ``heads`` heads (the
    others pass unchanged; Qwen2.5-Omni's DiT rotates one). ``interleaved``: the rotated pairs are
    adjacent, ``(x[2j], x[2j+1])``; those heads come back de-interleaved (even then odd entries), a
    permutation that queries and keys share, so attention scores are unchanged by it.
    """
    if heads is not None:
        rotated = apply_rotary(x[:, :heads], cos, sin, parts, interleaved=interleaved)
        return torch.cat((rotated, x[:, heads:]), dim=1)
    if interleaved:
        x = torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    if cos.dtype != x.dtype:  # tested first: a decoding step's few operator calls count
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return _rotated(x, cos, sin, parts)
    return torch.cat((_rotated(x[..., :rotary_dim], cos, sin, parts), x[..., rotary_dim:]), dim=-1)


def _rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, parts: int) -> torch.Tensor:
    if parts == 1:
        return x * cos + _rotate_half(x) * sin
    return x * cos + _rotate_half(x.unflatten(-1, (parts, x.shape[-1] // parts))).flatten(-2) * sin
