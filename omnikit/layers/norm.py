"""Normalisation layers computed in float32 or wider whatever the input dtype."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import check_choice

__all__ = ["GroupNorm", "LayerNorm", "NormKind", "RMSNorm", "build_norm", "rms_norm_rows"]

NormKind = Literal["rmsnorm", "layernorm", "rmsnorm_zero_centered"]


#: dtypes a norm computes in as they are (see :func:`_compute_dtype`)
_WIDE = (torch.float32, torch.float64)

#: Largest input (elements) an RMS norm on the CPU computes as a mirrored layer norm
#: (:func:`_mirrored_rms_norm`); measured break-even between 2K and 4K elements (1 thread, no autograd).
MIRRORED_MAX_NUMEL = 2048


def _mirrored_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dim of a small CPU input, as a layer norm.

    The row ``[x, -x]`` has mean 0 and (biased) variance ``mean(x^2)``, so the first half of its layer norm
    is ``x``'s RMS norm. On the CPU ``torch.rms_norm`` is a chain of about nine operator calls while
    ``layer_norm`` is one fused kernel: for the rows of a decoding step (a token's hidden state, its query
    and key heads) this chain is most of the norm's cost. Equal to ``torch.rms_norm`` to float rounding
    (relative differences ~3e-7 in float32), gradients too (the mirrored row's mean is 0 whatever ``x``).
    Shapes: ``(..., dim) -> (..., dim)``.
    """
    dim = x.shape[-1]
    mirrored = torch.cat((x, x.neg()), dim=-1)
    return torch.layer_norm(mirrored, (2 * dim,), None, None, eps)[..., :dim] * weight


def _small_on_cpu(x: torch.Tensor) -> bool:
    """``x`` is an eager CPU input small enough for :func:`_mirrored_rms_norm`. Compiling is tested first
    (Inductor fuses ``torch.rms_norm`` itself, and a size test would guard the traced graph)."""
    return not torch.compiler.is_compiling() and x.device.type == "cpu" and x.numel() <= MIRRORED_MAX_NUMEL


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, the input's own dtype for float32 and float64."""
    return torch.promote_types(x.dtype, torch.float32)


class RMSNorm(nn.Module):
    """Root-mean-square norm: ``x / rms(x) * weight`` over the last dim, computed in fp32.

    ``scale=False``: no weight, ``x / rms(x)`` only (Gemma 4's value and router norms).
    ``zero_centered=True`` scales by ``1 + weight`` instead, the weight starting at 0 (Qwen3-Next,
    Qwen3.5, Gemma), so weight decay pulls the scale towards 1.

    Shapes: ``(..., dim) -> (..., dim)``, output in the input's dtype.
    """

    keep_fp32 = True

    def __init__(self, dim: int, eps: float = 1e-6, *, scale: bool = True, zero_centered: bool = False) -> None:
        super().__init__()
        self.eps, self.dim, self.zero_centered = eps, dim, zero_centered
        self.weight = nn.Parameter(torch.zeros(dim) if zero_centered else torch.ones(dim)) if scale else None

    def scale_vector(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The ``(dim,)`` factor the normalised input is multiplied by (``weight`` or ``1 + weight``), in
        ``dtype``; None without a weight."""
        if self.weight is None:
            return None
        weight = self.weight.to(dtype)
        return 1.0 + weight if self.zero_centered else weight

    def plain_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """The weight when it scales ``x`` as it is (no ``1 +``, ``x`` in its float32/float64 dtype): the common
        case, computed without casts; None otherwise."""
        weight = self.weight
        plain = weight is not None and not self.zero_centered and x.dtype == weight.dtype and x.dtype in _WIDE
        return weight if plain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.plain_weight(x)
        if weight is not None:
            # small inputs on the CPU as one fused kernel, with or without autograd (a model gives the same
            # outputs whether or not it records gradients)
            if _small_on_cpu(x):
                return _mirrored_rms_norm(x, weight, self.eps)
            return torch.rms_norm(x, (self.dim,), weight, self.eps)
        wide = _compute_dtype(x)
        weight = self.scale_vector(wide)
        if x.dtype == wide:
            return F.rms_norm(x, (self.dim,), weight, self.eps)
        return F.rms_norm(x.to(wide), (self.dim,), weight, self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        options = ("" if self.weight is not None else ", scale=False") + (", zero_centered=True" if self.zero_centered
                                                                         else "")
        return f"{self.dim}, eps={self.eps}{options}"


def rms_norm_rows(x: torch.Tensor, norms: Sequence[RMSNorm], rows: Sequence[int]) -> torch.Tensor:
    """Several :class:`RMSNorm` s over consecutive rows of one tensor, returned as one tensor: ``x (..., sum(rows),
    dim)``, its first ``rows[0]`` rows normed by ``norms[0]``, the next ``rows[1]`` by ``norms[1]`` ... (queries and
    keys side by side in a fused projection, then rotated in one pass). The norms must have no hooks (their
    ``forward`` is called directly: a decoding step's few operator calls are what this saves); the result equals
    the norms applied one by one. A small CPU input is normed in one mirrored layer norm, each row then scaled
    by its own norm's weight."""
    weights = [norm.plain_weight(x) for norm in norms]
    if _small_on_cpu(x) and all(w is not None for w in weights) and len({norm.eps for norm in norms}) == 1:
        per_row = torch.cat([w.expand(count, w.shape[0]) for w, count in zip(weights, rows, strict=True)])
        return _mirrored_rms_norm(x, per_row, norms[0].eps)
    parts = x.split_with_sizes(list(rows), dim=-2)
    return torch.cat([norm.forward(part) for norm, part in zip(norms, parts, strict=True)], dim=-2)


class _Float32Norm(nn.Module):
    """Mixin: the torch norm it precedes runs in fp32 (parameters kept fp32), output in the input's dtype."""

    keep_fp32 = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In the parameters' dtype (float32, or wider when the model was cast so), never narrower than float32."""
        compute = self.weight.dtype if self.weight is not None else _compute_dtype(x)
        if x.dtype == compute:
            return super().forward(x)
        return super().forward(x.to(compute)).to(x.dtype)


class LayerNorm(_Float32Norm, nn.LayerNorm):
    """``nn.LayerNorm`` computed in fp32 and returned in the input's dtype."""


class GroupNorm(_Float32Norm, nn.GroupNorm):
    """``nn.GroupNorm`` ``(B, C, T)`` computed in fp32 and returned in the input's dtype."""


def build_norm(kind: NormKind, dim: int, eps: float = 1e-6) -> nn.Module:
    """``"rmsnorm"`` -> :class:`RMSNorm`, ``"rmsnorm_zero_centered"`` -> :class:`RMSNorm` scaling by
    ``1 + weight``, ``"layernorm"`` -> :class:`LayerNorm`."""
    check_choice(kind, "norm", ("rmsnorm", "layernorm", "rmsnorm_zero_centered"))
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps)
    return RMSNorm(dim, eps, zero_centered=kind == "rmsnorm_zero_centered")
