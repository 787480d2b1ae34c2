"""Token-choice top-k router: logits in float32, softmax or sigmoid scores, optional balancing bias."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnikit.utils.checks import OmnikitValueError, check_choice, check_positive

__all__ = ["Routing", "TopKRouter"]


@dataclass
class Routing:
    """One routing decision for ``N`` tokens over ``E`` experts.

    Attributes:
        logits: ``(N, E)`` float32 router logits.
        scores: ``(N, E)`` float32 softmax probabilities or sigmoid scores.
        expert_index: ``(N, k)`` int64 chosen experts (token choice).
        weight: ``(N, k)`` float32 combine weight of each choice.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    expert_index: torch.Tensor
    weight: torch.Tensor


class TopKRouter(nn.Module):
    """Score every expert for every token and keep the ``top_k`` best.

    Args:
        dim: token width.
        num_experts: experts to choose from.
        top_k: experts per token.
        scoring: ``"softmax"`` (softmax over experts, then top-k: Qwen, Mixtral, Switch) or
            ``"sigmoid"`` (independent sigmoid scores: DeepSeek-V3).
        normalize: rescale the ``top_k`` weights of a token to sum to 1 (``norm_topk_prob``).
        scale: multiply the final weights (DeepSeek-V3's ``routed_scaling_factor``).
        balance_bias: keep an ``expert_bias`` buffer ``(E,)`` added to the scores for *selection
            only* (auxiliary-loss-free balancing, DeepSeek-V3); update it with :meth:`update_bias`.

    The router stays float32 under ``create_model(dtype=bf16)`` (``keep_fp32``) and computes its
    logits in float32 under autocast.
    """

    keep_fp32 = True

    def __init__(
        self,
        dim: int,
        num_experts: int,
        top_k: int,
        *,
        scoring: str = "softmax",
        normalize: bool = True,
        scale: float = 1.0,
        balance_bias: bool = False,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim")
        check_positive(num_experts, "num_experts")
        check_positive(top_k, "top_k")
        check_choice(scoring, "scoring", ("softmax", "sigmoid"))
        if top_k > num_experts:
            raise OmnikitValueError(f"`top_k` expected at most num_experts={num_experts} but got {top_k}")
        self.num_experts, self.top_k, self.scoring, self.normalize, self.scale = (
            num_experts, top_k, scoring, normalize, scale
        )
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.uniform_(self.weight, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        self.expert_bias: torch.Tensor | None
        self.register_buffer("expert_bias", torch.zeros(num_experts) if balance_bias else None)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (N, dim)`` -> float32 ``(logits, scores)``, each ``(N, E)``."""
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(x.float(), self.weight.float())
        scores = logits.softmax(dim=-1) if self.scoring == "softmax" else logits.sigmoid()
        return logits, scores

    def forward(self, x: torch.Tensor) -> Routing:
        """``x: (N, dim)`` -> :class:`Routing` with the ``top_k`` experts of every token."""
        logits, scores = self.score(x)
        if self.expert_bias is None:
            weight, index = scores.topk(self.top_k, dim=-1)
        else:
            index = (scores + self.expert_bias).topk(self.top_k, dim=-1).indices
            weight = scores.gather(1, index)
        if self.normalize:
            weight = weight / weight.sum(dim=-1, keepdim=True)
        if self.scale != 1.0:
            weight = weight * self.scale
        return Routing(logits, scores, index, weight)

    @torch.no_grad()
    def update_bias(self, tokens_per_expert: torch.Tensor, rate: float = 1e-3) -> None:
        """Auxiliary-loss-free balancing step: raise the bias of under-loaded experts, lower the others.

        ``expert_bias += rate * sign(mean_load - load)``, with ``tokens_per_expert`` ``(E,)`` the
        load of one or more steps (``MoEAux.tokens_per_expert``). Call it outside the graph, e.g.
        after ``optimizer.step()``.
        """
        if self.expert_bias is None:
            raise OmnikitValueError("update_bias needs a router built with `balance_bias=True`")
        if tokens_per_expert.shape != (self.num_experts,):
            raise OmnikitValueError(
                f"`tokens_per_expert` expected shape ({self.num_experts},) but got {tuple(tokens_per_expert.shape)}"
            )
        load = tokens_per_expert.float().to(self.expert_bias.device)
        self.expert_bias.add_(torch.sign(load.mean() - load), alpha=rate)

    def extra_repr(self) -> str:
        return (
            f"experts={self.num_experts}, top_k={self.top_k}, scoring={self.scoring!r}, normalize={self.normalize}, "
            f"scale={self.scale}, balance_bias={self.expert_bias is not None}"
        )
