"""``nn.Linear`` whose float32 CPU matmuls run on oneDNN instead of the BLAS ``F.linear`` calls.

On the project's CPU (an AMD EPYC with AVX-512) PyTorch's ``F.linear`` goes through MKL's
``sgemm``, which runs about half as fast there as oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``,
the kernel PyTorch's own compiler emits for CPU linears): measured 1.5-2.3x faster, forward and both
backward products, from 16 x 256 -> 704 to 2048 x 1024 -> 2816 (``benchmarks/bench_linear.py``). Results are
the same float32 products summed in another order (relative differences ~1e-6).

:func:`linear` takes the oneDNN path for plain (not distributed) float32 CPU tensors with at least
:data:`MIN_ROWS` rows and :data:`MIN_MACS` multiply-adds, or, outside autograd, any rows against a weight
of at least :data:`MIN_STREAMED_WEIGHT` elements (a large model's decoding step, whose weights stream from
memory), outside tracing and autocast; ``F.linear`` otherwise (a small model's decoding steps, where MKL's
matrix-vector kernel is faster with the weights in cache; tiny products, where oneDNN's fixed cost per call
shows; CUDA, half precision, DTensor weights, ``torch.compile``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["MIN_MACS", "MIN_ROWS", "MIN_STREAMED_WEIGHT", "Linear", "linear", "onednn_linear", "onednn_serves"]

#: Fewer rows than this (decoding steps) keep ``F.linear`` unless the weight streams from memory
#: (:data:`MIN_STREAMED_WEIGHT`): with a small model's weights in cache MKL's few-row kernels are the faster.
MIN_ROWS = 4
#: Products of fewer multiply-adds than this (rows x in x out) keep the BLAS call: oneDNN's fixed cost per call
#: (~20 us) outweighs its faster inner loop below about two million (a tiny model's step, say).
MIN_MACS = 1 << 21
#: Outside autograd, a weight of at least this many elements (8 MiB in float32) takes oneDNN whatever the rows:
#: a decoding step streams such weights from memory (a model holding several is larger than the cache), and
#: streamed, one to three rows measured 1.2-2.4x faster on oneDNN from 0.5M elements
#: (``benchmarks/bench_linear.py --rows``). Smaller weights keep MKL: in cache (a small model) one or two rows
#: measured 0.3-0.9x on oneDNN.
MIN_STREAMED_WEIGHT = 1 << 21

_PLAIN = (torch.Tensor, nn.Parameter)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x (M, K) @ weight (N, K)^T + bias`` on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``x (M, K) -> (M, N)`` with oneDNN in forward and for both input and weight gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        big = x.shape[0] * x.shape[1] * weight.shape[0] >= MIN_MACS
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # grad @ weight
            grad_x = onednn_linear(grad, weight.t(), None) if big else grad.mm(weight)
        if ctx.needs_input_grad[1]:  # grad^T @ x
            grad_w = onednn_linear(grad.t(), x.t(), None) if big else grad.t().mm(x)
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def onednn_serves(*tensors: torch.Tensor | None) -> bool:
    """Whether oneDNN's float32 matmul may run on these operands (``None`` entries ignored): plain (not
    distributed) float32 CPU tensors, outside tracing, autocast and functorch transforms. Sizes are the
    caller's to check, after this call's own first test, of tracing (traced sizes may be symbolic)."""
    if torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is not None and not (t.device.type == "cpu" and t.dtype == torch.float32 and type(t) in _PLAIN):
            return False
    return (
        not torch.is_autocast_enabled("cpu") and not torch._C._are_functorch_transforms_active()
        and torch.backends.mkldnn.is_available()
    )


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if torch.compiler.is_compiling():  # first: traced sizes may be symbols no comparison can guard on
        return False
    if x.dim() < 2 or x.numel() == 0:
        return False
    sized = (  # the sizes next: they turn a small model's one-row decoding products away cheapest
        (x.numel() >= MIN_ROWS * x.shape[-1] and x.numel() * weight.shape[0] >= MIN_MACS)
        or (weight.numel() >= MIN_STREAMED_WEIGHT and not torch.is_grad_enabled())
    )
    return sized and onednn_serves(x, weight, bias)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: ``x (..., K)``, ``weight (N, K)``, ``bias (N,)`` -> ``(..., N)``, on
    oneDNN where that is faster (see the module docstring), with the same autograd (first derivatives)."""
    if not _use_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    out = _OneDNNLinear.apply(rows, weight, bias) if needs_grad else onednn_linear(rows, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and initialisation) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
