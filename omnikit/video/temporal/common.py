"""Shared plumbing of the temporal modules: input checks, temporal positions, contract inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from omnikit.layers.masks import lengths_to_mask
from omnikit.layers.rotary import RotaryEmbedding
from omnikit.testing.contract import ContractInputs
from omnikit.utils.checks import check_finite, check_lengths_or_full, check_tensor

__all__ = [
    "TimedFrameEncoder", "check_frame_tokens", "frame_mask_or_none", "frame_positions", "frame_tokens_contract",
    "zero_padding",
]


def check_frame_tokens(
    tokens: object, lengths: object, dim: int, *, ndim: tuple[int, ...] = (4,), like: nn.Module | None = None,
    steps: tuple[str, str] = ("T", "frames"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``tokens`` ``(B, T, N, dim)`` (or ``(B, T, dim)`` when 3 is in ``ndim``) and the
    per-clip valid counts along ``T``; returns ``(tokens, lengths)`` with lengths defaulting to ``T``.
    ``steps``: what the errors call that axis and its steps (``("N", "tokens")`` for a token sequence).

    Padded frames come back zeroed (replaced, not multiplied), so NaN or inf there can never
    reach valid outputs through attention; valid ones must be finite (eager) and, given ``like`` (the
    module), in its weights' dtype."""
    check_tensor(tokens, "tokens", ndim=ndim, floating=True)
    shape = ("B", steps[0], "N", dim) if tokens.ndim == 4 else ("B", steps[0], dim)
    check_tensor(tokens, "tokens", shape=shape, like=like)
    padded = lengths is not None
    lengths = check_lengths_or_full(lengths, tokens, of="tokens")
    if padded:
        tokens = zero_padding(tokens, lengths)
    check_finite(tokens, "tokens", f"in valid {steps[1]}")
    return tokens, lengths


def frame_positions(
    batch: int, length: int, timestamps: torch.Tensor | None, time_unit: float, device: torch.device
) -> torch.Tensor:
    """Temporal rotary positions: frame numbers ``(1, T)`` (shared by the batch), or
    ``timestamps / time_unit`` ``(B, T)`` when the caller gives the frames' times in seconds
    (``time_unit=0.04``: one position per 40 ms, as TMRoPE)."""
    if timestamps is None:
        return torch.arange(length, device=device)[None]
    check_tensor(timestamps, "timestamps", shape=(batch, length), floating=True)
    return timestamps.to(device=device, dtype=torch.float32) / time_unit


def frame_mask_or_none(lengths: torch.Tensor, length: int) -> torch.Tensor | None:
    """``(B, T)`` bool mask of valid frames, or ``None`` when no clip is padded (the kernels' fast path)."""
    if not torch.compiler.is_compiling() and bool((lengths == length).all()):
        return None  # eager fast path; traced code always masks (no data-dependent branch)
    return lengths_to_mask(lengths, length)


def zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, L, ...)`` with positions ``>= lengths`` set to zero."""
    mask = lengths_to_mask(lengths, x.shape[1]).view(*x.shape[:2], *([1] * (x.ndim - 2)))
    return x.masked_fill(~mask, 0)  # not a product: NaN in padding must not survive


def frame_tokens_contract(lengths: Sequence[int], num_tokens: int, dim: int, seed: int) -> ContractInputs:
    """Contract inputs ``tokens (B, T, N, dim)`` + ``lengths`` in frames."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(len(lengths), max(lengths), num_tokens, dim, generator=g)
    lens = torch.tensor(list(lengths))
    return ContractInputs({"tokens": tokens, "lengths": lens}, lens, {"tokens": 1}, "lengths")


class TimedFrameEncoder(nn.Module):
    """Base of the temporal encoders over frame tokens ``(B, T, N, D)`` whose positions are frame numbers or
    timestamps on a 1-D rotary table: holds ``config`` (its ``dim``, ``num_heads``, ``rope_base`` and
    ``time_unit``), that table, ``output_dim`` and the contract inputs; subclasses add their stacks after
    calling ``super().__init__(config)``."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.rotary = RotaryEmbedding(config.dim // config.num_heads, config.rope_base)
        self.output_dim = config.dim

    def frame_rope(
        self, batch: int, length: int, timestamps: torch.Tensor | None, device: torch.device, per_frame: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary ``(cos, sin)`` of ``T * per_frame`` tokens, the ``per_frame`` tokens of a frame at its
        position (see :func:`frame_positions`)."""
        positions = frame_positions(batch, length, timestamps, self.config.time_unit, device)
        return self.rotary(positions if per_frame == 1 else positions.repeat_interleave(per_frame, dim=1))

    def contract_inputs(self, lengths: Sequence[int], *, seed: int = 0) -> ContractInputs:
        return frame_tokens_contract(lengths, 4, self.config.dim, seed)
