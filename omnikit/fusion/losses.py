"""Training losses of omni models: text LM loss that skips media positions, per-codebook codec loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omnikit.fusion.modality import MediaTokens
from omnikit.layers.masks import masked_mean
from omnikit.speech.talker import codebook_loss, per_codebook_loss
from omnikit.utils.checks import check_tensor

__all__ = ["codebook_loss", "per_codebook_loss", "text_lm_loss"]


def text_lm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    *,
    media_tokens: MediaTokens | None = None,
    key_padding_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy over text targets only.

    Position ``t`` predicts ``input_ids[:, t + 1]``; a target is skipped when it is a media
    placeholder (its embedding came from an encoder, there is nothing to predict), padding, or
    False in ``loss_mask`` (``(B, T)``, over targets: e.g. only the assistant's reply).

    Args:
        logits: ``(B, T, V)``.
        input_ids: ``(B, T)``.
        media_tokens: placeholders to skip.
        key_padding_mask: ``(B, T)`` bool, False on padding.
        loss_mask: ``(B, T)`` bool, True on the targets to learn.

    Returns ``()`` mean over the kept targets (0 when none is kept).
    """
    check_tensor(logits, "logits", ndim=3, floating=True)
    check_tensor(input_ids, "input_ids", shape=tuple(logits.shape[:2]), floating=False)
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    if media_tokens is not None:
        keep &= media_tokens.modality_ids(input_ids) == 0
    if key_padding_mask is not None:
        keep &= key_padding_mask
    if loss_mask is not None:
        check_tensor(loss_mask, "loss_mask", shape=tuple(input_ids.shape), dtype=torch.bool)
        keep &= loss_mask
    keep = keep[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
    return masked_mean(losses, keep)
