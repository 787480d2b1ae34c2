"""An autograd identity whose backward transforms the gradient (scaled, all-reduced, ...)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["map_grad"]


class _MapGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):  # type: ignore[override]
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.fn(grad), None


def map_grad(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` unchanged in the forward; in the backward, ``fn(gradient)`` flows on to ``x``."""
    return _MapGrad.apply(x, fn)
