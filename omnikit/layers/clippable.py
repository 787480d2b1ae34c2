"""A linear layer whose input and output are clamped to bounds stored with the weights (Gemma 4's
audio and vision towers). It is an ``nn.Linear``: peft's LoRA and the library's tensor-parallel
plans attach to it as to any linear layer."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClippableLinear"]


class ClippableLinear(nn.Linear):
    """``clamp(linear(clamp(x, input_min, input_max)), output_min, output_max)``; ``(..., in) -> (..., out)``.

    The four bounds are 0-dim float32 buffers saved with the weights (``+-inf``, i.e. no clipping,
    until a checkpoint sets them); ``clipped=False`` makes a plain linear layer without them. A LoRA
    adapter wrapping this layer adds its update outside the clamps (peft calls the layer, then adds
    ``B A x``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, clipped: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.clipped = clipped
        inf = float("inf")
        for name, value in (("input_min", -inf), ("input_max", inf), ("output_min", -inf), ("output_max", inf)):
            self.register_buffer(name, torch.tensor(value) if clipped else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.clipped:
            return super().forward(x)
        # maximum/minimum with 0-dim bounds (torch.clamp with tensor bounds specialises traced shapes)
        x = torch.minimum(torch.maximum(x, self.input_min.to(x.dtype)), self.input_max.to(x.dtype))
        y = super().forward(x)
        return torch.minimum(torch.maximum(y, self.output_min.to(y.dtype)), self.output_max.to(y.dtype))
