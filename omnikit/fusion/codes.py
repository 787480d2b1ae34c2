"""Codec-code layouts for a Talker: the MusicGen delay pattern and its inverse.

With ``K`` codebooks, the delay pattern shifts codebook ``k`` right by ``k`` steps, so one
decoder step predicts codebook 0 of frame ``s``, codebook 1 of frame ``s - 1`` ... and frame
``f`` is complete after step ``f + K - 1``::

    codes (K=3, F=4)      delayed (K=3, F+K-1=6)
    a0 a1 a2 a3           a0 a1 a2 a3 .  .
    b0 b1 b2 b3    ->     .  b0 b1 b2 b3 .
    c0 c1 c2 c3           .  .  c0 c1 c2 c3       (. = pad)
"""

from __future__ import annotations

import torch

from omnikit.utils.checks import OmnikitValueError, check_tensor

__all__ = ["delay_codes", "undelay_codes"]


def delay_codes(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """``(B, K, F)`` -> ``(B, K, F + K - 1)`` with codebook ``k`` shifted right by ``k``."""
    check_tensor(codes, "codes", ndim=3, floating=False)
    batch, k, frames = codes.shape
    out = codes.new_full((batch, k, frames + k - 1), pad)
    for i in range(k):
        out[:, i, i : i + frames] = codes[:, i]
    return out


def undelay_codes(delayed: torch.Tensor) -> torch.Tensor:
    """``(B, K, S, ...)`` (S >= K - 1) -> ``(B, K, S - K + 1, ...)``: the inverse of :func:`delay_codes`
    (trailing dims, such as per-step logits, ride along)."""
    check_tensor(delayed, "delayed", ndim=(3, 4))
    k = delayed.shape[1]
    frames = delayed.shape[2] - k + 1
    if frames < 0:
        raise OmnikitValueError(
            f"`delayed` expected at least {k - 1} steps for {k} codebooks but got {delayed.shape[2]}"
        )
    return torch.stack([delayed[:, i, i : i + frames] for i in range(k)], dim=1)
