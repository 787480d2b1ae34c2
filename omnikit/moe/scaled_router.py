"""Gemma 4's router: RMS-normalised, scaled tokens, softmax over experts, renormalised top-k
weights multiplied by a learned per-expert scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.layers.norm import RMSNorm
from omnikit.moe.router import Routing
from omnikit.utils.checks import OmnikitValueError, check_positive

__all__ = ["ScaledNormRouter"]


class ScaledNormRouter(nn.Module):
    """``x (N, dim) -> Routing``: ``logits = weight @ (rms(x) * scale / sqrt(dim))``; softmax
    scores; the ``top_k`` best renormalised to sum to 1, then times ``per_expert_scale[e]``.

    Parameters: ``weight (E, dim)``, ``scale (dim,)``, ``per_expert_scale (E,)``. Kept float32
    under ``create_model(dtype=bf16)``; a drop-in ``router=`` of :class:`~omnikit.moe.MoE`.
    """

    keep_fp32 = True

    def __init__(self, dim: int, num_experts: int, top_k: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_experts, "num_experts")
        check_positive(top_k, "top_k")
        if top_k > num_experts:
            raise OmnikitValueError(f"`top_k` expected at most num_experts={num_experts} but got {top_k}")
        self.num_experts, self.top_k = num_experts, top_k
        self.norm = RMSNorm(dim, eps, scale=False)
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.normal_(self.weight, std=dim**-0.5)
        self.scale = nn.Parameter(torch.ones(dim))
        self.per_expert_scale = nn.Parameter(torch.ones(num_experts))

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (N, dim)`` -> float32 ``(logits, scores)``, each ``(N, E)``."""
        with torch.autocast(x.device.type, enabled=False):
            h = self.norm(x.float()) * self.scale.float() * self.scale.shape[0] ** -0.5
            logits = F.linear(h, self.weight.float())
        return logits, logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> Routing:
        logits, scores = self.score(x)
        weight, index = scores.topk(self.top_k, dim=-1)
        weight = weight / weight.sum(dim=-1, keepdim=True) * self.per_expert_scale.float()[index]
        return Routing(logits, scores, index, weight)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, top_k={self.top_k}"
