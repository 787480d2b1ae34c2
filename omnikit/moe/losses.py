"""Router auxiliary losses: Switch load balancing and ST-MoE z-loss."""

from __future__ import annotations

import torch

from omnikit.layers.masks import masked_mean

__all__ = ["load_balancing_loss", "router_z_loss"]


def load_balancing_loss(scores: torch.Tensor, tokens_per_expert: torch.Tensor) -> torch.Tensor:
    """Switch Transformer balancing loss ``E * sum_e f_e * P_e``.

    ``f_e`` is the fraction of the ``N`` tokens routed to expert ``e`` (a token counts once for
    each of its ``k`` choices, so ``sum_e f_e = k``) and ``P_e`` the mean router probability of
    ``e``. It equals ``k`` under perfectly uniform routing and is the quantity transformers'
    ``load_balancing_loss_func`` returns for one layer without padding mask.

    Args:
        scores: ``(N, E)`` router probabilities (differentiable).
        tokens_per_expert: ``(E,)`` routed pairs per expert (no gradient).

    Tokens whose scores are not finite are left out of ``P_e`` (one bad token cannot make the
    loss NaN); with no tokens the loss is 0.
    """
    num_tokens, num_experts = scores.shape
    fraction = tokens_per_expert.to(scores.dtype) / max(num_tokens, 1)
    finite = torch.isfinite(scores).all(dim=-1, keepdim=True)
    return num_experts * torch.dot(fraction, masked_mean(scores, finite, dim=0))


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of ``logsumexp(logits)^2``; ``logits`` is ``(N, E)``.

    Non-finite tokens are left out; with no tokens the loss is 0.
    """
    z = torch.logsumexp(logits.float(), dim=-1).square()
    return masked_mean(z, torch.isfinite(z))
